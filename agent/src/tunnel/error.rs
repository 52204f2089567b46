//! What can go wrong opening or serving a tunnel.

use std::io;

use hyper::StatusCode;

/// A failed tunnel, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The caller's TCP dial failed.
    #[error("dialing the peer agent: {0}")]
    Dial(#[source] io::Error),
    /// The TLS handshake failed (the peer's certificate, ours, or the
    /// transport during the handshake). Never a reason to fall back to
    /// plain text: something answered on the tunnel port and failed to
    /// prove who it is.
    #[error("TLS handshake: {0}")]
    Tls(#[source] io::Error),
    /// TLS succeeded but ALPN did not come out as `h2`.
    #[error("the peer did not negotiate ALPN h2")]
    NoH2,
    /// The HTTP/2 handshake on top of TLS failed.
    #[error("HTTP/2 handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The `CONNECT` request failed without a response (connection lost,
    /// stream reset).
    #[error("CONNECT request: {0}")]
    Request(#[source] hyper::Error),
    /// The peer answered the `CONNECT` with this status instead of 200.
    #[error("the peer refused the tunnel: {0}")]
    Status(StatusCode),
    /// The peer answered 200 but the stream could not be taken over.
    #[error("taking over the tunnelled stream: {0}")]
    Upgrade(#[source] hyper::Error),
    /// Served connection: HTTP/2 failed after the TLS handshake.
    #[error("serving HTTP/2: {0}")]
    Serve(#[source] hyper::Error),
    /// The step's deadline passed: the whole establishment (client), the
    /// TLS handshake or the first request (server).
    #[error("timed out")]
    TimedOut,
}

impl TunnelError {
    /// True only when the peer's TCP stack refused the connection: no
    /// weir listens at the peer, the one case where the caller may send
    /// the bytes in plain text instead. Every other failure (a timeout, a
    /// reset, TLS) could be an attacker in the path, so it is not.
    pub fn is_refused(&self) -> bool {
        matches!(self, TunnelError::Dial(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    }
}
