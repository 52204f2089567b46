//! Open a new upstream connection under the cluster's limits: through the
//! cluster's [`Connector`] (TCP by default; from the request's source when
//! it has one, `egress`), then TLS when the cluster originates it, then
//! HTTP/1.1 or HTTP/2.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::UpstreamError;
use super::connector::{ConnectError, Connected, Connection, Connector, Target, Tcp, within};
use super::egress::Egress;
use super::sender::Sender;
use crate::proxy::cluster::breaker::Permit;
use crate::proxy::io::Io;
use crate::proxy::metrics::{ClusterMetrics, GaugeGuard};
use crate::proxy::tls::client::TlsClient;

/// How a cluster's connections are made.
#[derive(Clone)]
pub struct Transport {
    pub tls: Option<Arc<TlsClient>>,
    pub http2: bool,
    pub connector: Arc<dyn Connector>,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            tls: None,
            http2: false,
            connector: Arc::new(Tcp),
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

/// The limits and signals one new connection lives under.
pub struct Slot {
    /// `max_connections`, held until the connection ends.
    pub permit: Permit,
    /// Notified when it ends.
    pub freed: Arc<Notify>,
}

/// Connect to `addr` from `egress` (the engine's own namespace without
/// one) within `timeout`, handshake TLS (if configured) and HTTP, and spawn
/// the connection task, which holds the `slot` until the connection ends.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    slot: Slot,
    metrics: &ClusterMetrics,
    transport: &Transport,
    egress: Option<&Egress>,
) -> Result<Sender, UpstreamError> {
    let target = Target {
        addr,
        cleartext_http1: transport.tls.is_none() && !transport.http2,
        egress: egress.cloned(),
    };
    let connecting = transport.connector.connect(target);
    let Connected { connection, guard } =
        within(timeout, addr, connecting).await.inspect_err(|e| {
            metrics.connect_fail.inc();
            if matches!(e, ConnectError::TimedOut(_)) {
                metrics.connect_timeout.inc();
            }
        })?;
    let task = Task {
        addr,
        slot,
        metrics,
        guard,
    };
    match (connection, &transport.tls) {
        (Connection::Tcp(stream), None) => task.handshake(stream, transport.http2).await,
        (Connection::Tcp(stream), Some(tls)) => {
            let s = tls.connect(stream, addr).await.inspect_err(|_| {
                metrics.connect_fail.inc();
            })?;
            task.handshake(s, transport.http2).await
        }
        (Connection::Stream(stream), None) => task.handshake(stream, transport.http2).await,
        (Connection::Stream(stream), Some(tls)) => {
            let s = tls.connect(stream, addr).await.inspect_err(|_| {
                metrics.connect_fail.inc();
            })?;
            task.handshake(s, transport.http2).await
        }
        (
            Connection::Served {
                stream,
                counters,
                exchange,
            },
            _,
        ) => match task.handshake(Io::new(stream, counters), false).await? {
            Sender::H1(tx) => Ok(Sender::Served(tx, exchange)),
            other => Ok(other),
        },
    }
}

/// What the connection task holds until the connection ends.
struct Task<'a> {
    addr: SocketAddr,
    slot: Slot,
    metrics: &'a ClusterMetrics,
    guard: Option<Box<dyn Any + Send>>,
}

impl Task<'_> {
    async fn handshake<IO>(self, io: IO, http2: bool) -> Result<Sender, UpstreamError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = self.addr;
        let io = TokioIo::new(io);
        let (tx, conn): (Sender, std::pin::Pin<Box<dyn Future<Output = _> + Send>>) = if http2 {
            let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(|e| UpstreamError::Handshake(addr, e))?;
            (Sender::H2(tx), Box::pin(conn))
        } else {
            let (tx, conn) = hyper::client::conn::http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| UpstreamError::Handshake(addr, e))?;
            // An upgraded (101) connection is handed to the tunnel
            // (`http::upgrade`); the request that asked for it is never pooled.
            (Sender::H1(tx), Box::pin(conn.with_upgrades()))
        };
        self.metrics.cx_total.inc();
        let active = GaugeGuard::new(&self.metrics.cx_active);
        let Slot { permit, freed } = self.slot;
        let guard = self.guard;
        // Charged to whoever pays for the request that opened it (a pod's
        // share of the proxy's CPU, `proxy::cost`).
        crate::proxy::cost::spawn(async move {
            let _active = active;
            let _guard = guard;
            let r: Result<(), hyper::Error> = conn.await;
            if let Err(e) = r {
                log::debug!("upstream connection to {addr} ended: {e}");
            }
            // The connection slot is free: wake one request waiting for it.
            drop(permit);
            freed.notify_one();
        });
        Ok(tx)
    }
}
