//! Least privilege for `weir run`: the capabilities the agent needs, checked
//! before anything starts, and dropped stage by stage.
//!
//! Linux capabilities belong to threads, not processes, so the plan is per thread:
//! - the main thread loads the data path and enrols pods ([`REQUIRED`] at start,
//!   [`ENROLMENT`] from the moment the data path is loaded, for good: bounding
//!   set included, so nothing can bring the others back);
//! - proxy worker threads (tokio's workers and blocking pool) hold nothing, or
//!   only `CAP_BPF` on kernels that still check it on every bpf(2) call
//!   ([`probe::workers_need_bpf`]): they parse what pods send, the untrusted part;
//! - the socket factory thread (`inpod::factory`, one for all pods) keeps
//!   [`SOCKET_FACTORY`], `CAP_SYS_ADMIN` alone, permitted but effective only
//!   around each `setns` into the namespace of the pod that asks;
//! - a reset thread (`inpod::reset`, only after connections bypassed the
//!   proxy) keeps the main thread's set: `SOCK_DESTROY` checks CAP_NET_ADMIN
//!   on the sending thread. It reads only the kernel's answers, and ends.
//!
//! The DaemonSet (`daemonset/daemonset.yaml`) adds exactly [`REQUIRED`] to a
//! container that drops ALL; a test holds the two lists together.

mod probe;

use std::collections::HashSet;

pub use caps::Capability;
pub use probe::workers_need_bpf;

/// One capability the agent needs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub capability: Capability,
    pub why: &'static str,
}

/// Every capability `weir run` needs at start; it refuses to start without one.
/// `CAP_SYS_RESOURCE` is not among them: kernels since 5.11 charge BPF memory
/// to the cgroup, not RLIMIT_MEMLOCK, and older ones work within the
/// container's limit (containerd and CRI-O set it unlimited) -- docs/kernels.md.
pub const REQUIRED: &[Requirement] = &[
    Requirement {
        capability: Capability::CAP_BPF,
        why: "load the eBPF programs, create and use their maps, pin them in bpffs, attach per pod",
    },
    Requirement {
        capability: Capability::CAP_NET_ADMIN,
        why: "load and attach network program types (cgroup connect hooks, sockops, sk_lookup, sk_msg); reset connections that bypassed the proxy while no agent ran (sock_diag)",
    },
    Requirement {
        capability: Capability::CAP_SYS_ADMIN,
        why: "enter pods' network namespaces (setns) to open the proxy's listeners and sockets there",
    },
    Requirement {
        capability: Capability::CAP_SYS_PTRACE,
        why: "open /proc/<pid>/ns/net of pod processes owned by other users",
    },
    Requirement {
        capability: Capability::CAP_SETPCAP,
        why: "drop the others from the bounding set once the data path is loaded; dropped itself then",
    },
];

/// Used while the data path loads when the agent holds it, never required:
/// kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which the loader
/// raises where the container's limit is too low (docs/kernels.md).
pub const OPTIONAL_AT_LOAD: &[Capability] = &[Capability::CAP_SYS_RESOURCE];

/// What the main thread keeps once the data path is loaded: enrolling a new pod
/// attaches programs to its cgroup and network namespace and binds listeners in it.
pub const ENROLMENT: &[Capability] = &[
    Capability::CAP_BPF,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_PTRACE,
];

/// What the socket factory thread keeps: entering the pods' namespaces one
/// after another (`setns` checks `CAP_SYS_ADMIN` every time). It holds it in
/// its permitted set and raises it into the effective set for each `setns`
/// only, so the `socket` and `bind` calls it makes run with none.
pub const SOCKET_FACTORY: &[Capability] = &[Capability::CAP_SYS_ADMIN];

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "missing capabilities: {}; weir run needs {} (see daemonset/README.md for why each)",
        names(missing),
        names(&REQUIRED.iter().map(|r| r.capability).collect::<Vec<_>>())
    )]
    Missing { missing: Vec<Capability> },
    #[error("{action}: {message}")]
    Syscall {
        action: &'static str,
        message: String,
    },
}

