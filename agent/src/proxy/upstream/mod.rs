//! Upstream connections: pooling and connecting.

pub mod connect;
pub mod pool;

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("HTTP/1.1 handshake with {0}: {1}")]
    Handshake(SocketAddr, #[source] hyper::Error),
    #[error("cluster max_connections reached")]
    Overflow,
}
