//! HTTP connection handling (HTTP/1.1 and HTTP/2). [`serve`] takes any
//! AsyncRead + AsyncWrite stream and a per-listener context, so TLS or
//! eBPF-intercepted sockets can feed it as well as plain TCP.

pub mod activity;
pub mod admission;
pub(crate) mod attempt;
pub mod authority;
pub mod discard;
pub mod forward;
pub mod grpc;
mod hop;
pub mod internal;
pub mod local;
pub mod request_id;
pub mod service;
pub mod sniff;
pub mod upgrade;
pub mod watchdog;
mod woken;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use self::activity::{Activity, ConnShared};
use self::service::{Conn, ConnService};
use self::sniff::Proto;
use self::watchdog::Verdict;
use self::woken::Woken;
use super::drain::DrainWatch;
use super::io::Io;
use super::metrics::{GaugeGuard, ListenerMetrics};
use super::route::RouteTable;
use super::tls::server::TlsServer;
use super::upstream::egress::Egress;
use crate::addr::ClientAddr;
use crate::config::Codec;

/// Connection-level settings of a listener (`None` = disabled).
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub idle_timeout: Option<Duration>,
    pub header_read_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub codec: Codec,
    /// The `server` response header.
    pub server: http::HeaderValue,
    /// `Upgrade` tokens tunnelled upstream, lower-cased (`upgrade`).
    pub upgrade_types: Vec<String>,
    /// Open connections per client address (bound listeners).
    pub max_connections_per_client: u32,
    /// The listener's access logs (`None`: off); a connection keeps the
    /// ones in force when it opened.
    pub access_log: Option<Arc<crate::proxy::access_log::AccessLog>>,
}

/// What a reload swaps for a listener.
pub struct ListenerState {
    pub routes: RouteTable,
    pub settings: ConnSettings,
    /// TLS termination (rebuilt by a reload; certificate files watched).
    pub tls: Option<Arc<TlsServer>>,
}

/// Shared by all connections of one listener.
pub struct ListenerContext {
    pub name: Arc<str>,
    pub metrics: ListenerMetrics,
    pub state: ArcSwap<ListenerState>,
    /// Kept across reloads, as the connections are.
    pub clients: Arc<crate::proxy::clients::ClientConnections>,
}

impl ListenerContext {
    pub fn new(name: &str, state: ListenerState, metrics: &super::metrics::Metrics) -> Self {
        Self {
            name: name.into(),
            metrics: metrics.listener(name),
            state: ArcSwap::from_pointee(state),
            clients: Arc::default(),
        }
    }
}

/// Per-connection additions to request handling, set by callers that know
/// more about a connection than its listener (interception: the source pod).
pub trait RequestHook: Send + Sync + 'static {
    /// Before anything else: a place among the requests the connection's
    /// source may have in flight, held until the response head is final,
    /// or the reason (a short label) the request is refused with Envoy's
    /// overload reply ([`local::overloaded_for`]).
    fn admit(&self) -> Result<Option<RequestPlace>, &'static str> {
        Ok(None)
    }
    /// Before routing: may add or remove request headers.
    fn on_request(&self, headers: &mut http::HeaderMap);
    /// After the response head is final (local replies included),
    /// `elapsed` after the request head was read.
    fn on_response(&self, status: u16, elapsed: std::time::Duration);
    /// Where a request goes that no virtual host of the listener takes;
    /// `None`: a 404, as Envoy answers.
    fn unmatched_host(&self) -> Option<Arc<ListenerContext>> {
        None
    }
}

/// Whatever a [`RequestHook`] keeps for one request in flight; dropped when
/// its response head is final (or the request is abandoned).
pub type RequestPlace = Box<dyn Send + Sync>;

/// hyper's default header count limit; setting it explicitly costs a heap
/// allocation per request, so it is only set when it differs.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// A downstream connection as [`serve`] takes it: its peer, its listener,
/// its drain handle, and what the caller knows beyond those.
pub struct Downstream {
    pub client: ClientAddr,
    pub ctx: Arc<ListenerContext>,
    pub drain: DrainWatch,
    /// Per-connection additions to request handling (interception: the source pod).
    pub hook: Option<Arc<dyn RequestHook>>,
    /// The protocol when already decided (by TLS ALPN); else the listener's codec decides.
    pub proto: Option<Proto>,
    /// TLS-terminated (`x-forwarded-proto: https`).
    pub https: bool,
    /// Closes the connection when it fires while the connection is idle
    /// (interception: its pod is over its share near the node's cap).
    pub shed: Option<ShedWatch>,
    /// Where its requests' upstream connections leave from and are pooled
    /// (interception: the pod that accepted socket belongs to); `None`: the
    /// engine's own network namespace and per-endpoint pools.
    pub egress: Option<Egress>,
}

