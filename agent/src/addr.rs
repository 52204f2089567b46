//! Distinct types for the roles an address plays on a connection, so they
//! cannot be mixed up: where an application meant to connect before weir
//! redirected it is not the peer, nor the listener's own address. Shared by
//! the data path (which recovers it), enrollment, interception and the engine.

use std::fmt;
use std::net::SocketAddr;

/// The downstream peer of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The address an application asked to connect to before weir redirected it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

impl fmt::Display for OrigDst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
