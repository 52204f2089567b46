//! `WEIR_DESTINATIONS`: which destinations the connect hooks send to the
//! proxy or let go direct, and the node-wide egress switches. The agent
//! keeps both in step with its config; pinned, they keep enforcing the last
//! config while no agent runs (REGISTRY_ONLY stays closed across restarts).

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData};
use weir_common::{
    AF_INET, AF_INET6, DEST_DIRECT, DEST_PREFIX_HEAD_BITS, DEST_PROXY, DestPrefix,
    MAP_DESTINATIONS, MAP_SETTINGS, MAX_DESTINATIONS, SETTING_REGISTRY_ONLY,
    SETTING_UNCLAIMED_DIRECT,
};

use super::{Datapath, DatapathError};

/// What the connect hooks do with connections to a [`Destination`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Redirect TCP to the proxy.
    Proxy,
    /// Let through, counted.
    Direct,
}

/// Addresses `net/prefix` on `port` (0: every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub net: IpAddr,
    pub prefix: u8,
    pub port: u16,
}

/// The node-wide egress switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Unlisted destinations are refused at `connect()`.
    pub registry_only: bool,
    /// Unlisted TCP destinations go direct unless a pod says otherwise.
    pub unclaimed_direct: bool,
}

pub(super) struct DestinationMaps {
    pub(super) destinations: LpmTrie<MapData, DestPrefix, u32>,
    pub(super) settings: Array<MapData, u32>,
}

/// What [`Datapath::set_destinations`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DestinationsChanged {
    pub added: usize,
    pub removed: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{count} destinations are more than the kernel table holds ({MAX_DESTINATIONS})")]
pub struct TooManyDestinations {
    pub count: usize,
}

impl Datapath {
    /// Makes `WEIR_DESTINATIONS` hold exactly `wanted`: new entries first,
    /// then the stale ones go, so a destination still wanted is never
    /// missing in between. Later duplicates win.
    pub fn set_destinations(
        &self,
        wanted: &[(Destination, Verdict)],
    ) -> Result<DestinationsChanged, DatapathError> {
        // By data and prefix length: 10.0.0.0/8 and 10.0.0.0/16 share their data.
        let wanted: StdHashMap<(DestPrefix, u32), u32> = wanted
            .iter()
            .map(|(d, v)| {
                let value = match v {
                    Verdict::Proxy => DEST_PROXY,
                    Verdict::Direct => DEST_DIRECT,
                };
                (prefix_of(d), value)
            })
            .collect();
        if wanted.len() > MAX_DESTINATIONS as usize {
            return Err(DatapathError::Destinations(TooManyDestinations {
                count: wanted.len(),
            }));
        }
        let mut maps = self.lock_destinations();
        let present: StdHashMap<(DestPrefix, u32), u32> = maps
            .destinations
            .iter()
            .flatten()
            .map(|(k, v)| ((k.data(), k.prefix_len()), v))
            .collect();
        let mut changed = DestinationsChanged::default();
        for ((data, bits), value) in &wanted {
            if present.get(&(*data, *bits)) != Some(value) {
                maps.destinations
                    .insert(&Key::new(*bits, *data), value, 0)
                    .map_err(map_error)?;
                changed.added += 1;
            }
        }
        for (data, bits) in present.keys() {
            if !wanted.contains_key(&(*data, *bits)) {
                maps.destinations
                    .remove(&Key::new(*bits, *data))
                    .map_err(map_error)?;
                changed.removed += 1;
            }
        }
        Ok(changed)
    }

    /// Sets the node-wide egress switches, leaving the others as they are.
    pub fn set_egress_policy(&self, policy: EgressPolicy) -> Result<(), DatapathError> {
        let mut maps = self.lock_destinations();
        let settings_error = |source| DatapathError::Map {
            name: MAP_SETTINGS,
            source,
        };
        let mut bits = maps.settings.get(&0, 0).map_err(settings_error)?;
        for (bit, on) in [
            (SETTING_REGISTRY_ONLY, policy.registry_only),
            (SETTING_UNCLAIMED_DIRECT, policy.unclaimed_direct),
        ] {
            if on {
                bits |= bit;
            } else {
                bits &= !bit;
            }
        }
        maps.settings.set(0, bits, 0).map_err(settings_error)
    }

    fn lock_destinations(&self) -> std::sync::MutexGuard<'_, DestinationMaps> {
        // Kernel maps: nothing in process memory a panic could leave half-done.
        self.destinations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The trie key of `d` and its prefix length in bits. An address's bits
/// past its prefix are cleared: the kernel compares only the prefix, but
/// the agent compares whole keys when it diffs.
fn prefix_of(d: &Destination) -> (DestPrefix, u32) {
    let (family, addr, max) = match d.net {
        IpAddr::V4(ip) => (AF_INET, [u32::from_ne_bytes(ip.octets()), 0, 0, 0], 32),
        IpAddr::V6(ip) => {
            let o = ip.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            (AF_INET6, [word(0), word(4), word(8), word(12)], 128)
        }
    };
    let prefix = u32::from(d.prefix).min(max);
    let mut bytes = [0u8; 16];
    for (i, w) in addr.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        let first_bit = (i * 8) as u32;
        if first_bit >= prefix {
            *b = 0;
        } else if prefix - first_bit < 8 {
            *b &= 0xffu8 << (8 - (prefix - first_bit));
        }
    }
    let word = |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let key = DestPrefix {
        port: d.port.to_be(),
        family,
        addr: [word(0), word(4), word(8), word(12)],
    };
    (key, DEST_PREFIX_HEAD_BITS + prefix)
}

fn map_error(source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map {
        name: MAP_DESTINATIONS,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(net: &str, prefix: u8, port: u16) -> Destination {
        Destination {
            net: net.parse().unwrap(),
            prefix,
            port,
        }
    }

    #[test]
    fn keys_keep_only_the_prefix_bits_in_network_order() {
        let (key, bits) = prefix_of(&dest("198.51.100.77", 24, 443));
        assert_eq!(bits, 32 + 24);
        assert_eq!(key.addr[0].to_ne_bytes(), [198, 51, 100, 0]);
        assert_eq!(key.port, 443u16.to_be());
        assert_eq!(key.family, AF_INET);
        let (key, bits) = prefix_of(&dest("2001:db8::1", 33, 0));
        assert_eq!(bits, 32 + 33);
        assert_eq!(key.addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(key.addr[1].to_ne_bytes(), [0, 0, 0, 0]);
        let (key, _) = prefix_of(&dest("2001:db8:ffff::", 33, 0));
        assert_eq!(key.addr[1].to_ne_bytes(), [0x80, 0, 0, 0]);
        let (_, bits) = prefix_of(&dest("192.0.2.1", 99, 0));
        assert_eq!(
            bits,
            32 + 32,
            "a prefix longer than the family is the address"
        );
    }
}
