//! The connection hook: how a cluster's upstream connections are opened.
//! The engine opens plain TCP ([`Tcp`]); whoever embeds it may pass its own
//! [`Connector`] down through the runtime (interception delivers to pods on
//! this node in one pass and remembers its own sockets), so the engine never
//! needs to know what lies above it. A request's source ([`Egress`]) rides
//! with the target: whatever connects makes the socket through it.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::egress::{Egress, EgressError};
use crate::proxy::body::request::ReqBody;
use crate::proxy::io::ByteCounters;

/// What the engine is about to speak on a new connection, and for whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Cleartext HTTP/1.1: the only kind a [`Connection::Served`] may answer.
    pub cleartext_http1: bool,
    /// The source the connection leaves from (`None`: the engine's own
    /// network namespace); it is pooled for that source only.
    pub egress: Option<Egress>,
}

/// A new upstream connection.
pub enum Connection {
    /// A TCP connection to the target's address.
    Tcp(TcpStream),
    /// A byte stream to the target's server that is not a socket of its
    /// own (a stream of a tunnel between nodes), spoken to as `Tcp` is.
    Stream(BoxStream),
    /// The target's server reached another way (only for a
    /// [`Target::cleartext_http1`]): its bytes counted, each request seen by
    /// `exchange`.
    Served {
        stream: TcpStream,
        counters: ByteCounters,
        exchange: Arc<dyn Exchange>,
    },
}

/// Any byte stream a [`Connection::Stream`] may be.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;

/// A connection and what must live exactly as long as it.
pub struct Connected {
    pub connection: Connection,
    /// Dropped when the connection ends.
    pub guard: Option<Box<dyn Any + Send>>,
}

impl Connected {
    pub fn tcp(stream: TcpStream) -> Self {
        Self {
            connection: Connection::Tcp(stream),
            guard: None,
        }
    }
}

pub type Connecting<'a> =
    Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send + 'a>>;

/// A connection attempt that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0}: {1}")]
    Failed(SocketAddr, #[source] std::io::Error),
    #[error("connect to {0}: timed out")]
    TimedOut(SocketAddr),
    /// The request's source could not open it (gone, or no socket).
    #[error("connect to {0}: {1}")]
    Egress(SocketAddr, #[source] EgressError),
}

/// The one connect-within-a-timeout: `connecting` (to `addr`) bounded by
/// `timeout`, Nagle off on the stream it gives.
pub async fn within<T: AsNodelay>(
    timeout: Duration,
    addr: SocketAddr,
    connecting: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => {
            c.no_nagle();
            Ok(c)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::TimedOut(addr)),
    }
}

/// Connect to `addr` from `egress`, or from the engine's own network
/// namespace without one.
pub async fn connect_from(
    egress: Option<&Egress>,
    addr: SocketAddr,
) -> Result<TcpStream, ConnectError> {
    match egress {
        Some(e) => e.connect(addr).await.map_err(|e| match e {
            EgressError::Connect(e) => ConnectError::Failed(addr, e),
            source => ConnectError::Egress(addr, source),
        }),
        None => TcpStream::connect(addr)
            .await
            .map_err(|e| ConnectError::Failed(addr, e)),
    }
}

/// A new connection whose TCP socket can have Nagle turned off.
pub trait AsNodelay {
    fn no_nagle(&self);
}

impl AsNodelay for TcpStream {
    fn no_nagle(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }
}

impl AsNodelay for Connected {
    fn no_nagle(&self) {
        match &self.connection {
            Connection::Tcp(s) | Connection::Served { stream: s, .. } => s.no_nagle(),
            // Its carrier's socket is set up by whoever made it.
            Connection::Stream(_) => {}
        }
    }
}

/// Opens upstream connections; the engine bounds the attempt by the
/// cluster's `connect_timeout` and counts its failures.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, target: Target) -> Connecting<'_>;
}

/// Plain TCP, the default (from the target's source when it has one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Connector for Tcp {
    fn connect(&self, target: Target) -> Connecting<'_> {
        Box::pin(async move {
            connect_from(target.egress.as_ref(), target.addr)
                .await
                .map(Connected::tcp)
        })
    }
}

/// Per-request work on a [`Connection::Served`] connection.
pub trait Exchange: Send + Sync + 'static {
    /// Before `req` is sent (again, when it came back unsent): returns what
    /// [`Exchange::answered`] needs to know about it.
    fn sending(&self, req: &mut Request<ReqBody>) -> Option<HeaderValue>;
    /// The response head to the request `sending` returned `tag` for,
    /// `elapsed` after it was sent.
    fn answered(&self, tag: Option<HeaderValue>, resp: &mut Response<Incoming>, elapsed: Duration);
}
