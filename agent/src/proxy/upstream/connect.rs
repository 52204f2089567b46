//! Open a new upstream connection under the cluster's limits: TCP, then
//! TLS when the cluster originates it, then HTTP/1.1 or HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::UpstreamError;
use super::sender::Sender;
use crate::proxy::cluster::breaker::Permit;
use crate::proxy::intercept::io::InterceptedIo;
use crate::proxy::intercept::local::{self, LocalInbound, LocalPod};
use crate::proxy::intercept::metrics::ConnCount;
use crate::proxy::intercept::peers;
use crate::proxy::metrics::{ClusterMetrics, GaugeGuard};
use crate::proxy::tls::client::TlsClient;

/// How a cluster's connections are made (beyond TCP).
#[derive(Debug, Clone, Default)]
pub struct Transport {
    pub tls: Option<Arc<TlsClient>>,
    pub http2: bool,
}

/// Connect to `addr` within `timeout`, handshake TLS (if configured) and
/// HTTP, and spawn the connection task; the task holds `permit`
/// (max_connections) until it ends, then notifies `freed`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    permit: Permit,
    freed: Arc<Notify>,
    metrics: &ClusterMetrics,
    transport: &Transport,
) -> Result<Sender, UpstreamError> {
    if transport.tls.is_none()
        && !transport.http2
        && let Some(pod) = local::lookup(addr)
    {
        return same_node(&pod, addr, timeout, permit, freed, metrics).await;
    }
    let stream = within(timeout, addr, metrics, TcpStream::connect(addr)).await?;
    // Inbound interception recognises this socket as weir's own (`intercept::peers`).
    let peer = Guard {
        _peer: stream.local_addr().ok().map(|a| peers::register(a, None)),
        ..Guard::default()
    };
    match &transport.tls {
        None => handshake(stream, addr, transport.http2, permit, freed, metrics, peer).await,
        Some(tls) => {
            let s = tls.connect(stream, addr).await.inspect_err(|_| {
                metrics.connect_fail.inc();
            })?;
            handshake(s, addr, transport.http2, permit, freed, metrics, peer).await
        }
    }
}

/// `addr` is an intercepted port of a pod enrolled on this node: connect to
/// its application from inside the pod and serve as its inbound side too.
async fn same_node(
    pod: &LocalPod,
    addr: SocketAddr,
    timeout: Duration,
    permit: Permit,
    freed: Arc<Notify>,
    metrics: &ClusterMetrics,
) -> Result<Sender, UpstreamError> {
    let stream = within(timeout, addr, metrics, pod.app.connect_app(addr)).await?;
    let (inbound, open) = LocalInbound::open(pod, addr);
    // Counted as the inbound side counts its client: what it reads from the
    // client is what goes to the application, what it writes is the answer.
    let io = InterceptedIo::new(
        stream,
        BytesMut::new(),
        inbound.from_app.clone(),
        inbound.to_app.clone(),
    );
    match handshake(
        io,
        addr,
        false,
        permit,
        freed,
        metrics,
        Guard {
            _inbound: Some(open),
            ..Guard::default()
        },
    )
    .await?
    {
        Sender::H1(tx) => Ok(Sender::SameNode(tx, inbound)),
        other => Ok(other),
    }
}

/// A connect to `addr` within `timeout`, its failure counted
/// (`upstream_cx_connect_fail`, `upstream_cx_connect_timeout`); no Nagle.
async fn within(
    timeout: Duration,
    addr: SocketAddr,
    metrics: &ClusterMetrics,
    connecting: impl Future<Output = std::io::Result<TcpStream>>,
) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => {
            metrics.connect_fail.inc();
            Err(UpstreamError::Connect(addr, e))
        }
        Err(_) => {
            metrics.connect_fail.inc();
            metrics.connect_timeout.inc();
            Err(UpstreamError::ConnectTimeout(addr))
        }
    }
}

/// What lives as long as the upstream connection.
#[derive(Default)]
struct Guard {
    /// weir's own socket, known to the inbound side (`intercept::peers`).
    _peer: Option<peers::PeerGuard>,
    /// A same-node connection, counted open on the inbound side.
    _inbound: Option<ConnCount>,
}

async fn handshake<IO>(
    io: IO,
    addr: SocketAddr,
    http2: bool,
    permit: Permit,
    freed: Arc<Notify>,
    metrics: &ClusterMetrics,
    guard: Guard,
) -> Result<Sender, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    metrics.cx_total.inc();
    let active = GaugeGuard::new(&metrics.cx_active);
    tokio::spawn(async move {
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
