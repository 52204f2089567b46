//! A tunnel between two weir node agents, as Istio ambient's ztunnel runs
//! HBONE on port 15008: HTTP/2 `CONNECT` over mutual TLS. One TLS + HTTP/2
//! connection between two agents carries many tunnelled TCP streams, one
//! `CONNECT` stream each.
//!
//! # Protocol
//!
//! 1. The client agent dials the peer agent's [`TUNNEL_PORT`] over TCP. The
//!    caller dials (weir opens sockets inside a pod's network namespace),
//!    this module only asks for the future of a `TcpStream`.
//! 2. TLS 1.2/1.3 with the caller's rustls configs, both sides presenting a
//!    certificate. ALPN must come out as `h2` ([`ALPN_H2`]); anything else
//!    is refused ([`TunnelError::NoH2`]), so a plain HTTPS server on the
//!    port is never mistaken for a peer. The server name the client sends is
//!    the caller's placeholder: its verifier checks the peer's identity, not
//!    a host name. This module never looks inside certificates: it hands
//!    the peer's chain to the caller ([`Tunnel::peer_certs`],
//!    [`PeerInfo::certs`]).
//! 3. HTTP/2 on that connection, with keep-alive pings both ways so a peer
//!    that vanished without a FIN is noticed (10 s interval, 20 s timeout by
//!    default).
//! 4. Per tunnelled stream, one `CONNECT` request whose `:authority` is the
//!    target `ip:port` (an IP literal, never a host name; no other header is
//!    needed). The server answers 200 and both sides then carry the stream's
//!    bytes as DATA frames; each direction ends with its own `END_STREAM`,
//!    so a half-close (`shutdown()` of one side's writes) reaches the other
//!    side as EOF while the other direction keeps flowing. Any other status
//!    is a refusal ([`TunnelError::Status`]): 400 a target that is not an
//!    `ip:port` or not served there, 403 policy, 405 a method other than
//!    `CONNECT`, 503 overload (see [`Refusal`]).
//!
//! # Bounds
//!
//! - Client: at most [`PoolConfig::max_keys`] pooled connections (1024),
//!   see `pool.rs`.
//! - Server: at most [`ServerLimits::max_concurrent_streams`] tunnels per
//!   connection (100) and 16 KiB of request headers; how many connections
//!   is the caller's accept loop's business.
//! - Bytes in flight: HTTP/2 flow control, hyper's defaults. What a peer may
//!   send us before we read is its window: 1 MiB per stream and 1 MiB per
//!   connection on the server side, 2 MiB per stream and 5 MiB per
//!   connection on the client side. What we queue towards a peer that does
//!   not read: one write per stream waiting in hyper, plus h2's send buffer
//!   (400 KiB per stream served, 1 MiB per stream opened).
//!
//! # Who runs the tasks
//!
//! hyper spawns a task per HTTP/2 connection driver and per tunnelled
//! stream's send side, and the server spawns one per admitted stream for
//! the handler. They all go through a [`Spawner`] the caller may give, so
//! what embeds this module can charge them to whoever caused them (weir
//! charges CPU per pod through its own spawn wrapper, which this module
//! does not name); the default is `tokio::spawn`. A task scoped to the
//! serving future (a `JoinSet` per connection) was the other way: it would
//! end streams with their connection, but it would leave hyper's own
//! spawned tasks uncharged, and streams die with their connection anyway
//! (their bytes ride it).

mod client;
mod error;
mod pool;
mod server;
mod spawn;
mod stream;

#[cfg(test)]
#[path = "pool_tests.rs"]
mod pool_tests;
#[cfg(test)]
#[path = "server_tests.rs"]
mod server_tests;
#[cfg(test)]
mod test_support;

pub use client::{ClientSettings, TunnelConnection};
pub use error::TunnelError;
pub use pool::{Dial, PoolConfig, Reuse, Tunnel, TunnelPool};
pub use server::{PeerInfo, Refusal, ServerLimits, TunnelHandler, TunnelServer, serve};
pub use spawn::{Spawner, Task};
pub use stream::{MAX_BAGGAGE, TunnelStream};

/// The port a weir agent accepts tunnels on (ztunnel's HBONE port).
pub const TUNNEL_PORT: u16 = 15008;

/// The only ALPN protocol a tunnel connection may negotiate. Both the
/// caller's `ClientConfig` and `ServerConfig` must offer it in
/// `alpn_protocols`.
pub const ALPN_H2: &[u8] = b"h2";

/// The header in which a stream's `CONNECT` may say who its source is
/// (W3C baggage, as ztunnel sends it): a claim, not an identity.
pub const BAGGAGE: &str = "baggage";
