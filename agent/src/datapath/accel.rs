//! sk_msg acceleration of the app-to-proxy hop (`DatapathOptions::sk_msg`).
//!
//! The application's end of each redirected connection enters `WEIR_SOCKS`
//! through the pod's sockops link; the proxy's end through a sockops link on
//! the agent's own cgroup, which the proxy's accepted sockets belong to. The
//! sk_msg program, attached to the map, moves data between the two.

use std::fs::File;
use std::path::PathBuf;

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
    enabled: bool,
    sockops: &'static str,
) -> Result<Option<Acceleration>, DatapathError> {
    let mut settings: Array<MapData, u32> = take_map(ebpf, MAP_SETTINGS)?;
    settings
        .set(0, if enabled { SETTING_SK_MSG } else { 0 }, 0)
        .map_err(|source| DatapathError::Map {
            name: MAP_SETTINGS,
            source,
        })?;
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

/// The agent's own cgroup v2 directory, from `/proc/self/cgroup`.
fn own_cgroup() -> Result<PathBuf, DatapathError> {
    let root =
        crate::node::cgroup::cgroup2_root().map_err(|e| DatapathError::OwnCgroup(e.to_string()))?;
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