/// A generation counter; each change asks idle connections to close.
pub type ShedWatch = tokio::sync::watch::Receiver<u64>;

/// How long a connection must have been idle to be shed.
pub const SHED_MIN_IDLE: Duration = Duration::from_secs(1);

impl Downstream {
    /// A cleartext connection with nothing known beyond its listener.
    pub fn new(client: ClientAddr, ctx: Arc<ListenerContext>, drain: DrainWatch) -> Self {
        Self {
            client,
            ctx,
            drain,
            hook: None,
            proto: None,
            https: false,
            shed: None,
            egress: None,
        }
    }
}

/// Serve HTTP on `io` until the peer closes, a timeout fires, or a drain
/// finishes (graceful first, forced after the drain grace period). The
/// protocol follows the listener's codec (`auto`: sniffed, see `sniff`).
pub async fn serve<S>(io: S, conn: Downstream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Downstream {
        client,
        ctx,
        mut drain,
        hook,
        proto,
        https,
        shed,
        egress,
    } = conn;
    let settings = ctx.state.load().settings.clone();
    ctx.metrics.cx_total.inc();
    let _active = GaugeGuard::new(&ctx.metrics.cx_active);
    let shared = Arc::new(ConnShared::opened());
    let activity = Activity::new(
        shared.clone(),
        ctx.metrics.rx_bytes.clone(),
        ctx.metrics.tx_bytes.clone(),
    );
    let mut io = Io::new(io, activity);
    let served = Served {
        shared: &shared,
        settings: &settings,
        ctx: &ctx,
        client: &client,
    };
    let Some((proto, sniffed)) = decide_proto(&mut io, proto, &served, &mut drain).await else {
        return;
    };
    let svc = ConnService::new(Conn {
        ctx: ctx.clone(),
        shared: shared.clone(),
        request_timeout: settings.request_timeout,
        access_log: settings.access_log.clone(),
        client: client.0,
        hook,
        proto,
        https,
        drain: drain.clone(),
        egress,
    });
    // The bytes sniffed (already counted) go to the codec first.
    let io = TokioIo::new(Io::with_prefix(io, sniffed, ()));
    let signals = Signals { drain, shed };
    match proto {
        Proto::Http1 => serve_http1(io, svc, &served, signals).await,
        Proto::Http2 => serve_http2(io, svc, &served, signals).await,
    }
}

/// What may end a connection from outside: a drain, a shed.
struct Signals {
    drain: DrainWatch,
    shed: Option<ShedWatch>,
}

/// Resolves when a shed is asked for (never without a shed watch).
pub(crate) async fn shed_asked(shed: &mut Option<ShedWatch>) {
    let asked = match shed.as_mut() {
        Some(watch) => watch.changed().await.is_ok(),
        None => false,
    };
    if !asked {
        // No watch, or its sender is gone: no shed will ever come.
        *shed = None;
        std::future::pending::<()>().await;
    }
}

/// A served connection as its codec and [`drive`] see it.
struct Served<'a> {
    shared: &'a ConnShared,
    settings: &'a ConnSettings,
    ctx: &'a ListenerContext,
    client: &'a ClientAddr,
}

/// How long a connection that has sent nothing yet when the drain begins is
/// given to send its first request head (or HTTP/2 preface), at most; and
/// never more than half the drain's grace (a hand-over's is 1 s).
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// The connection's protocol and the bytes read to learn it: as decided
/// (ALPN), the listener's codec, or sniffed under `auto`. `None`: the
/// connection ends (closed, idle, undecidable, or silent through a drain's
/// first second).
async fn decide_proto<S>(
    io: &mut S,
    decided: Option<Proto>,
    served: &Served<'_>,
    drain: &mut DrainWatch,
) -> Option<(Proto, BytesMut)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match (decided, served.settings.codec) {
        (Some(p), _) => Some((p, BytesMut::new())),
        (None, Codec::Http1) => Some((Proto::Http1, BytesMut::new())),
        (None, Codec::Http2) => Some((Proto::Http2, BytesMut::new())),
        (None, Codec::Auto) => {
            // The first bytes are the first request's head (or the HTTP/2
            // preface): a connection silent until the header-read deadline
            // is closed then (see `ConnShared::opened`).
            let settings = served.settings;
            let wait = [settings.idle_timeout, settings.header_read_timeout]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(Duration::MAX);
            let sniffing = sniff::sniff(io);
            tokio::pin!(sniffing);
            let sniffed = tokio::select! {
                r = tokio::time::timeout(wait, &mut sniffing) => r.ok(),
                // Accepted as the drain began (a connection an agent takes
                // from its queue as it hands over): its first request is
                // likely on its way, and closing now would meet it with a
                // closed socket. It gets a moment, then is served and
                // closed after its answer like any draining connection.
                grace = drain.signaled() => {
                    // At most half the drain's grace, so that a request that
                    // comes has the other half to be answered.
                    let first = wait.min(FIRST_REQUEST_GRACE).min(grace / 2);
                    tokio::time::timeout(first, &mut sniffing).await.ok()
                }
            };
            match sniffed {
                Some(Ok((Some(p), prefix))) => Some((p, prefix)),
                Some(Ok((None, _))) | None => None,
                Some(Err(e)) => {
                    log::debug!("listener {}: {:?}: {e}", served.ctx.name, served.client);
                    None
                }
            }
        }
    }
}

