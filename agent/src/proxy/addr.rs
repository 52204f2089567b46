//! Distinct types for the roles an address plays on a connection, so they
//! cannot be mixed up (the original destination of an intercepted socket is
//! not the peer, nor the listener's own address).

use std::net::SocketAddr;

/// The downstream peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Where the client meant to connect before interception (eBPF/redirect);
/// `None` for connections made to the listener itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrigDstAddr(pub SocketAddr);

/// Per-connection facts a transport hands to `http::serve`.
#[derive(Debug, Clone, Copy)]
pub struct ConnMeta {
    pub client: ClientAddr,
    pub orig_dst: Option<OrigDstAddr>,
}
