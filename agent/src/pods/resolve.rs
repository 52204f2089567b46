//! Finding a pod on this node: its cgroup v2 directory (where the connect
//! hooks attach) and its network namespace (where its listeners live).

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use crate::netns::{NetNs, NetNsError};
use crate::node::cgroup::{CgroupDriver, QosClass, pod_cgroup_relpath};

use super::spec::{PodLocation, PodSpec};

/// A pod found on this node.
#[derive(Debug)]
pub struct ResolvedPod {
    /// The pod's cgroup v2 directory (absolute).
    pub cgroup_dir: PathBuf,
    /// The pod's network namespace, held open.
    pub netns: NetNs,
}

/// Why a pod could not be found; every variant names the pod (`namespace/name`).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("pod {pod}: {} is not a cgroup v2 directory (no cgroup.procs)", dir.display())]
    NotACgroup { pod: String, dir: PathBuf },
    #[error("pod {pod}: cgroup {} has no process; cannot find its network namespace", dir.display())]
    NoProcess { pod: String, dir: PathBuf },
    #[error("pod {pod}: process {pid} does not exist")]
    NoSuchProcess { pod: String, pid: u32 },
    #[error("pod {pod}: process {pid} has no cgroup v2 entry (0::) in {}", path.display())]
    NoUnifiedCgroup {
        pod: String,
        pid: u32,
        path: PathBuf,
    },
    #[error(
        "pod {pod}: process {pid} is in cgroup {cgroup}, outside this agent's cgroup namespace; run the agent in the host cgroup namespace"
    )]
    OutsideCgroupNamespace {
        pod: String,
        pid: u32,
        cgroup: String,
    },
    #[error("pod {pod}: process {pid} is in cgroup {}, which is not a directory under the cgroup2 root", dir.display())]
    CgroupMissing { pod: String, pid: u32, dir: PathBuf },
    #[error("pod {pod}: reading {}: {source}", path.display())]
    Read {
        pod: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("pod {pod}: {source}")]
    NetNs { pod: String, source: NetNsError },
    #[error(
        "pod {pod}: waiting for its sandbox: no kubelet cgroup for uid {uid} under {} (cgroupfs or systemd layout)",
        root.display()
    )]
    NoSandbox {
        pod: String,
        uid: String,
        root: PathBuf,
    },
    #[error("pod {pod}: its address {ip} is not in network namespace {}", netns.display())]
    IpNotInNetns {
        pod: String,
        ip: IpAddr,
        netns: PathBuf,
    },
}

/// Finds `spec`'s cgroup directory and network namespace. Relative cgroup
/// paths are taken under `cgroup2_root` (see [`crate::node::cgroup::cgroup2_root`]).
pub fn resolve(spec: &PodSpec, cgroup2_root: &Path) -> Result<ResolvedPod, ResolveError> {
    let pod = spec.qualified_name();
    match &spec.location {
        PodLocation::Cgroup(dir) => by_cgroup(pod, cgroup2_root.join(dir)),
        PodLocation::Pid(pid) => by_pid(pod, *pid, &spec.uid, cgroup2_root),
        PodLocation::Kubelet { qos } => {
            let dir = kubelet_cgroup(&pod, &spec.uid, *qos, cgroup2_root)?;
            let found = by_cgroup(pod.clone(), dir)?;
            confirm_pod_ips(&pod, &found.netns, &spec.ips)?;
            Ok(found)
        }
    }
}

/// The kubelet's directory for pod `uid`: the layout of its QoS class first,
/// then every other (the QoS class is missing from old API objects, and the
/// cgroup driver is the node's, which the API does not say).
fn kubelet_cgroup(
    pod: &str,
    uid: &str,
    qos: Option<QosClass>,
    root: &Path,
) -> Result<PathBuf, ResolveError> {
    let classes = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ];
    let ordered = qos
        .into_iter()
        .chain(classes.into_iter().filter(|c| Some(*c) != qos));
    ordered
        .flat_map(|class| {
            [CgroupDriver::Cgroupfs, CgroupDriver::Systemd]
                .map(|driver| root.join(pod_cgroup_relpath(driver, class, uid)))
        })
        .find(|dir| dir.join("cgroup.procs").is_file())
        .ok_or_else(|| ResolveError::NoSandbox {
            pod: pod.to_owned(),
            uid: uid.to_owned(),
            root: root.to_owned(),
        })
}