async fn serve_http1<I>(io: I, svc: ConnService, served: &Served<'_>, signals: Signals)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let settings = served.settings;
    // Header-read and idle timeouts are ours (`watchdog`), not hyper's
    // timer, which would allocate a timer per request and also close idle
    // keep-alive connections.
    let mut b = hyper::server::conn::http1::Builder::new();
    b.header_read_timeout(None)
        .max_header_size(settings.max_header_bytes);
    if settings.max_header_bytes + 8192 > 400 * 1024 {
        b.max_buf_size(settings.max_header_bytes + 8192);
    }
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.max_headers(settings.max_headers);
    }
    // Upgrades hand the connection over (`upgrade`); without one this is
    // the plain connection.
    let conn = b.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    // Draining closes after the next response (`ConnService`), not while
    // idle: a request on its way would be lost.
    let header_timeout = settings.header_read_timeout;
    let on_drain = OnDrain::CloseAfterNextResponse;
    drive(
        conn,
        |c| c.graceful_shutdown(),
        on_drain,
        header_timeout,
        served,
        signals,
    )
    .await;
}

async fn serve_http2<I>(io: I, svc: ConnService, served: &Served<'_>, signals: Signals)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http2::Builder::new(crate::proxy::cost::Charging);
    let max_header_list = u32::try_from(served.settings.max_header_bytes).unwrap_or(u32::MAX);
    b.max_header_list_size(max_header_list);
    let conn = b.serve_connection(io, svc);
    tokio::pin!(conn);
    // HTTP/2 control frames arrive between requests, so the header-read
    // clock does not apply; the idle timeout does.
    drive(
        conn,
        |c| c.graceful_shutdown(),
        OnDrain::Shutdown,
        None,
        served,
        signals,
    )
    .await;
}

/// What a connection does when draining starts; either way it is closed
/// when the drain's grace runs out.
#[derive(Clone, Copy, PartialEq)]
enum OnDrain {
    /// Graceful shutdown now (HTTP/2: GOAWAY, streams in flight finish).
    Shutdown,
    /// HTTP/1: the next response says `connection: close` and ends it.
    CloseAfterNextResponse,
}

/// Run a connection future to its end under the watchdog and the drain.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    shutdown: impl Fn(Pin<&mut C>),
    on_drain: OnDrain,
    header_timeout: Option<Duration>,
    served: &Served<'_>,
    signals: Signals,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let Served {
        shared,
        settings,
        ctx,
        client,
    } = *served;
    let Signals {
        mut drain,
        mut shed,
    } = signals;
    // Polled when the drain wakes it, not on every wake of the connection.
    let signaled = std::pin::pin!(drain.signaled());
    let mut drained = Woken::new(signaled);
    let mut draining = false;
    let mut force_at: Option<tokio::time::Instant> = None;
    loop {
        let verdict = watchdog::check(shared, header_timeout, settings.idle_timeout);
        let recheck = match verdict {
            Verdict::Fine(ms) => {
                ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms))
            }
            Verdict::HeaderTimeout => {
                log::debug!("listener {}: request headers timeout", ctx.name);
                ctx.metrics.rq_timeout.inc();
                return;
            }
            Verdict::Idle if !draining => {
                log::debug!("listener {}: idle timeout", ctx.name);
                shutdown(conn.as_mut());
                draining = true;
                force_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                None
            }
            Verdict::Idle => None,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_parse() {
                        // hyper answered 400/414/431 for a malformed or oversized head
                        ctx.metrics.response(if e.is_parse_too_large() { 431 } else { 400 });
                    }
                    log::debug!("listener {}: connection from {:?} closed: {e}", ctx.name, client);
                }
                return;
            }
            grace = &mut drained, if !draining => {
                if on_drain == OnDrain::Shutdown {
                    shutdown(conn.as_mut());
                }
                draining = true;
                force_at = Some(tokio::time::Instant::now() + grace);
            }
            () = shed_asked(&mut shed), if !draining => {
                if watchdog::idle_for(shared) >= Some(SHED_MIN_IDLE) {
                    log::debug!("listener {}: idle connection shed", ctx.name);
                    shutdown(conn.as_mut());
                    draining = true;
                    force_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            _ = sleep_until_opt(recheck), if !draining => {}
            _ = sleep_until_opt(force_at) => return,
        }
    }
}

pub(crate) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
