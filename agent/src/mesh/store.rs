//! What is held per identity, least recently used out first.

use std::collections::HashMap;
use std::sync::Arc;

use super::issuer::Issued;
use super::spiffe::SpiffeId;

/// An identity's leaf (with the node CA generation that issued it) and the
/// configs built for it.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub issued: Option<(Issued, u64)>,
    pub client: Option<Arc<rustls::ClientConfig>>,
    pub server: Option<Arc<rustls::ServerConfig>>,
    last_used: u64,
}

/// A map bounded to `capacity` entries. Eviction scans for the oldest
/// entry, O(capacity), but only when a new identity arrives at a full map:
/// a node's identities are few and stable, so that is rare, and a scan of a
/// few thousand integers costs less than the certificate issued right after.
#[derive(Debug)]
pub(crate) struct Lru {
    map: HashMap<SpiffeId, Entry>,
    capacity: usize,
    tick: u64,
}

impl Lru {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The entry for `id`, made (and the oldest other one dropped, if full)
    /// when missing; marked as just used either way.
    pub fn entry(&mut self, id: &SpiffeId) -> &mut Entry {
        self.tick += 1;
        if !self.map.contains_key(id) && self.map.len() >= self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.map.remove(&oldest);
            }
        }
        let entry = self.map.entry(id.clone()).or_default();
        entry.last_used = self.tick;
        entry
    }

    #[cfg(test)]
    pub fn contains(&self, id: &SpiffeId) -> bool {
        self.map.contains_key(id)
    }
}
