//! What runs where: the kernel weir probed, the cgroup layout it found, the
//! program variants it loaded and each feature on or off with the reason.
//! Logged at start and served on the admin listener (`GET /datapath`).

use serde::Serialize;
use weir_common::{
    PROG_CONNECT4, PROG_CONNECT6, PROG_NETNS_NAME4, PROG_NETNS_NAME6, PROG_RECVMSG4, PROG_RECVMSG6,
    PROG_SENDMSG4, PROG_SENDMSG6, PROG_SK_LOOKUP, PROG_SK_MSG, PROG_SOCKOPS, PROG_SOCKOPS_ACCEL,
};

use super::DatapathError;
use super::probe::{self, KernelSupport};

/// The data path as loaded on this node.
#[derive(Clone, Debug, Serialize)]
pub struct DatapathStatus {
    pub kernel: KernelSupport,
    pub cgroup: CgroupLayout,
    /// Programs loaded into the kernel, by their names in the object.
    pub programs: Vec<&'static str>,
    pub features: Vec<Feature>,
}

/// Which cgroup hierarchies the node mounts.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupLayout {
    /// `unified` (cgroup v2 only), `hybrid` (v1 controllers beside a cgroup2
    /// mount) or `legacy` (v1 only, which weir refuses).
    pub layout: &'static str,
    /// Where cgroup2 is mounted, if anywhere.
    pub cgroup2: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Feature {
    pub name: &'static str,
    pub on: bool,
    pub why: String,
}

/// The sockops variant and sk_msg acceleration, decided from the probes.
pub(super) struct Plan {
    pub sockops: &'static str,
    pub sk_msg: Feature,
}

/// Checks the floor and decides what to load; `sk_msg_wanted` is the
/// operator's switch. Never fails for an optional feature.
pub(super) fn plan(support: &KernelSupport, sk_msg_wanted: bool) -> Result<Plan, DatapathError> {
    let missing = support.missing(&probe::REQUIRED);
    if !missing.is_empty() {
        return Err(DatapathError::KernelTooOld {
            release: support.release.clone(),
            missing: missing.join(", "),
        });
    }
    let lacking = support.missing(&probe::FOR_SK_MSG);
    let sk_msg = if !sk_msg_wanted {
        feature("sk_msg acceleration", false, "off by choice (--sk-msg off)")
    } else if !lacking.is_empty() {
        let why = format!(
            "asked for, but this kernel lacks {} (Linux 5.15 offers them)",
            lacking.join(", ")
        );
        log::warn!("sk_msg acceleration off: {why}");
        feature("sk_msg acceleration", false, &why)
    } else {
        feature(
            "sk_msg acceleration",
            true,
            "asked for (--sk-msg on) and offered by the kernel",
        )
    };
    Ok(Plan {
        sockops: if sk_msg.on {
            PROG_SOCKOPS_ACCEL
        } else {
            PROG_SOCKOPS
        },
        sk_msg,
    })
}

/// Pre-5.11 kernels charge BPF maps to RLIMIT_MEMLOCK, whose default (8 MiB
/// or less) is far below weir's maps: lift it there, and only there.
pub(super) fn raise_memlock_if_charged(support: &KernelSupport) -> Result<Feature, DatapathError> {
    const NAME: &str = "BPF memory accounting";
    if support.has(probe::MEMCG_ACCOUNTING) {
        return Ok(feature(
            NAME,
            true,
            "memory cgroup (RLIMIT_MEMLOCK untouched)",
        ));
    }
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit for the whole process, read by the call only.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        return Err(DatapathError::Memlock(std::io::Error::last_os_error()));
    }
    Ok(feature(
        NAME,
        true,
        "RLIMIT_MEMLOCK raised to unlimited (the kernel charges maps to it)",
    ))
}

impl DatapathStatus {
    pub(super) fn new(support: KernelSupport, plan: &Plan, memlock: Feature) -> Self {
        let mut programs = super::UDP_AND_CONNECT_HOOKS.to_vec();
        programs.extend([plan.sockops, PROG_SK_LOOKUP]);
        if plan.sk_msg.on {
            programs.push(PROG_SK_MSG);
        }
        let sockopt = support.has(probe::SO_NETNS_COOKIE);
        if !sockopt {
            programs.extend([PROG_NETNS_NAME4, PROG_NETNS_NAME6]);
        }
        let features = vec![
            feature(
                "egress redirect",
                true,
                &format!(
                    "{PROG_CONNECT4}, {PROG_CONNECT6} and {} on each pod's cgroup; \
                     original destinations keyed by the namespace the connect hook recorded",
                    plan.sockops
                ),
            ),
            feature(
                "unconnected UDP under REGISTRY_ONLY",
                true,
                &format!(
                    "{PROG_SENDMSG4} and {PROG_SENDMSG6} on each pod's cgroup: a datagram \
                     sent without connect() meets the connect hook's verdict; \
                     {PROG_RECVMSG4} and {PROG_RECVMSG6} let the pod answer whom it \
                     received from"
                ),
            ),
            feature(
                "inbound steering",
                true,
                &format!("{PROG_SK_LOOKUP} on each pod's network namespace"),
            ),
            feature(
                "pinned links",
                true,
                "bpf links pinned in bpffs outlive the agent",
            ),
            plan.sk_msg.clone(),
            memlock,
            if sockopt {
                feature("namespace cookies", true, "getsockopt SO_NETNS_COOKIE")
            } else {
                feature(
                    "namespace cookies",
                    true,
                    &format!(
                        "{PROG_NETNS_NAME4} and {PROG_NETNS_NAME6} on the agent's cgroup \
                         (the kernel lacks SO_NETNS_COOKIE, Linux 5.14)"
                    ),
                )
            },
        ];
        Self {
            kernel: support,
            cgroup: CgroupLayout::detect(),
            programs,
            features,
        }
    }

