//! cgroup v2: finding the mount and the kubelet's per-pod directories.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the detected cgroup v2 mount point.
pub const CGROUP2_ROOT_ENV: &str = "WEIR_CGROUP2_ROOT";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 (unified) hierarchy is mounted; mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or set {CGROUP2_ROOT_ENV}"
    )]
    NoCgroup2,
    #[error("{CGROUP2_ROOT_ENV}={0} is not a cgroup v2 directory")]
    BadOverride(PathBuf),
}

/// The cgroup v2 mount: `$WEIR_CGROUP2_ROOT` if set, else `/sys/fs/cgroup` when
/// that is cgroup2 (pure v2 nodes), else the first cgroup2 mount (hybrid nodes
/// mount it at `/sys/fs/cgroup/unified`).
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    if let Some(dir) = std::env::var_os(CGROUP2_ROOT_ENV) {
        let dir = PathBuf::from(dir);
        if !dir.join("cgroup.procs").exists() {
            return Err(CgroupError::BadOverride(dir));
        }
        return Ok(dir);
    }
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })?;
    cgroup2_mount_from_mountinfo(&mountinfo).ok_or(CgroupError::NoCgroup2)
}

fn cgroup2_mount_from_mountinfo(mountinfo: &str) -> Option<PathBuf> {
    // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
    let mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(unescape_octal(
                before.split_whitespace().nth(4)?,
            )))
        })
        .collect();
    let standard = Path::new("/sys/fs/cgroup");
    mounts
        .iter()
        .find(|m| m.as_path() == standard)
        .or_else(|| mounts.first())
        .cloned()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How the kubelet names cgroups (its `--cgroup-driver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// A pod's quality-of-service class, which picks its parent cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }
}

/// The pod's cgroup directory relative to the cgroup v2 root, as the kubelet
/// lays it out. Guaranteed pods sit directly under `kubepods`.
pub fn pod_cgroup_relpath(driver: CgroupDriver, qos: QosClass, pod_uid: &str) -> PathBuf {
    match (driver, qos) {
        (CgroupDriver::Cgroupfs, QosClass::Guaranteed) => {
            PathBuf::from(format!("kubepods/pod{pod_uid}"))
        }
        (CgroupDriver::Cgroupfs, qos) => {
            PathBuf::from(format!("kubepods/{}/pod{pod_uid}", qos.as_str()))
        }
        (CgroupDriver::Systemd, QosClass::Guaranteed) => PathBuf::from(format!(
            "kubepods.slice/kubepods-pod{}.slice",
            pod_uid.replace('-', "_")
        )),
        (CgroupDriver::Systemd, qos) => {
            let q = qos.as_str();
            PathBuf::from(format!(
                "kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{}.slice",
                pod_uid.replace('-', "_")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd";

    #[test]
    fn hybrid_host_uses_the_unified_mount() {
        assert_eq!(
            cgroup2_mount_from_mountinfo(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn pure_v2_host_prefers_sys_fs_cgroup() {
        let v2 = "30 1 0:26 / /mnt/other\\040dir rw - cgroup2 cgroup2 rw\n31 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount_from_mountinfo(v2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let only_other = "30 1 0:26 / /mnt/other\\040dir rw - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount_from_mountinfo(only_other),
            Some(PathBuf::from("/mnt/other dir"))
        );
    }

    #[test]
    fn no_cgroup2_is_none() {
        assert_eq!(
            cgroup2_mount_from_mountinfo(
                "27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu"
            ),
            None
        );
    }

    #[test]
    fn kubelet_layouts() {
        let uid = "6f1c-2a";
        assert_eq!(
            pod_cgroup_relpath(CgroupDriver::Cgroupfs, QosClass::BestEffort, uid),
            PathBuf::from("kubepods/besteffort/pod6f1c-2a")
        );
        assert_eq!(
            pod_cgroup_relpath(CgroupDriver::Cgroupfs, QosClass::Guaranteed, uid),
            PathBuf::from("kubepods/pod6f1c-2a")
        );
        assert_eq!(
            pod_cgroup_relpath(CgroupDriver::Systemd, QosClass::Burstable, uid),
            PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c_2a.slice"
            )
        );
        assert_eq!(
            pod_cgroup_relpath(CgroupDriver::Systemd, QosClass::Guaranteed, uid),
            PathBuf::from("kubepods.slice/kubepods-pod6f1c_2a.slice")
        );
    }
}
