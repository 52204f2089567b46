//! Traffic that goes to its original destination unchanged: the L4 splice
//! (TLS, opaque TCP), the implicit HTTP passthrough route of unmatched
//! destinations under `ALLOW_ANY`, and the `REGISTRY_ONLY` black hole.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{InterceptError, Shared};
use crate::proxy::build;
use crate::proxy::http::{ListenerContext, SHED_MIN_IDLE, ShedWatch, shed_asked, sleep_until_opt};
use crate::proxy::metrics::Metrics;
use crate::proxy::route::action::{Action, Forward};
use crate::proxy::split::Split;
use crate::proxy::upstream::connector::{AsNodelay, Connector, within};
use crate::proxy::upstream::egress::Egress;
use crate::tunnel::TunnelStream;

/// Connect timeout to an original destination (Istio's default `connectTimeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-destination passthrough routes cached at most; when full the cache
/// is emptied (connections keep the routes they hold).
pub const MAX_PASSTHROUGH_ROUTES: usize = 1024;
/// Listener and cluster names (metric labels) of the implicit routes, as Istio names them.
pub const PASSTHROUGH_LISTENER: &str = "PassthroughListener";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_LISTENER: &str = "BlackHoleListener";

/// Connect to an original destination within [`CONNECT_TIMEOUT`], for
/// `egress` (from the pod's network namespace, or through the mesh tunnel
/// to another node's pod; from the node's without one).
pub(super) async fn connect(
    shared: &Shared,
    egress: Option<&Egress>,
    dst: SocketAddr,
) -> Result<Upstream, InterceptError> {
    Ok(within(CONNECT_TIMEOUT, dst, shared.connect_upstream(egress, dst)).await?)
}

/// Where a splice's upstream bytes go: a socket of weir's own, or a stream
/// of the tunnel to another node's weir.
pub(super) enum Upstream {
    Tcp(TcpStream),
    Tunnel(TunnelStream),
}

impl Upstream {
    /// The local address of weir's own socket (a tunnel's stream has none
    /// the destination sees: the far end's weir delivers it).
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(s) => s.local_addr().ok(),
            Self::Tunnel(_) => None,
        }
    }
}

impl AsNodelay for Upstream {
    fn no_nagle(&self) {
        if let Self::Tcp(s) = self {
            s.no_nagle();
        }
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tunnel(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Self::Tunnel(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tunnel(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tunnel(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// [`splice`], run where the connection's pod runs its byte relays
/// (`proxy::cost::relay`: one task for all of a pod's, a few a turn), so
/// that a pod's thousands of talking connections queue as one task ahead
/// of its neighbours'.
pub async fn relay<D, U>(
    mut down: D,
    mut up: U,
    idle: Option<Duration>,
    shed: Option<ShedWatch>,
) -> Result<(u64, u64), InterceptError>
where
    D: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    crate::proxy::cost::relay(async move { splice(&mut down, &mut up, idle, shed).await })
        .await
        .unwrap_or(Err(InterceptError::RelayDropped))
}

/// Copy both ways until both sides have closed; a half-close (FIN) on one
/// side is passed on as a write shutdown on the other, so protocols that
/// half-close keep working. A connection that moves no byte either way for
/// `idle` (`opaque_idle_timeout`) is closed: a silent connection would
/// otherwise hold two descriptors of the shared proxy for ever; so is one
/// idle for [`SHED_MIN_IDLE`] when `shed` fires (its pod is over its share
/// near the node's cap). Returns (client -> server, server -> client) bytes.
pub async fn splice<D, U>(
    down: &mut D,
    up: &mut U,
    idle: Option<Duration>,
    mut shed: Option<ShedWatch>,
) -> Result<(u64, u64), InterceptError>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if idle.is_none() && shed.is_none() {
        return crate::proxy::copy::copy_both(down, up)
            .await
            .map_err(InterceptError::Splice);
    }
    let activity = Activity::new();
    let mut down = Active::new(down, &activity);
    let mut up = Active::new(up, &activity);
    let copy = crate::proxy::copy::copy_both(&mut down, &mut up);
    tokio::pin!(copy);
    loop {
        let deadline = idle.map(|idle| activity.last() + idle);
        tokio::select! {
            copied = &mut copy => return copied.map_err(InterceptError::Splice),
            () = sleep_until_opt(deadline) => {
                if let Some(idle) = idle
                    && activity.last() + idle <= Instant::now()
                {
                    return Err(InterceptError::Idle(idle));
                }
            }
            () = shed_asked(&mut shed) => {
                if activity.last() + SHED_MIN_IDLE <= Instant::now() {
                    return Err(InterceptError::Shed);
                }
            }
        }
    }
}

/// When bytes last moved through a splice, as an offset from its start
/// (an atomic so both directions' streams can stamp it).
struct Activity {
    start: Instant,
    last_nanos: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_nanos: AtomicU64::new(0),
        }
    }

    fn stamp(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_nanos.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed))
    }
}

/// A stream whose reads stamp an [`Activity`]; every byte a splice moves
/// is read first, so reads alone say when it last moved anything.
struct Active<'a, S> {
    inner: &'a mut S,
    activity: &'a Activity,
}

impl<'a, S> Active<'a, S> {
    fn new(inner: &'a mut S, activity: &'a Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.stamp();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    const IDLE: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_silent_splice_ends_after_the_idle_timeout() {
        let (mut client, mut down) = duplex(64);
        let (mut up, mut server) = duplex(64);
        let started = Instant::now();
        let spliced = tokio::time::timeout(IDLE * 2, splice(&mut down, &mut up, Some(IDLE), None))
            .await
            .expect("still open twice the idle timeout later");
        assert!(matches!(spliced, Err(InterceptError::Idle(d)) if d == IDLE));
        assert_eq!(started.elapsed(), IDLE);
        drop((down, up));
        // Both sides see the close.
        assert_eq!(client.read(&mut [0; 8]).await.unwrap(), 0);
        assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_either_way_keep_a_splice_open() {
        let (mut client, mut down) = duplex(64);
        let (mut up, mut server) = duplex(64);
        let talk = async {
            // Three idle-and-a-half of traffic, alternating directions.
            for round in 0..7u8 {
                tokio::time::sleep(IDLE / 2).await;
                let mut byte = [0];
                if round % 2 == 0 {
                    client.write_all(&[round]).await.unwrap();
                    server.read_exact(&mut byte).await.unwrap();
                } else {
                    server.write_all(&[round]).await.unwrap();
                    client.read_exact(&mut byte).await.unwrap();
                }
                assert_eq!(byte, [round]);
            }
            Instant::now()
        };
        let started = Instant::now();
        let (spliced, last_byte) = tokio::join!(splice(&mut down, &mut up, Some(IDLE), None), talk);
        assert!(matches!(spliced, Err(InterceptError::Idle(_))));
        assert_eq!(last_byte - started, IDLE * 7 / 2);
        assert_eq!(
            started.elapsed(),
            IDLE * 7 / 2 + IDLE,
            "idle counts from the last byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timeout_a_splice_waits_for_a_close() {
        let (mut client, mut down) = duplex(64);
        let (mut up, mut server) = duplex(64);
        let close_later = async {
            tokio::time::sleep(IDLE * 10).await;
            client.shutdown().await.unwrap();
            server.shutdown().await.unwrap();
        };
        let (spliced, ()) = tokio::join!(splice(&mut down, &mut up, None, None), close_later);
        assert_eq!(spliced.unwrap(), (0, 0));
    }
}
