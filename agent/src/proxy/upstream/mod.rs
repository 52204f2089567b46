//! Upstream connections: pooling and connecting (through the cluster's
//! connector, plain or TLS, HTTP/1.1 or HTTP/2), from the engine's own
//! network namespace or a request's source (`egress`).

pub mod connect;
pub mod connector;
pub mod egress;
pub mod pool;
pub mod sender;

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] connector::ConnectError),
    #[error("HTTP/1.1 handshake with {0}: {1}")]
    Handshake(SocketAddr, #[source] hyper::Error),
    #[error(transparent)]
    Tls(#[from] crate::proxy::tls::client::HandshakeError),
}