fn names(caps: &[Capability]) -> String {
    caps.iter()
        .map(Capability::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn syscall(action: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    move |e| PrivilegeError::Syscall {
        action,
        message: e.to_string(),
    }
}

/// Checks that this thread may use every [`REQUIRED`] capability, and makes
/// them effective. Ambient and inheritable sets are cleared: the agent never
/// executes another program, and nothing it starts should inherit privilege.
pub fn check_and_raise() -> Result<(), PrivilegeError> {
    let permitted = caps::read(None, caps::CapSet::Permitted)
        .map_err(syscall("reading the permitted capabilities"))?;
    let missing: Vec<Capability> = REQUIRED
        .iter()
        .map(|r| r.capability)
        .filter(|cap| !permitted.contains(cap))
        .collect();
    if !missing.is_empty() {
        return Err(PrivilegeError::Missing { missing });
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(syscall("clearing the ambient set"))?;
    caps::clear(None, caps::CapSet::Inheritable)
        .map_err(syscall("clearing the inheritable set"))?;
    let wanted: HashSet<Capability> = REQUIRED
        .iter()
        .map(|r| r.capability)
        .chain(
            OPTIONAL_AT_LOAD
                .iter()
                .copied()
                .filter(|cap| permitted.contains(cap)),
        )
        .collect();
    confine_to(
        &wanted,
        "limiting the main thread to the required capabilities",
    )
}

/// The main thread once the data path is loaded: [`ENROLMENT`] only, in every set.
pub fn drop_after_load() -> Result<(), PrivilegeError> {
    let keep: HashSet<Capability> = ENROLMENT.iter().copied().collect();
    confine_to(&keep, "dropping load-time capabilities")
}

/// A proxy worker thread: `keep_bpf` or nothing. Call first thing on the thread
/// (tokio's `on_thread_start`), before it handles any connection.
pub fn confine_worker(keep_bpf: bool) -> Result<(), PrivilegeError> {
    let keep: HashSet<Capability> = if keep_bpf {
        HashSet::from([Capability::CAP_BPF])
    } else {
        HashSet::new()
    };
    confine_to(&keep, "dropping a worker thread's capabilities")
}

/// The socket factory thread: [`SOCKET_FACTORY`] permitted, nothing
/// effective (it raises it for each `setns`). Call first thing on the thread.
pub fn confine_socket_factory() -> Result<(), PrivilegeError> {
    let keep: HashSet<Capability> = SOCKET_FACTORY.iter().copied().collect();
    confine_to(&keep, "confining the socket factory thread")?;
    caps::clear(None, caps::CapSet::Effective)
        .map_err(syscall("clearing the socket factory's effective set"))
}

/// This thread holds `keep` at most, in its bounding, permitted and effective
/// sets. The bounding set goes first: dropping from it needs `CAP_SETPCAP`
/// in the effective set, which the second step may remove.
fn confine_to(keep: &HashSet<Capability>, action: &'static str) -> Result<(), PrivilegeError> {
    let bounding = caps::read(None, caps::CapSet::Bounding).map_err(syscall(action))?;
    let extra: Vec<Capability> = bounding.difference(keep).copied().collect();
    if !extra.is_empty() {
        let can_drop = caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_SETPCAP)
            .map_err(syscall(action))?;
        if can_drop {
            for cap in extra {
                caps::drop(None, caps::CapSet::Bounding, cap).map_err(syscall(action))?;
            }
        }
    }
    let permitted = caps::read(None, caps::CapSet::Permitted).map_err(syscall(action))?;
    let now: HashSet<Capability> = permitted.intersection(keep).copied().collect();
    caps::set(None, caps::CapSet::Effective, &now).map_err(syscall(action))?;
    caps::set(None, caps::CapSet::Permitted, &now).map_err(syscall(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_is_a_subset_of_what_is_required() {
        let required: HashSet<Capability> = REQUIRED.iter().map(|r| r.capability).collect();
        for cap in ENROLMENT {
            assert!(required.contains(cap), "{cap} kept but never required");
        }
        assert_eq!(required.len(), REQUIRED.len(), "a capability listed twice");
        for cap in SOCKET_FACTORY {
            assert!(
                ENROLMENT.contains(cap),
                "{cap} kept by the factory, not by enrolment"
            );
        }
    }

    #[test]
    fn a_missing_capability_is_named() {
        let err = PrivilegeError::Missing {
            missing: vec![Capability::CAP_SYS_PTRACE],
        };
        let text = err.to_string();
        assert!(
            text.starts_with("missing capabilities: CAP_SYS_PTRACE;"),
            "{text}"
        );
        assert!(text.contains("CAP_BPF"), "{text}");
    }
}
