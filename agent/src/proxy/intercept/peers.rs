//! weir's own upstream sockets, by local address.
//!
//! A connection weir opens on behalf of a pod (the engine's HTTP upstream
//! connections, the outbound splice) may land on another enrolled pod and
//! come back to weir as inbound. Its peer is then weir's own socket, not the
//! client pod. This registry says so: `Weir` (HTTP: the source pod travels
//! per request in `x-weir-source`, trusted only from these sockets) or
//! `Pod` (a spliced connection: one source for the whole connection).
//!
//! One registry per process (one proxy per node); an entry lives as long as
//! its socket (the guard is dropped with the connection task). A lock per
//! connect and per inbound connection, never per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};

use super::PodIdentity;

static REGISTRY: LazyLock<Mutex<HashMap<SocketAddr, Option<PodIdentity>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Who is behind an inbound connection's peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Not one of weir's sockets.
    Unknown,
    /// A pooled HTTP upstream connection of weir (the source is per request).
    Weir,
    /// A connection weir spliced for this pod.
    Pod(PodIdentity),
}

/// Removes its entry when dropped.
#[derive(Debug)]
pub struct PeerGuard(SocketAddr);

/// Record that `local` is one of weir's sockets, opened for `source`.
pub fn register(local: SocketAddr, source: Option<PodIdentity>) -> PeerGuard {
    if let Ok(mut m) = REGISTRY.lock() {
        m.insert(local, source);
    }
    PeerGuard(local)
}

pub fn lookup(peer: SocketAddr) -> Peer {
    let Ok(m) = REGISTRY.lock() else {
        return Peer::Unknown;
    };
    match m.get(&peer) {
        None => Peer::Unknown,
        Some(None) => Peer::Weir,
        Some(Some(p)) => Peer::Pod(p.clone()),
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = REGISTRY.lock() {
            m.remove(&self.0);
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
        };
        let ga = register(a, None);
        let gb = register(b, Some(pod.clone()));
        assert_eq!(lookup(a), Peer::Weir);
        assert_eq!(lookup(b), Peer::Pod(pod));
        drop((ga, gb));
        assert_eq!(lookup(a), Peer::Unknown);
        assert_eq!(lookup(b), Peer::Unknown);
    }
}
