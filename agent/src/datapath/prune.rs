//! Forgetting pods that went away while the agent was down: their pinned links
//! and their map entries, which no handle of this agent owns.

use std::collections::HashSet;
use std::net::IpAddr;

use super::ingress::inbound_key;
use super::pin::remove_pins;
use super::{Datapath, DatapathError};

/// What [`Datapath::prune`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub pod_pins: Vec<String>,
    /// Layout directories of agents built with another map layout, removed
    /// once none of their pods is left (see [`Datapath::retire_other_layouts`]).
    pub other_layouts: Vec<String>,
    pub pod_entries: usize,
    pub inbound_entries: usize,
    /// Pods gone while no agent ran whose direct connections were counted.
    pub bypass_records: usize,
}

impl Datapath {
    /// The pod `uid` is attached with this agent's layout: detach what an
    /// agent of another map layout left for it (its pinned links, which run
    /// that agent's programs against that layout's maps). Call once the
    /// pod's own links are attached, so no connection goes unhooked. A
    /// fail-closed pod's old connect hook would otherwise refuse every
    /// connection for good once no listener of its layout is left. An old
    /// agent still running holds no descriptor on its pinned links (see
    /// `pin::AttachedLink`), so they detach here at once; this agent's
    /// hooks, attached before, take the pod's new connections, and the old
    /// agent drains what it accepted.
    pub fn retire_other_layouts(&self, uid: &str) -> Result<usize, DatapathError> {
        let Some(layout) = &self.pins else {
            return Ok(0);
        };
        let mut retired = 0;
        for other in layout.other_layouts() {
            let dir = other.join("pods").join(uid);
            if dir.is_dir() {
                remove_pins(&dir).map_err(|source| DatapathError::Pin {
                    path: dir.clone(),
                    source,
                })?;
                retired += 1;
            }
        }
        Ok(retired)
    }

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
                    remove_pins(&entry.path()).map_err(|source| DatapathError::Pin {
                        path: entry.path(),
                        source,
                    })?;
                    pruned.pod_pins.push(uid);
                }
            }
            for other in layout.other_layouts() {
                // Enrolled pods were retired from it as they were enrolled;
                // what is left belongs to pods gone meanwhile.
                let pods = other.join("pods");
                if let Ok(entries) = std::fs::read_dir(&pods) {
                    for entry in entries.flatten() {
                        let uid = entry.file_name().to_string_lossy().into_owned();
                        if !uids.contains(&uid) && remove_pins(&entry.path()).is_ok() {
                            pruned.pod_pins.push(uid);
                        }
                    }
                }
                let empty = std::fs::read_dir(&pods).map_or(true, |mut e| e.next().is_none());
                if empty {
                    // Its maps go with it; the kernel frees them once no
                    // program of an agent still running uses them.
                    remove_pins(&other).map_err(|source| DatapathError::Pin {
                        path: other.clone(),
                        source,
                    })?;
                    pruned.other_layouts.push(other.display().to_string());
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
        pruned.bypass_records = self.prune_bypassed(netns_cookies);
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
