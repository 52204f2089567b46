//! A pod's entry in the `WEIR_PODS` table: what every program needs to know
//! about it, keyed by its network namespace cookie.

use std::sync::{Arc, Mutex};

use weir_common::{MAP_PODS, PodSettings};

use super::{Datapath, DatapathError, PodsMap};

/// The pod is known to the programs while this lives. Unpinned, dropping it
/// forgets the pod; pinned, the entry outlives the agent (a fail-closed pod
/// must stay refused while the agent is down) until [`PodRegistration::remove`].
pub struct PodRegistration {
    netns_cookie: u64,
    pods: Arc<Mutex<PodsMap>>,
    persist: bool,
}

impl Datapath {
    pub fn register_pod(
        &self,
        netns_cookie: u64,
        settings: PodSettings,
    ) -> Result<PodRegistration, DatapathError> {
        let registration = PodRegistration {
            netns_cookie,
            pods: Arc::clone(&self.pods),
            persist: self.is_pinned(),
        };
        registration.update(settings)?;
        Ok(registration)
    }
}

impl PodRegistration {
    pub fn netns_cookie(&self) -> u64 {
        self.netns_cookie
    }

    /// New listener ports, fail mode or excluded ports, applied atomically.
    pub fn update(&self, settings: PodSettings) -> Result<(), DatapathError> {
        self.pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(self.netns_cookie, settings, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_PODS,
                source,
            })
    }

    /// Forgets the pod for good (un-enrolling it), pinned or not.
    pub fn remove(mut self) {
        self.persist = false;
    }

    fn forget(&self) {
        let mut pods = self
            .pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = pods.remove(&self.netns_cookie) {
            log::warn!("forgetting pod netns {}: {e}", self.netns_cookie);
        }
    }
}

impl Drop for PodRegistration {
    fn drop(&mut self) {
        if !self.persist {
            self.forget();
        }
    }
}