/// The namespace found from the pod's processes holds the address the API
/// gives the pod: a stale or foreign process never gets the pod's listeners.
fn confirm_pod_ips(pod: &str, netns: &NetNs, ips: &[IpAddr]) -> Result<(), ResolveError> {
    let held = netns
        .run(local_addresses)
        .map_err(|source| ResolveError::NetNs {
            pod: pod.to_owned(),
            source,
        })?
        .map_err(|source| ResolveError::Read {
            pod: pod.to_owned(),
            path: netns.path().to_owned(),
            source,
        })?;
    match ips.iter().find(|ip| !held.contains(ip)) {
        None => Ok(()),
        Some(ip) => Err(ResolveError::IpNotInNetns {
            pod: pod.to_owned(),
            ip: *ip,
            netns: netns.path().to_owned(),
        }),
    }
}

/// Every address configured in the calling thread's network namespace.
fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addrs
        .filter_map(|ifaddr| ifaddr.address)
        .filter_map(|addr| {
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect())
}

/// The first process found in `dir` or below it (breadth first) gives the namespace.
fn by_cgroup(pod: String, dir: PathBuf) -> Result<ResolvedPod, ResolveError> {
    if !dir.join("cgroup.procs").is_file() {
        return Err(ResolveError::NotACgroup { pod, dir });
    }
    let mut queue = VecDeque::from([dir.clone()]);
    while let Some(cgroup) = queue.pop_front() {
        let procs = cgroup.join("cgroup.procs");
        let text = match std::fs::read_to_string(&procs) {
            Ok(text) => text,
            // A child cgroup removed while we walk.
            Err(e) if e.kind() == io::ErrorKind::NotFound && cgroup != dir => continue,
            Err(source) => {
                return Err(ResolveError::Read {
                    pod,
                    path: procs,
                    source,
                });
            }
        };
        for pid in text
            .lines()
            .filter_map(|line| line.trim().parse::<u32>().ok())
        {
            match NetNs::of_pid(pid) {
                Ok(netns) => {
                    return Ok(ResolvedPod {
                        cgroup_dir: dir,
                        netns,
                    });
                }
                // The process exited (or is a zombie) since cgroup.procs was read.
                Err(NetNsError::Open { source, .. })
                    if source.kind() == io::ErrorKind::NotFound
                        || source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(ResolveError::NetNs { pod, source }),
            }
        }
        queue.extend(child_cgroups(&cgroup));
    }
    Err(ResolveError::NoProcess { pod, dir })
}

/// Sub-directories of a cgroup, in name order so the walk is repeatable.
fn child_cgroups(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut children: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    children.sort();
    children
}

/// The process's cgroup, widened to the kubelet's pod cgroup when it is an
/// ancestor (containers sit in child cgroups), and its namespace.
fn by_pid(pod: String, pid: u32, uid: &str, root: &Path) -> Result<ResolvedPod, ResolveError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ResolveError::NoSuchProcess { pod, pid });
        }
        Err(source) => return Err(ResolveError::Read { pod, path, source }),
    };
    let Some(cgroup) = unified_cgroup(&text) else {
        return Err(ResolveError::NoUnifiedCgroup { pod, pid, path });
    };
    let relative = Path::new(cgroup.trim_start_matches('/'));
    if relative.components().any(|c| c == Component::ParentDir) {
        return Err(ResolveError::OutsideCgroupNamespace {
            pod,
            pid,
            cgroup: cgroup.to_owned(),
        });
    }
    let dir = root.join(pod_ancestor(relative, uid).unwrap_or(relative));
    if !dir.join("cgroup.procs").is_file() {
        return Err(ResolveError::CgroupMissing { pod, pid, dir });
    }
    let netns = NetNs::of_pid(pid).map_err(|source| match source {
        NetNsError::Open { source: e, .. } if e.kind() == io::ErrorKind::NotFound => {
            ResolveError::NoSuchProcess {
                pod: pod.clone(),
                pid,
            }
        }
        source => ResolveError::NetNs {
            pod: pod.clone(),
            source,
        },
    })?;
    Ok(ResolvedPod {
        cgroup_dir: dir,
        netns,
    })
}

/// The path of the `0::/path` line of `/proc/<pid>/cgroup`.
fn unified_cgroup(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The ancestor of `cgroup` (or itself) that the kubelet made for pod `uid`:
/// `pod<uid>` (cgroupfs driver) or `...-pod<uid with _ for ->.slice` (systemd).
fn pod_ancestor<'c>(cgroup: &'c Path, uid: &str) -> Option<&'c Path> {
    let cgroupfs = format!("pod{uid}");
    let systemd = format!("-pod{}.slice", uid.replace('-', "_"));
    cgroup.ancestors().find(|dir| {
        dir.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name == cgroupfs || name.ends_with(&systemd))
    })
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
