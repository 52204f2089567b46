//! What the running kernel offers weir, found by loading tiny programs (the
//! verifier's answer), never by version number or a tool's feature list:
//! distributions backport, and `bpftool feature probe` has been seen to
//! report helpers a program type cannot call.

use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_program_supported};
use serde::Serialize;

use super::{DatapathError, sys};

/// One probed fact: a program type, a helper for a program type, or a kernel
/// mechanism.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Probed {
    pub what: &'static str,
    pub available: bool,
}

/// Everything weir probed on the running kernel.
#[derive(Clone, Debug, Serialize)]
pub struct KernelSupport {
    /// `uname -r`, for people; no decision is made from it.
    pub release: String,
    pub probes: Vec<Probed>,
}

/// A probe, named for people.
enum Check {
    /// The kernel loads a trivial program of this type.
    Program(&'static str, ProgramType),
    /// The verifier accepts a call to the helper from this program type.
    Helper(&'static str, ProgramType, BpfHelper),
    /// The kernel knows `BPF_LINK_CREATE`.
    LinkCreate(&'static str),
    /// A socket answers `getsockopt(SO_NETNS_COOKIE)`.
    NetnsCookieSockopt(&'static str),
}

impl Check {
    fn what(&self) -> &'static str {
        match self {
            Self::Program(what, _)
            | Self::Helper(what, ..)
            | Self::LinkCreate(what)
            | Self::NetnsCookieSockopt(what) => what,
        }
    }

    fn run(&self) -> Result<bool, DatapathError> {
        match *self {
            Self::Program(what, kind) => {
                is_program_supported(kind).map_err(|e| DatapathError::probe(what, e))
            }
            Self::Helper(what, kind, helper) => {
                is_helper_supported(kind, helper).map_err(|e| DatapathError::probe(what, e))
            }
            Self::LinkCreate(_) => link_create_known(),
            Self::NetnsCookieSockopt(what) => {
                crate::socket::has_so_netns_cookie().map_err(|e| DatapathError::Probe {
                    what,
                    source: Box::new(e),
                })
            }
        }
    }
}

/// What weir cannot run without (the floor, see docs/kernels.md).
pub const REQUIRED: [&str; 9] = [
    PROG_SOCK_ADDR,
    PROG_SOCK_OPS,
    PROG_SK_LOOKUP,
    "cgroup_sock_addr: bpf_get_netns_cookie",
    "cgroup_sock_addr: bpf_get_socket_cookie",
    "cgroup_sock_addr: bpf_sk_lookup_tcp",
    "sock_ops: bpf_get_socket_cookie",
    "sk_lookup: bpf_sk_assign",
    BPF_LINK,
];

/// What sk_msg acceleration needs on top.
pub const FOR_SK_MSG: [&str; 4] = [
    PROG_SK_MSG,
    "sock_ops: bpf_get_netns_cookie",
    "sock_ops: bpf_sock_hash_update",
    "sk_msg: bpf_get_netns_cookie",
];

/// Sockets tell their namespace cookie (5.14); else the getsockname hooks do.
pub const SO_NETNS_COOKIE: &str = "getsockopt SO_NETNS_COOKIE";

/// Maps are charged to the memory cgroup (5.11) rather than RLIMIT_MEMLOCK.
pub const MEMCG_ACCOUNTING: &str = "maps charged to the memory cgroup";

const PROG_SOCK_ADDR: &str = "program type cgroup_sock_addr (connect4)";
const PROG_SOCK_OPS: &str = "program type sock_ops";
const PROG_SK_LOOKUP: &str = "program type sk_lookup";
const PROG_SK_MSG: &str = "program type sk_msg";
const BPF_LINK: &str = "bpf links (BPF_LINK_CREATE)";

const CHECKS: [Check; 15] = [
    Check::Program(PROG_SOCK_ADDR, ProgramType::CgroupSockAddr),
    Check::Program(PROG_SOCK_OPS, ProgramType::SockOps),
    Check::Program(PROG_SK_LOOKUP, ProgramType::SkLookup),
    Check::Program(PROG_SK_MSG, ProgramType::SkMsg),
    Check::Helper(
        "cgroup_sock_addr: bpf_get_netns_cookie",
        ProgramType::CgroupSockAddr,
        BpfHelper::BPF_FUNC_get_netns_cookie,
    ),
    Check::Helper(
        "cgroup_sock_addr: bpf_get_socket_cookie",
        ProgramType::CgroupSockAddr,
        BpfHelper::BPF_FUNC_get_socket_cookie,
    ),
    Check::Helper(
        "cgroup_sock_addr: bpf_sk_lookup_tcp",
        ProgramType::CgroupSockAddr,
        BpfHelper::BPF_FUNC_sk_lookup_tcp,
    ),
    Check::Helper(
        "sock_ops: bpf_get_socket_cookie",
        ProgramType::SockOps,
        BpfHelper::BPF_FUNC_get_socket_cookie,
    ),
    Check::Helper(
        "sock_ops: bpf_get_netns_cookie",
        ProgramType::SockOps,
        BpfHelper::BPF_FUNC_get_netns_cookie,
    ),
    Check::Helper(
        "sock_ops: bpf_sock_hash_update",
        ProgramType::SockOps,
        BpfHelper::BPF_FUNC_sock_hash_update,
    ),
    Check::Helper(
        "sk_msg: bpf_get_netns_cookie",
        ProgramType::SkMsg,
        BpfHelper::BPF_FUNC_get_netns_cookie,
    ),
    Check::Helper(
        "sk_lookup: bpf_sk_assign",
        ProgramType::SkLookup,
        BpfHelper::BPF_FUNC_sk_assign,
    ),
    Check::LinkCreate(BPF_LINK),
    Check::NetnsCookieSockopt(SO_NETNS_COOKIE),
    // libbpf's test for memcg accounting of BPF memory: both came in 5.11,
    // and only the helper can be seen by loading.
    Check::Helper(
        MEMCG_ACCOUNTING,
        ProgramType::SocketFilter,
        BpfHelper::BPF_FUNC_ktime_get_coarse_ns,
    ),
];

impl KernelSupport {
    /// Runs every probe. Needs the privileges a program load needs.
    pub fn probe() -> Result<Self, DatapathError> {
        let probes = CHECKS
            .iter()
            .map(|c| {
                Ok(Probed {
                    what: c.what(),
                    available: c.run()?,
                })
            })
            .collect::<Result<Vec<_>, DatapathError>>()?;
        Ok(Self {
            release: kernel_release(),
            probes,
        })
    }

    pub fn has(&self, what: &str) -> bool {
        self.probes.iter().any(|p| p.what == what && p.available)
    }

    /// Whether sk_msg acceleration can run here (see [`FOR_SK_MSG`]).
    pub fn offers_sk_msg_acceleration(&self) -> bool {
        self.missing(&FOR_SK_MSG).is_empty()
    }

    /// The probes among `wanted` that failed.
    pub fn missing(&self, wanted: &[&'static str]) -> Vec<&'static str> {
        wanted.iter().copied().filter(|w| !self.has(w)).collect()
    }
}

/// Whether the kernel knows `BPF_LINK_CREATE` (5.7): with no program behind
/// the descriptor it answers EBADF if it does, EINVAL for an unknown command.
fn link_create_known() -> Result<bool, DatapathError> {
    #[repr(C)]
    struct LinkCreateAttr {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
    }
    let attr = LinkCreateAttr {
        prog_fd: u32::MAX,
        target_fd: u32::MAX,
        attach_type: 0,
        flags: 0,
    };
    // SAFETY: a fully initialised link_create member of union bpf_attr with no
    // pointers in it.
    match unsafe { sys::bpf(sys::BPF_LINK_CREATE, &attr) } {
        Ok(fd) => {
            // Not expected with an invalid descriptor; never leak one.
            // SAFETY: the kernel just returned this descriptor and nothing owns it.
            drop(unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
            });
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(DatapathError::Probe {
            what: BPF_LINK,
            source: Box::new(e),
        }),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
