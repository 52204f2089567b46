//! sk_msg acceleration of the app-to-proxy hop (`DatapathOptions::sk_msg`).
//!
//! The application's end of each redirected connection enters `WEIR_SOCKS`
//! through the pod's sockops link; the proxy's end through a sockops link on
//! the agent's own cgroup, which the proxy's accepted sockets belong to. The
//! sk_msg program, attached to the map, moves data between the two.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{Array, MapData, SockHash};
use aya::programs::links::FdLink;
use aya::programs::{SkMsg, SockOps};
use weir_common::{MAP_SETTINGS, MAP_SOCKS, PROG_SK_MSG, SETTING_SK_MSG, SockKey};

use super::{DatapathError, cgroup_fd_link, program, take_map};

/// What keeps the acceleration running; dropping it stops adding the proxy's
/// sockets (the pods' sockets enter the map only while the setting is on).
pub(super) struct Acceleration {
    _socks: SockHash<MapData, SockKey>,
    _agent_sockops: FdLink,
}

/// Writes the node-wide switch (pinned maps keep the previous agent's value,
/// so it is always written) and, when on, wires sk_msg up with `sockops`, the
/// variant that feeds `WEIR_SOCKS`.
pub(super) fn configure(
    ebpf: &mut aya::Ebpf,
    settings: &mut Array<MapData, u32>,
    enabled: bool,
    sockops: &'static str,
) -> Result<Option<Acceleration>, DatapathError> {
    let settings_error = |source| DatapathError::Map {
        name: MAP_SETTINGS,
        source,
    };
    // The other switches are the config's (`destinations.rs`): kept.
    let others = settings.get(&0, 0).map_err(settings_error)? & !SETTING_SK_MSG;
    let bits = if enabled {
        others | SETTING_SK_MSG
    } else {
        others
    };
    settings.set(0, bits, 0).map_err(settings_error)?;
    if !enabled {
        return Ok(None);
    }
    let socks: SockHash<MapData, SockKey> = take_map(ebpf, MAP_SOCKS)?;
    let sk_msg: &mut SkMsg = program(ebpf, PROG_SK_MSG)?;
    sk_msg
        .attach(socks.fd())
        .map_err(|e| DatapathError::program(PROG_SK_MSG, e))?;

    let (dir, cgroup) = open_own_cgroup()?;
    let prog: &mut SockOps = program(ebpf, sockops)?;
    let link = cgroup_fd_link!(prog, &cgroup, sockops)?;
    log::info!(
        "sk_msg acceleration on (agent sockets in cgroup {})",
        dir.display()
    );
    Ok(Some(Acceleration {
        _socks: socks,
        _agent_sockops: link,
    }))
}

/// The agent's own cgroup v2 directory, opened.
pub(super) fn open_own_cgroup() -> Result<(PathBuf, File), DatapathError> {
    let dir = own_cgroup()?;
    let cgroup = File::open(&dir).map_err(|source| DatapathError::Cgroup {
        path: dir.clone(),
        source,
    })?;
    Ok((dir, cgroup))
}

/// The agent's own cgroup v2 directory, from `/proc/self/cgroup`, or, in a
/// cgroup namespace of its own (a container's, where that file says `0::/`
/// and joining it to the host's tree would name the node's root cgroup), the
/// directory of the host's tree whose `cgroup.procs` lists the agent.
fn own_cgroup() -> Result<PathBuf, DatapathError> {
    let root =
        crate::node::cgroup::cgroup2_root().map_err(|e| DatapathError::OwnCgroup(e.to_string()))?;
    if in_private_cgroup_namespace() {
        return find_cgroup_of(&root, std::process::id()).ok_or_else(|| {
            DatapathError::OwnCgroup(format!(
                "in a cgroup namespace of its own, and no cgroup under {} lists process {}",
                root.display(),
                std::process::id()
            ))
        });
    }
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| DatapathError::OwnCgroup(e.to_string()))?;
    let relative = text
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| {
            DatapathError::OwnCgroup("no cgroup v2 entry in /proc/self/cgroup".into())
        })?;
    Ok(root.join(relative.trim_start_matches('/')))
}

/// Whether this process's cgroup namespace differs from the node's (pid 1's,
/// visible with the host's pid namespace, as the DaemonSet runs the agent).
fn in_private_cgroup_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/cgroup"),
        std::fs::read_link("/proc/1/ns/cgroup"),
    ) {
        (Ok(own), Ok(node)) => own != node,
        _ => false,
    }
}

/// The cgroup under `root` whose `cgroup.procs` lists `pid`, breadth first,
/// bounded (a node's tree holds a few thousand directories).
fn find_cgroup_of(root: &Path, pid: u32) -> Option<PathBuf> {
    const MAX_DIRS: usize = 100_000;
    let wanted = pid.to_string();
    let mut queue = std::collections::VecDeque::from([root.to_path_buf()]);
    let mut seen = 0;
    while let Some(dir) = queue.pop_front() {
        seen += 1;
        if seen > MAX_DIRS {
            return None;
        }
        let listed = std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|line| line.trim() == wanted));
        if listed && dir != root {
            return Some(dir);
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            queue.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}
