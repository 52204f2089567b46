//! Connections enrolled pods made directly, outside the mesh, while no proxy
//! served them (fail-open pods while no agent ran). The connect hooks count
//! them per pod and remember each by socket cookie; the next agent takes both
//! once it serves the pod again, to report them and reset those still open.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use weir_common::{MAP_BYPASS_COUNTS, MAP_BYPASSED_CONNECTS, PendingConnect};

use super::{Datapath, DatapathError, orig_dst};

pub(super) struct BypassMaps {
    pub(super) counts: PerCpuHashMap<MapData, u64, u64>,
    pub(super) connects: BpfHashMap<MapData, u64, PendingConnect>,
}

/// What one pod did while it was not served.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bypassed {
    /// Connections let through (counted even when the record was evicted).
    pub connections: u64,
    /// The recorded ones: where each went, by socket cookie. Some may have
    /// closed since.
    pub sockets: HashMap<u64, Option<SocketAddr>>,
}

impl Datapath {
    /// Takes (reads and clears) what the pods in `netns_cookies` did while no
    /// proxy served them; pods that did nothing are left out. Cheap when
    /// nothing bypassed: the record is read only for pods with a count.
    pub fn take_bypassed(
        &self,
        netns_cookies: &HashSet<u64>,
    ) -> Result<HashMap<u64, Bypassed>, DatapathError> {
        let mut maps = self
            .bypass
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut taken: HashMap<u64, Bypassed> = HashMap::new();
        let counted: Vec<u64> = maps
            .counts
            .keys()
            .flatten()
            .filter(|netns| netns_cookies.contains(netns))
            .collect();
        for netns in counted {
            let per_cpu = maps
                .counts
                .get(&netns, 0)
                .map_err(|source| map_error(MAP_BYPASS_COUNTS, source))?;
            let _ = maps.counts.remove(&netns);
            taken.entry(netns).or_default().connections = per_cpu.iter().sum();
        }
        if taken.is_empty() {
            return Ok(taken);
        }
        let recorded: Vec<(u64, PendingConnect)> = maps
            .connects
            .iter()
            .flatten()
            .filter(|(_, direct)| taken.contains_key(&direct.netns_cookie))
            .collect();
        for (cookie, direct) in recorded {
            let _ = maps.connects.remove(&cookie);
            if let Some(pod) = taken.get_mut(&direct.netns_cookie) {
                pod.sockets
                    .insert(cookie, orig_dst::from_sock_addr(&direct.orig));
            }
        }
        Ok(taken)
    }

    /// Forgets what pods no longer enrolled did (gone while no agent ran).
    /// Returns how many pods' records went.
    pub(super) fn prune_bypassed(&self, netns_cookies: &HashSet<u64>) -> usize {
        let mut maps = self
            .bypass
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale: HashSet<u64> = maps
            .counts
            .keys()
            .flatten()
            .filter(|netns| !netns_cookies.contains(netns))
            .collect();
        for netns in &stale {
            let _ = maps.counts.remove(netns);
        }
        let orphans: Vec<u64> = maps
            .connects
            .iter()
            .flatten()
            .filter(|(_, direct)| !netns_cookies.contains(&direct.netns_cookie))
            .map(|(cookie, _)| cookie)
            .collect();
        for cookie in orphans {
            let _ = maps.connects.remove(&cookie);
        }
        stale.len()
    }
}

fn map_error(name: &'static str, source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map { name, source }
}

pub(super) fn take_maps(ebpf: &mut aya::Ebpf) -> Result<BypassMaps, DatapathError> {
    Ok(BypassMaps {
        counts: super::take_map(ebpf, MAP_BYPASS_COUNTS)?,
        connects: super::take_map(ebpf, MAP_BYPASSED_CONNECTS)?,
    })
}
