//! Attaching the inbound steering (sk_lookup) to one pod's network namespace.

use std::net::{IpAddr, TcpListener};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::SkLookup;
use aya::programs::links::FdLink;
use weir_common::{
    AF_INET, AF_INET6, InboundKey, InboundSettings, MAP_INBOUND_LISTENERS, MAP_INBOUND_PODS,
    PROG_SK_LOOKUP,
};

use super::pin::AttachedLink;
use super::{Datapath, DatapathError};
use crate::netns::NetNs;

pub(super) type InboundListenersMap = SockHash<MapData, InboundKey>;
pub(super) type InboundPodsMap = HashMap<MapData, InboundKey, InboundSettings>;

/// The two inbound maps, always updated together.
pub(super) struct InboundMaps {
    pub(super) pods: InboundPodsMap,
    pub(super) listeners: InboundListenersMap,
}

/// One pod's inbound steering. Unpinned, dropping it detaches the program from
/// the pod's namespace and forgets the pod's addresses; pinned, both outlive
/// the agent (the listeners vanish from the SOCKHASH as their sockets close)
/// until [`IngressAttachment::remove`].
pub struct IngressAttachment {
    link: Option<AttachedLink>,
    keys: Vec<InboundKey>,
    maps: Arc<Mutex<InboundMaps>>,
    persist: bool,
}

impl Datapath {
    /// Steers inbound TCP connections to `pod_addrs` (the pod's own IPs) on the
    /// ports `settings` selects into the proxy listeners `v4` and `v6`, which
    /// must live in the pod's namespace `netns`.
    pub fn attach_ingress(
        &mut self,
        netns: &NetNs,
        pod_uid: &str,
        pod_addrs: &[IpAddr],
        settings: InboundSettings,
        v4: &TcpListener,
        v6: &TcpListener,
    ) -> Result<IngressAttachment, DatapathError> {
        let mut attachment = IngressAttachment {
            link: None,
            keys: Vec::with_capacity(pod_addrs.len()),
            maps: Arc::clone(&self.inbound),
            persist: self.is_pinned(),
        };
        {
            let mut maps = self
                .inbound
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for addr in pod_addrs {
                let key = inbound_key(*addr);
                let listener = if addr.is_ipv4() { v4 } else { v6 };
                maps.listeners
                    .insert(key, listener.as_fd(), 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_INBOUND_LISTENERS,
                        source,
                    })?;
                attachment.keys.push(key);
                maps.pods
                    .insert(key, settings, 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_INBOUND_PODS,
                        source,
                    })?;
            }
        }
        let name = PROG_SK_LOOKUP;
        let pin_dir = self.pin_dir(pod_uid);
        let link = self.attach_link(pin_dir.as_ref(), name, |prog: &mut SkLookup| {
            let id = prog
                .attach(netns.file())
                .map_err(|e| DatapathError::program(name, e))?;
            let link = prog
                .take_link(id)
                .map_err(|e| DatapathError::program(name, e))?;
            Ok(FdLink::from(link))
        })?;
        attachment.link = Some(link);
        Ok(attachment)
    }
}

pub(super) fn inbound_key(addr: IpAddr) -> InboundKey {
    match addr {
        IpAddr::V4(v4) => InboundKey {
            addr: [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
            family: AF_INET.into(),
        },
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            InboundKey {
                addr: [word(0), word(4), word(8), word(12)],
                family: AF_INET6.into(),
            }
        }
    }
}

impl IngressAttachment {
    pub fn link_ids(&self) -> Vec<u32> {
        self.link.iter().filter_map(AttachedLink::id).collect()
    }

    /// Detaches and forgets the pod's inbound steering for good, pinned or not.
    pub fn remove(mut self) {
        if let Some(link) = self.link.take() {
            link.remove();
        }
        self.persist = false;
    }

    fn forget(&self) {
        let mut maps = self
            .maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in &self.keys {
            let _ = maps.pods.remove(key);
            if let Err(e) = maps.listeners.remove(key) {
                log::debug!("forgetting inbound listener {key:?}: {e}");
            }
        }
    }

    /// Changes which ports are steered, atomically per address.
    pub fn update(&self, settings: InboundSettings) -> Result<(), DatapathError> {
        let mut maps = self
            .maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in &self.keys {
            maps.pods
                .insert(*key, settings, 0)
                .map_err(|source| DatapathError::Map {
                    name: MAP_INBOUND_PODS,
                    source,
                })?;
        }
        Ok(())
    }
}

impl Drop for IngressAttachment {
    fn drop(&mut self) {
        // Detach first, so no connection is steered to a listener being forgotten.
        drop(self.link.take());
        if !self.persist {
            self.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_in_network_byte_order() {
        let key = inbound_key("192.0.2.7".parse().unwrap());
        assert_eq!(key.addr[0].to_ne_bytes(), [192, 0, 2, 7]);
        assert_eq!(key.family, u32::from(AF_INET));
        let key = inbound_key("2001:db8::1".parse().unwrap());
        assert_eq!(key.addr[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(key.addr[3].to_ne_bytes(), [0, 0, 0, 1]);
    }
}
