//! Open a new upstream HTTP/1.1 connection under the cluster's limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::UpstreamError;
use crate::proxy::body::ReqBody;
use crate::proxy::cluster::breaker::Permit;
use crate::proxy::metrics::{ClusterMetrics, GaugeGuard};
use hyper::client::conn::http1::SendRequest;

/// Connect to `addr` within `timeout`, handshake HTTP/1.1 and spawn the
/// connection task; the task holds `permit` (max_connections) until it ends,
/// then notifies `freed`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    permit: Permit,
    freed: Arc<Notify>,
    metrics: &ClusterMetrics,
) -> Result<SendRequest<ReqBody>, UpstreamError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics.connect_fail.inc();
            return Err(UpstreamError::Connect(addr, e));
        }
        Err(_) => {
            metrics.connect_fail.inc();
            metrics.connect_timeout.inc();
            return Err(UpstreamError::ConnectTimeout(addr));
        }
    };
    let _ = stream.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Handshake(addr, e))?;
    metrics.cx_total.inc();
    let active = GaugeGuard::new(&metrics.cx_active);
    tokio::spawn(async move {
        let _active = active;
        if let Err(e) = conn.await {
            log::debug!("upstream connection to {addr} ended: {e}");
        }
        // The connection slot is free: wake one request waiting for it.
        drop(permit);
        freed.notify_one();
    });
    Ok(tx)
}
