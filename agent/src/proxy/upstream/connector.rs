//! The connection hook: how a cluster's upstream connections are opened.
//! The engine opens plain TCP ([`Tcp`]); whoever embeds it may pass its own
//! [`Connector`] down through the runtime (interception delivers to pods on
//! this node in one pass and remembers its own sockets), so the engine never
//! needs to know what lies above it.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use crate::proxy::body::request::ReqBody;
use crate::proxy::io::ByteCounters;

/// What the engine is about to speak on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// Cleartext HTTP/1.1: the only kind a [`Connection::Served`] may answer.
    pub cleartext_http1: bool,
}

/// A new upstream connection.
pub enum Connection {
    /// A TCP connection to the target's address.
    Tcp(TcpStream),
    /// The target's server reached another way (only for a
    /// [`Target::cleartext_http1`]): its bytes counted, each request seen by
    /// `exchange`.
    Served {
        stream: TcpStream,
        counters: ByteCounters,
        exchange: Arc<dyn Exchange>,
    },
}

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

pub type Connecting<'a> = Pin<Box<dyn Future<Output = std::io::Result<Connected>> + Send + 'a>>;

/// A connection attempt that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0}: {1}")]
    Failed(SocketAddr, #[source] std::io::Error),
    #[error("connect to {0}: timed out")]
    TimedOut(SocketAddr),
}

/// The one connect-within-a-timeout: `connecting` (to `addr`) bounded by
/// `timeout`, Nagle off on the stream it gives.
pub async fn within<T: AsNodelay>(
    timeout: Duration,
    addr: SocketAddr,
    connecting: impl Future<Output = std::io::Result<T>>,
) -> Result<T, ConnectError> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => {
            c.no_nagle();
            Ok(c)
        }
        Ok(Err(e)) => Err(ConnectError::Failed(addr, e)),
        Err(_) => Err(ConnectError::TimedOut(addr)),
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
        }
    }
}

/// Opens upstream connections; the engine bounds the attempt by the
/// cluster's `connect_timeout` and counts its failures.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, target: Target) -> Connecting<'_>;
}

/// Plain TCP, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tcp;

impl Connector for Tcp {
    fn connect(&self, target: Target) -> Connecting<'_> {
        Box::pin(async move { TcpStream::connect(target.addr).await.map(Connected::tcp) })
    }
}

/// Per-request work on a [`Connection::Served`] connection.
pub trait Exchange: Send + Sync + 'static {
    /// Before `req` is sent (again, when it came back unsent): returns what
    /// [`Exchange::answered`] needs to know about it.
    fn sending(&self, req: &mut Request<ReqBody>) -> Option<HeaderValue>;
    /// The response head to the request `sending` returned `tag` for.
    fn answered(&self, tag: Option<HeaderValue>, resp: &mut Response<Incoming>);
}
