//! Traffic that goes to its original destination unchanged: the L4 splice
//! (TLS, opaque TCP), the implicit HTTP passthrough route of unmatched
//! destinations under `ALLOW_ANY`, and the `REGISTRY_ONLY` black hole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::InterceptError;
use crate::proxy::build;
use crate::proxy::http::ListenerContext;
use crate::proxy::metrics::Metrics;
use crate::proxy::route::action::{Action, Forward};
use crate::proxy::split::Split;
use crate::proxy::upstream::connector::{Connector, within};

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
    Ok(within(CONNECT_TIMEOUT, dst, TcpStream::connect(dst)).await?)
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

/// Route tables for unmatched HTTP destinations, built on demand from
/// engine types (no config text).
pub struct HttpPassthrough {
    metrics: Arc<Metrics>,
    /// The passthrough cluster connects as every cluster does (`connector`).
    connector: Arc<dyn Connector>,
    by_dst: Mutex<HashMap<SocketAddr, Arc<ListenerContext>>>,
    blackhole: OnceLock<Arc<ListenerContext>>,
}

impl HttpPassthrough {
    pub fn new(metrics: Arc<Metrics>, connector: Arc<dyn Connector>) -> Self {
        Self {
            metrics,
            connector,
            by_dst: Mutex::new(HashMap::new()),
            blackhole: OnceLock::new(),
        }
    }

    /// A route table whose one catch-all route forwards to `dst` (an
    /// ORIGINAL_DST-style cluster of one endpoint, no route timeout), so
    /// passthrough requests are counted, pooled and kept alive like routed ones.
    pub fn route_to(&self, dst: SocketAddr) -> Arc<ListenerContext> {
        if let Some(c) = self.by_dst.lock().ok().and_then(|m| m.get(&dst).cloned()) {
            return c;
        }
        let cluster = build::static_cluster(
            PASSTHROUGH_CLUSTER,
            vec![dst],
            CONNECT_TIMEOUT,
            &self.metrics,
            &self.connector,
        );
        let forward = Forward {
            split: Split::Single(cluster),
            timeout: None,
            prefix_rewrite: None,
            host_rewrite: None,
            retry: None,
            expected_timeout: None,
        };
        let ctx = Arc::new(build::catch_all_listener(
            PASSTHROUGH_LISTENER,
            "allow_any",
            Action::Forward(Box::new(forward)),
            &self.metrics,
        ));
        if let Ok(mut m) = self.by_dst.lock() {
            if m.len() >= MAX_PASSTHROUGH_ROUTES {
                m.clear();
            }
            m.insert(dst, ctx.clone());
        }
        ctx
    }

    /// `REGISTRY_ONLY`: every request gets 502 (Istio's BlackHoleCluster route).
    pub fn blackhole(&self) -> Arc<ListenerContext> {
        let ctx = self.blackhole.get_or_init(|| {
            let action = Action::Direct {
                status: StatusCode::BAD_GATEWAY,
                body: Bytes::new(),
            };
            let l =
                build::catch_all_listener(BLACKHOLE_LISTENER, "block_all", action, &self.metrics);
            Arc::new(l)
        });
        Arc::clone(ctx)
    }
}
