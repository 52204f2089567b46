//! Traffic that goes to its original destination unchanged: the L4 splice
//! (TLS, opaque TCP), the implicit HTTP passthrough route of unmatched
//! destinations under `ALLOW_ANY`, and the `REGISTRY_ONLY` black hole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::InterceptError;
use crate::proxy::build::{self, ClusterMap};
use crate::proxy::http::ListenerContext;
use crate::proxy::metrics::Metrics;

/// Connect timeout to an original destination (Istio's default `connectTimeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-destination passthrough routes cached at most; when full the cache
/// is emptied (connections keep the routes they hold).
pub const MAX_PASSTHROUGH_ROUTES: usize = 1024;
/// Listener and cluster names (metric labels) of the implicit routes, as Istio names them.
pub const PASSTHROUGH_LISTENER: &str = "PassthroughListener";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_LISTENER: &str = "BlackHoleListener";

/// Connect to an original destination within [`CONNECT_TIMEOUT`].
pub async fn connect(dst: SocketAddr) -> Result<TcpStream, InterceptError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(InterceptError::Connect(dst, e)),
        Err(_) => Err(InterceptError::ConnectTimeout(dst)),
    }
}

/// Copy both ways until both sides have closed; a half-close (FIN) on one
/// side is passed on as a write shutdown on the other, so protocols that
/// half-close keep working. Returns (client -> server, server -> client) bytes.
pub async fn splice<D, U>(down: &mut D, up: &mut U) -> Result<(u64, u64), InterceptError>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    tokio::io::copy_bidirectional(down, up)
        .await
        .map_err(InterceptError::Splice)
}

/// Route tables for unmatched HTTP destinations, built on demand.
pub struct HttpPassthrough {
    metrics: Arc<Metrics>,
    by_dst: Mutex<HashMap<SocketAddr, Arc<ListenerContext>>>,
    blackhole: Mutex<Option<Arc<ListenerContext>>>,
}

impl HttpPassthrough {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            by_dst: Mutex::new(HashMap::new()),
            blackhole: Mutex::new(None),
        }
    }

    /// A route table whose one catch-all route forwards to `dst` (an
    /// ORIGINAL_DST-style cluster of one endpoint, no route timeout), so
    /// passthrough requests are counted, pooled and kept alive like routed ones.
    pub fn route_to(&self, dst: SocketAddr) -> Result<Arc<ListenerContext>, InterceptError> {
        if let Some(c) = self.by_dst.lock().ok().and_then(|m| m.get(&dst).cloned()) {
            return Ok(c);
        }
        let yaml = format!(
            "listeners:
  - name: {PASSTHROUGH_LISTENER}
    address: \"{dst}\"
    bind_to_port: false
    virtual_hosts:
      - name: allow_any
        domains: [\"*\"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: {PASSTHROUGH_CLUSTER}, timeout: 0s}}
clusters:
  - name: {PASSTHROUGH_CLUSTER}
    connect_timeout: {}s
    endpoints: [{{address: \"{}\", port: {}}}]
",
            CONNECT_TIMEOUT.as_secs(),
            dst.ip(),
            dst.port()
        );
        let ctx = self
            .build(&yaml)
            .map_err(|e| InterceptError::Build(dst, e))?;
        if let Ok(mut m) = self.by_dst.lock() {
            if m.len() >= MAX_PASSTHROUGH_ROUTES {
                m.clear();
            }
            m.insert(dst, ctx.clone());
        }
        Ok(ctx)
    }

    /// `REGISTRY_ONLY`: every request gets 502 (Istio's BlackHoleCluster route).
    pub fn blackhole(&self) -> Result<Arc<ListenerContext>, InterceptError> {
        let mut slot = self
            .blackhole
            .lock()
            .map_err(|_| InterceptError::Build(([0, 0, 0, 0], 0).into(), "poisoned".into()))?;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let yaml = format!(
            "listeners:
  - name: {BLACKHOLE_LISTENER}
    address: 0.0.0.0:1
    bind_to_port: false
    virtual_hosts:
      - name: block_all
        domains: [\"*\"]
        routes:
          - match: {{prefix: /}}
            direct_response: {{status: 502}}
"
        );
        let ctx = self
            .build(&yaml)
            .map_err(|e| InterceptError::Build(([0, 0, 0, 0], 1).into(), e))?;
        *slot = Some(ctx.clone());
        Ok(ctx)
    }

    fn build(&self, yaml: &str) -> Result<Arc<ListenerContext>, String> {
        let cfg = crate::config::parse_str(yaml, "implicit passthrough route")
            .map_err(|e| e.to_string())?;
        let clusters =
            build::clusters(&cfg, &ClusterMap::new(), &self.metrics).map_err(|e| e.to_string())?;
        let l = &cfg.listeners[0];
        let state = build::listener_state(l, "passthrough", &clusters, &self.metrics)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(ListenerContext {
            name: l.name.as_str().into(),
            metrics: self.metrics.listener(&l.name),
            state: ArcSwap::from_pointee(state),
        }))
    }
}
