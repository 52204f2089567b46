//! Finding a pod on this node: its cgroup v2 directory (where the connect
//! hooks attach) and its network namespace (where its listeners live).

use std::collections::VecDeque;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::netns::{NetNs, NetNsError};

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
}

/// Finds `spec`'s cgroup directory and network namespace. Relative cgroup
/// paths are taken under `cgroup2_root` (see [`crate::node::cgroup::cgroup2_root`]).
pub fn resolve(spec: &PodSpec, cgroup2_root: &Path) -> Result<ResolvedPod, ResolveError> {
    let pod = spec.qualified_name();
    match &spec.location {
        PodLocation::Cgroup(dir) => by_cgroup(pod, cgroup2_root.join(dir)),
        PodLocation::Pid(pid) => by_pid(pod, *pid, &spec.uid, cgroup2_root),
    }
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
