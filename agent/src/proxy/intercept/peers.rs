//! weir's own upstream sockets, by their (local, remote) address pair.
//!
//! A connection weir opens on behalf of a pod (the engine's HTTP upstream
//! connections, the outbound splice) may land on another enrolled pod and
//! come back to weir as inbound. Its peer is then weir's own socket, not the
//! client pod. This registry says so: `Weir` (HTTP: the source pod travels
//! per request in `x-weir-source`, trusted only from these sockets) or
//! `Pod` (a spliced connection: one source for the whole connection).
//!
//! Keyed by both ends, as the inbound side sees them reversed (its peer and
//! its own address): Linux reuses a local port for connections to different
//! destinations, so a local address alone could also be some other
//! process's socket on the node, whose headers must not be believed.
//!
//! One registry per process (one proxy per node); an entry lives as long as
//! its socket (the guard is dropped with the connection task). A lock per
//! connect and per inbound connection, never per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};

use tokio::net::TcpStream;

use super::PodIdentity;

/// (local, remote) of one of weir's sockets.
type Ends = (SocketAddr, SocketAddr);

static REGISTRY: LazyLock<Mutex<HashMap<Ends, Option<PodIdentity>>>> =
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
pub struct PeerGuard(Ends);

/// Record that the connected `socket` is one of weir's, opened for `source`
/// (`None`: requests on it name their source). `None` when the socket has
/// no addresses any more (already reset).
pub fn register(socket: &TcpStream, source: Option<PodIdentity>) -> Option<PeerGuard> {
    let ends = (socket.local_addr().ok()?, socket.peer_addr().ok()?);
    if let Ok(mut m) = REGISTRY.lock() {
        m.insert(ends, source);
    }
    Some(PeerGuard(ends))
}

/// Who connected from `peer` to `local` (an accepted connection's two ends).
pub fn lookup(peer: SocketAddr, local: SocketAddr) -> Peer {
    let Ok(m) = REGISTRY.lock() else {
        return Peer::Unknown;
    };
    match m.get(&(peer, local)) {
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

    #[tokio::test]
    async fn lives_as_long_as_its_guard_and_needs_both_ends() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = server.local_addr().unwrap();
        let a = TcpStream::connect(to).await.unwrap();
        let b = TcpStream::connect(to).await.unwrap();
        let pod = PodIdentity {
            namespace: "ns".into(),
            name: "p".into(),
        };
        let ga = register(&a, None).unwrap();
        let gb = register(&b, Some(pod.clone())).unwrap();
        let from = |s: &TcpStream| s.local_addr().unwrap();
        assert_eq!(lookup(from(&a), to), Peer::Weir);
        assert_eq!(lookup(from(&b), to), Peer::Pod(pod));
        // The same local address towards somewhere else is not this socket.
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(lookup(from(&a), elsewhere), Peer::Unknown);
        drop((ga, gb));
        assert_eq!(lookup(from(&a), to), Peer::Unknown);
        assert_eq!(lookup(from(&b), to), Peer::Unknown);
    }
}
