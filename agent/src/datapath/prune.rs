//! Forgetting pods that went away while the agent was down: their pinned links
//! and their map entries, which no handle of this agent owns.

use std::collections::HashSet;
use std::net::IpAddr;

use super::ingress::inbound_key;
use super::pin::remove_pod_pins;
use super::{Datapath, DatapathError};

/// What [`Datapath::prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub pod_pins: Vec<String>,
    pub pod_entries: usize,
    pub inbound_entries: usize,
}

impl Datapath {
    /// Removes every pinned pod and map entry not belonging to the live pods:
    /// `uids` (pin directories), `netns_cookies` (`WEIR_PODS`) and `addrs`
    /// (`WEIR_INBOUND_PODS`). Call after enrolling the live pods at startup.
    pub fn prune(
        &mut self,
        uids: &HashSet<String>,
        netns_cookies: &HashSet<u64>,
        addrs: &HashSet<IpAddr>,
    ) -> Result<Pruned, DatapathError> {
        let mut pruned = Pruned::default();
        if let Some(layout) = &self.pins {
            let dir = layout.pods_dir();
            let entries = std::fs::read_dir(&dir).map_err(|source| DatapathError::Pin {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if !uids.contains(&uid) {
                    remove_pod_pins(&entry.path()).map_err(|source| DatapathError::Pin {
                        path: entry.path(),
                        source,
                    })?;
                    pruned.pod_pins.push(uid);
                }
            }
        }
        {
            let mut pods = self
                .pods
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let stale: Vec<u64> = pods
                .keys()
                .flatten()
                .filter(|c| !netns_cookies.contains(c))
                .collect();
            for cookie in stale {
                if pods.remove(&cookie).is_ok() {
                    pruned.pod_entries += 1;
                }
            }
        }
        let live: HashSet<_> = addrs.iter().map(|a| inbound_key(*a)).collect();
        let mut inbound = self
            .inbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stale: Vec<_> = inbound
            .pods
            .keys()
            .flatten()
            .filter(|k| !live.contains(k))
            .collect();
        for key in stale {
            if inbound.pods.remove(&key).is_ok() {
                pruned.inbound_entries += 1;
            }
        }
        Ok(pruned)
    }
}
