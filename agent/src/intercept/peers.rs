//! weir's own upstream sockets, by local address.
//!
//! A connection weir opens on behalf of a pod (the engine's HTTP upstream
//! connections, the outbound splice) may land on another enrolled pod and
//! come back to weir as inbound. Its peer is then weir's own socket, not the
//! client pod. This registry says so: `Weir` (HTTP: the source pod travels
//! per request in `x-weir-source`, trusted only from these sockets) or
//! `Pod` (a spliced connection: one source for the whole connection).
//!
//! The interceptor owns the registry; an entry lives as long as its socket
//! (the guard is dropped with the connection task). A lock per connect and
//! per inbound connection, never per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::PodIdentity;

type Registry = Arc<Mutex<HashMap<SocketAddr, Option<PodIdentity>>>>;

/// weir's own upstream sockets of one interceptor.
#[derive(Default)]
pub(super) struct Peers(Registry);

/// Who is behind an inbound connection's peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Peer {
    /// Not one of weir's sockets.
    Unknown,
    /// A pooled HTTP upstream connection of weir (the source is per request).
    Weir,
    /// A connection weir spliced for this pod.
    Pod(PodIdentity),
}

/// Removes its entry when dropped.
pub(super) struct PeerGuard {
    registry: Registry,
    local: SocketAddr,
}

impl Peers {
    /// Record that `local` is one of weir's sockets, opened for `source`.
    pub(super) fn register(&self, local: SocketAddr, source: Option<PodIdentity>) -> PeerGuard {
        if let Ok(mut m) = self.0.lock() {
            m.insert(local, source);
        }
        PeerGuard {
            registry: Arc::clone(&self.0),
            local,
        }
    }

    pub(super) fn lookup(&self, peer: SocketAddr) -> Peer {
        let Ok(m) = self.0.lock() else {
            return Peer::Unknown;
        };
        match m.get(&peer) {
            None => Peer::Unknown,
            Some(None) => Peer::Weir,
            Some(Some(p)) => Peer::Pod(p.clone()),
        }
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.lock() {
            m.remove(&self.local);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_as_long_as_its_guard() {
        let a: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:40001".parse().unwrap();
        let pod = PodIdentity {
            namespace: "ns".into(),
            name: "p".into(),
            service_account: "default".into(),
            workload: "w".into(),
        };
        let peers = Peers::default();
        let ga = peers.register(a, None);
        let gb = peers.register(b, Some(pod.clone()));
        assert_eq!(peers.lookup(a), Peer::Weir);
        assert_eq!(peers.lookup(b), Peer::Pod(pod));
        drop((ga, gb));
        assert_eq!(peers.lookup(a), Peer::Unknown);
        assert_eq!(peers.lookup(b), Peer::Unknown);
    }
}