    /// The status as JSON, for the admin listener.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// One line for people: layout, sockops variant, sk_msg on or off.
    pub fn summary(&self) -> String {
        let sk_msg = self
            .features
            .iter()
            .find(|f| f.name == "sk_msg acceleration")
            .map_or(
                "sk_msg ?",
                |f| if f.on { "sk_msg on" } else { "sk_msg off" },
            );
        let sockops = self
            .programs
            .iter()
            .find(|p| p.starts_with("weir_sockops"))
            .copied()
            .unwrap_or("no sockops");
        format!("cgroup {}; {sockops}; {sk_msg}", self.cgroup.layout)
    }

    /// One log line per fact, so an operator sees what this node runs.
    pub(super) fn log(&self) {
        let available: Vec<&str> = self
            .kernel
            .probes
            .iter()
            .filter(|p| p.available)
            .map(|p| p.what)
            .collect();
        let lacking: Vec<&str> = self
            .kernel
            .probes
            .iter()
            .filter(|p| !p.available)
            .map(|p| p.what)
            .collect();
        log::info!(
            "kernel {}: offers {}; lacks {}",
            self.kernel.release,
            available.join(", "),
            if lacking.is_empty() {
                "nothing weir probes".to_owned()
            } else {
                lacking.join(", ")
            }
        );
        log::info!(
            "cgroup layout {} (cgroup2 at {})",
            self.cgroup.layout,
            self.cgroup.cgroup2.as_deref().unwrap_or("nowhere")
        );
        log::info!("loaded {}", self.programs.join(", "));
        for f in &self.features {
            log::info!(
                "{}: {} ({})",
                f.name,
                if f.on { "on" } else { "off" },
                f.why
            );
        }
    }
}

impl CgroupLayout {
    fn detect() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup2 = crate::node::cgroup::cgroup2_root()
            .ok()
            .map(|p| p.display().to_string());
        Self::from_mounts(&mountinfo, cgroup2)
    }

    fn from_mounts(mountinfo: &str, cgroup2: Option<String>) -> Self {
        let has_v1 = mountinfo.lines().any(|line| {
            line.split_once(" - ")
                .and_then(|(_, after)| after.split_whitespace().next())
                == Some("cgroup")
        });
        let layout = match (&cgroup2, has_v1) {
            (Some(_), false) => "unified",
            (Some(_), true) => "hybrid",
            (None, _) => "legacy",
        };
        Self { layout, cgroup2 }
    }
}

fn feature(name: &'static str, on: bool, why: &str) -> Feature {
    Feature {
        name,
        on,
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
    const V2: &str = "31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";

    fn kernel(lacking: &[&str]) -> KernelSupport {
        KernelSupport {
            release: "test".into(),
            probes: probe::REQUIRED
                .iter()
                .chain(&probe::FOR_SK_MSG)
                .map(|&what| probe::Probed {
                    what,
                    available: !lacking.contains(&what),
                })
                .collect(),
        }
    }

    #[test]
    fn a_kernel_without_netns_cookies_in_sock_ops_runs_without_acceleration() {
        let linux_5_10 = kernel(&[
            "sock_ops: bpf_get_netns_cookie",
            "sk_msg: bpf_get_netns_cookie",
        ]);
        let plan = plan(&linux_5_10, true).expect("5.10 is above the floor");
        assert_eq!(plan.sockops, PROG_SOCKOPS);
        assert!(!plan.sk_msg.on);
        assert!(
            plan.sk_msg.why.contains("sock_ops: bpf_get_netns_cookie"),
            "{}",
            plan.sk_msg.why
        );
    }

    #[test]
    fn acceleration_runs_when_asked_and_offered_only() {
        let today = kernel(&[]);
        let asked = plan(&today, true).unwrap();
        assert_eq!((asked.sockops, asked.sk_msg.on), (PROG_SOCKOPS_ACCEL, true));
        let not_asked = plan(&today, false).unwrap();
        assert_eq!(
            (not_asked.sockops, not_asked.sk_msg.on),
            (PROG_SOCKOPS, false)
        );
    }

    #[test]
    fn below_the_floor_is_refused_naming_what_is_missing() {
        let old = kernel(&["program type sk_lookup"]);
        let err = plan(&old, false).err().expect("refused").to_string();
        assert!(err.contains("program type sk_lookup"), "{err}");
    }

    #[test]
    fn layouts_are_told_apart_by_their_mounts() {
        let root = Some("/sys/fs/cgroup".to_owned());
        assert_eq!(
            CgroupLayout::from_mounts(V2, root.clone()).layout,
            "unified"
        );
        let both = format!("{V1}\n{V2}\n");
        assert_eq!(CgroupLayout::from_mounts(&both, root).layout, "hybrid");
        assert_eq!(CgroupLayout::from_mounts(V1, None).layout, "legacy");
    }
}
