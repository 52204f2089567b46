//! One try of a routed request: the `max_requests` breaker, an endpoint
//! (or, for a forward proxy cluster, the request host's), a pooled or new
//! connection of the request's source (`upstream::egress`: the endpoint's
//! pool of that source, new connections made from it), send, and the
//! response head, within the try's deadline.
//! The retry stage (`proxy::retry`) decides what happens after.

use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{Request, Response, Uri};
use http_body::Body;
use hyper::body::Incoming;

use super::hop::{UPSTREAM_SERVICE_TIME, millis_header, strip_hop_by_hop};
use super::local::ResetReason;
use crate::proxy::access_log::Exchange;
use crate::proxy::body::request::{DownstreamFault, ReqBody};
use crate::proxy::body::response::{BodyDeadline, RespBody};
use crate::proxy::cluster::Cluster;
use crate::proxy::cluster::breaker::{Limit, Permit};
use crate::proxy::cluster::endpoint::{ActiveRequest, Endpoint};
use crate::proxy::cluster::forward_proxy::DnsCacheError;
use crate::proxy::cluster::outlier::Outcome;
use crate::proxy::metrics::{GaugeGuard, HandshakeFailure};
use crate::proxy::upstream::UpstreamError;
use crate::proxy::upstream::connect::{Slot, connect};
use crate::proxy::upstream::connector::ConnectError;
use crate::proxy::upstream::egress::Egress;
use crate::proxy::upstream::pool::{Pool, Pooled};
use crate::proxy::upstream::sender::Sender;

/// How one try ended without a usable response.
pub(crate) enum TryError {
    NoHealthy,
    Overflow,
    /// Why the connection failed (the 503 body names it).
    Connect(ResetReason),
    /// Closed or reset before the response head; `refused`: an HTTP/2
    /// REFUSED_STREAM (the upstream never saw the request).
    Reset {
        refused: bool,
    },
    /// DYNAMIC_FORWARD_PROXY: the request's host has no endpoint.
    Dns(DnsCacheError),
    /// Reading the request body from downstream failed: the client's fault.
    Downstream,
    /// DYNAMIC_FORWARD_PROXY: the request's host is weir's own admin or
    /// stats listener.
    OwnListener,
}

/// The endpoints a request's tries went to. A request has at most
/// `1 + num_retries` tries, so this stays small.
#[derive(Default)]
pub(crate) struct TriedHosts(Vec<std::net::SocketAddr>);

/// How a try picks its endpoint.
pub(crate) enum Picking<'a> {
    /// The balancer's pick.
    Any,
    /// Envoy's `previous_hosts` predicate: pick again, up to `extra_picks`
    /// times, while the pick is one an earlier try went to; then take the
    /// last pick. Records the endpoint taken in `tried`.
    Avoid {
        tried: &'a mut TriedHosts,
        extra_picks: u32,
    },
}

impl Picking<'_> {
    fn pick(self, cluster: &Cluster) -> Option<Arc<Endpoint>> {
        match self {
            Self::Any => cluster.pick(),
            Self::Avoid { tried, extra_picks } => {
                let mut ep = cluster.pick()?;
                for _ in 0..extra_picks {
                    if !tried.0.contains(&ep.addr) {
                        break;
                    }
                    ep = cluster.pick()?;
                }
                tried.0.push(ep.addr);
                Some(ep)
            }
        }
    }
}

/// How long a forward proxy cluster waits for a host's resolution (c-ares' default).
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How a try ended.
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per try; boxing would allocate per request"
)]
pub(crate) enum Tried {
    /// A response head, on the connection it came on.
    Response(Response<Incoming>, Pooled),
    Failed(TryError),
    /// The try's deadline passed first (a gateway failure of the endpoint).
    TimedOut,
}

/// One try of `req` from `egress` (the engine's own network namespace
/// without one), started at `started`, until the response head or
/// `deadline` (the breaker and the endpoint pick are not under it).
#[expect(
    clippy::too_many_arguments,
    reason = "one try's inputs, each from a different stage of the request"
)]
pub(crate) async fn run(
    cluster: &Arc<Cluster>,
    authority: Option<&str>,
    picking: Picking<'_>,
    req: Request<ReqBody>,
    fault: &DownstreamFault,
    started: Instant,
    deadline: Option<Instant>,
    egress: Option<&Egress>,
) -> Tried {
    let guard = match begin_try(cluster, authority, picking).await {
        Ok(guard) => guard,
        Err(e) => return Tried::Failed(e),
    };
    let ep = guard.active.endpoint();
    if let Some(x) = req.extensions().get::<Exchange>() {
        x.upstream(ep.addr, &cluster.name);
    }
    let from = From {
        pool: ep.pool_for(egress).into_owned(),
        egress,
    };
    let exchanged = match deadline {
        Some(d) => {
            tokio::time::timeout_at(d.into(), exchange(cluster, ep, &from, req, fault)).await
        }
        None => Ok(exchange(cluster, ep, &from, req, fault).await),
    };
    match exchanged {
        Ok(Ok((resp, conn))) => {
            cluster
                .metrics
                .rq_duration
                .observe(started.elapsed().as_secs_f64());
            cluster.record(ep, Outcome::Status(resp.status().as_u16()));
            Tried::Response(resp, conn)
        }
        Ok(Err(e)) => Tried::Failed(e),
        Err(_elapsed) => {
            cluster.record(ep, Outcome::LocalFailure);
            Tried::TimedOut
        }
    }
}

/// The upstream's 101 for downstream: its headers, `Connection` and
/// `Upgrade` included, and no body (the tunnel carries what follows).
/// Envoy 1.40 adds no `x-envoy-upstream-service-time` to it.
pub(crate) fn switching_protocols(resp: Response<Incoming>) -> Response<RespBody> {
    let (mut parts, _) = resp.into_parts();
    parts.version = http::Version::HTTP_11;
    Response::from_parts(parts, RespBody::Local(None))
}

pub(crate) fn downstream_response(
    resp: Response<Incoming>,
    conn: Pooled,
    cluster: &Arc<Cluster>,
    try_started: Instant,
    deadline: Option<Instant>,
) -> Response<RespBody> {
    let (mut parts, inner) = resp.into_parts();
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, false);
    let ms = try_started.elapsed().as_millis() as u64;
    parts
        .headers
        .insert(UPSTREAM_SERVICE_TIME.clone(), millis_header(ms));
    let body = if inner.is_end_stream() {
        conn.release();
        RespBody::Local(None)
    } else {
        RespBody::Upstream {
            inner,
            conn: Some(conn),
            rx_bytes: Some(cluster.metrics.rx_bytes.clone()),
            deadline: deadline
                .map(|d| BodyDeadline::new(d.into(), cluster.metrics.rq_timeout.clone())),
        }
    };
    Response::from_parts(parts, body)
}

/// Where a try's connection comes from: the endpoint's pool of the
/// request's source, and that source for a new one.
struct From<'a> {
    pool: Arc<Pool>,
    egress: Option<&'a Egress>,
}

/// No idle connection: open one, or, at `max_connections`, wait (as a
/// pending request, within `max_pending_requests`) until one is released to
/// this source's pool of the endpoint or closed anywhere in the cluster.
/// While waiting it closes an idle connection of another source to the
/// endpoint, if there is one, so that idle connections another pod keeps
/// cannot hold every place. The try's timeout bounds the wait.
async fn new_or_freed(
    cluster: &Arc<Cluster>,
    ep: &Arc<Endpoint>,
    from: &From<'_>,
) -> Result<(Pooled, bool), TryError> {
    let m = &cluster.metrics;
    let Some(_pending) = cluster.breaker.try_acquire(Limit::Pending) else {
        m.overflow_pending.inc();
        return Err(TryError::Overflow);
    };
    let mut counted = false;
    loop {
        let mut freed = std::pin::pin!(cluster.freed.notified());
        freed.as_mut().enable();
        if let Some(c) = from.pool.checkout() {
            return Ok((c, true));
        }
        if let Some(cx_permit) = cluster.breaker.try_acquire(Limit::Connections) {
            return open(cluster, ep, cx_permit, from.egress)
                .await
                .map(|tx| (from.pool.fresh(tx), false));
        }
        if !counted {
            m.overflow_connections.inc();
            counted = true;
        }
        evict_other_source(ep, &from.pool);
        freed.await;
    }
}

/// Close one idle connection to `ep` that is not in `ours` (the engine's
/// own or another source's): its place under `max_connections` is free
/// once its task ends, which notifies the cluster's `freed`.
fn evict_other_source(ep: &Endpoint, ours: &Arc<Pool>) -> bool {
    (!Arc::ptr_eq(&ep.pool, ours) && ep.pool.evict_one()) || ep.sources.evict_one(ours)
}

/// Open a new connection to `ep` from `egress` holding `permit`.
async fn open(
    cluster: &Arc<Cluster>,
    ep: &Arc<Endpoint>,
    permit: Permit,
    egress: Option<&Egress>,
) -> Result<Sender, TryError> {
    let slot = Slot {
        permit,
        freed: cluster.freed.clone(),
    };
    let t = &cluster.params.transport;
    let (addr, timeout, m) = (ep.addr, cluster.connect_timeout, &cluster.metrics);
    match connect(addr, timeout, slot, m, t, egress).await {
        Ok(tx) => Ok(tx),
        Err(UpstreamError::Connect(e @ ConnectError::Egress(..))) => {
            // The source's failure, not the endpoint's: no outlier mark.
            log::debug!("cluster {}: {e}", cluster.name);
            Err(TryError::Connect(ResetReason::LocalReset))
        }
        Err(e) => {
            log::debug!("cluster {}: {e}", cluster.name);
            cluster.record(ep, Outcome::LocalFailure);
            Err(TryError::Connect(match e {
                UpstreamError::Tls(h) if h.reason == HandshakeFailure::VerifyFailed => {
                    ResetReason::TlsVerifyFailed
                }
                UpstreamError::Tls(_) => ResetReason::TlsHandshakeFailed,
                UpstreamError::Connect(ConnectError::TimedOut(_)) => ResetReason::ConnectionTimeout,
                _ => ResetReason::RemoteConnectionFailure,
            }))
        }
    }
}

/// HTTP/2 clusters: the shared connection of the request's source to the
/// endpoint, opened (under `max_connections`) when there is none or it
/// closed.
async fn shared_h2(
    cluster: &Arc<Cluster>,
    ep: &Arc<Endpoint>,
    from: &From<'_>,
) -> Result<Pooled, TryError> {
    let pool = &from.pool;
    let mut slot = pool.h2.lock().await;
    if let Some(tx) = slot.as_ref()
        && !tx.is_closed()
        && !pool.is_closed()
    {
        return Ok(pool.fresh(Sender::H2(tx.clone())));
    }
    let Some(permit) = cluster.breaker.try_acquire(Limit::Connections) else {
        cluster.metrics.overflow_connections.inc();
        return Err(TryError::Overflow);
    };
    match open(cluster, ep, permit, from.egress).await? {
        Sender::H2(tx) => {
            if !pool.is_closed() {
                *slot = Some(tx.clone());
            }
            Ok(pool.fresh(Sender::H2(tx)))
        }
        h1 => Ok(pool.fresh(h1)),
    }
}

/// HTTP/2 upstream requests carry scheme and authority (from Host).
fn to_h2(req: &mut Request<ReqBody>, tls: bool) {
    *req.version_mut() = http::Version::HTTP_2;
    if req.uri().authority().is_some() {
        return;
    }
    let Some(host) = req.headers().get(HOST).and_then(|h| h.to_str().ok()) else {
        return;
    };
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let scheme = if tls { "https" } else { "http" };
    if let Ok(u) = format!("{scheme}://{host}{pq}").parse::<Uri>() {
        *req.uri_mut() = u;
    }
}

/// What a try holds while it runs: breaker permit, endpoint, gauges.
struct TryGuard {
    _rq_permit: Permit,
    _rq_active: GaugeGuard,
    active: ActiveRequest,
}

/// Start a try: `max_requests` breaker, then a healthy endpoint.
async fn begin_try(
    cluster: &Arc<Cluster>,
    authority: Option<&str>,
    picking: Picking<'_>,
) -> Result<TryGuard, TryError> {
    let m = &cluster.metrics;
    let Some(rq_permit) = cluster.breaker.try_acquire(Limit::Requests) else {
        m.overflow_requests.inc();
        return Err(TryError::Overflow);
    };
    let ep = match (&cluster.dns_cache, authority) {
        (None, _) => picking.pick(cluster).ok_or(TryError::NoHealthy)?,
        (Some(cache), Some(authority)) => {
            let lookup = tokio::time::timeout(DNS_TIMEOUT, cache.endpoint(cluster, authority));
            let ep = match Box::pin(lookup).await {
                Ok(r) => r.map_err(TryError::Dns)?,
                Err(_) => return Err(TryError::Dns(DnsCacheError::Resolution)),
            };
            if crate::proxy::admin::own::is_own(ep.addr) {
                return Err(TryError::OwnListener);
            }
            ep
        }
        (Some(_), None) => return Err(TryError::Dns(DnsCacheError::Resolution)),
    };
    Ok(TryGuard {
        _rq_permit: rq_permit,
        _rq_active: GaugeGuard::new(&m.rq_active),
        active: ActiveRequest::new(ep),
    })
}

/// The timed part of a try: connection, send, response head.
async fn exchange(
    cluster: &Arc<Cluster>,
    ep: &Arc<Endpoint>,
    from: &From<'_>,
    mut req: Request<ReqBody>,
    fault: &DownstreamFault,
) -> Result<(Response<Incoming>, Pooled), TryError> {
    let transport = &cluster.params.transport;
    if transport.http2 {
        to_h2(&mut req, transport.tls.is_some());
    } else if req.version() == http::Version::HTTP_2 {
        *req.version_mut() = http::Version::HTTP_11;
    }
    // A pooled connection may have been closed by the peer meanwhile; such
    // a failure is not the endpoint's fault and the request was not sent, so
    // it goes again on another connection.
    // Envoy's upstream_rq_total: a try counts once it is bound to a connection.
    let mut counted = false;
    loop {
        let (mut conn, reused) = if transport.http2 {
            (Box::pin(shared_h2(cluster, ep, from)).await?, false)
        } else {
            match from.pool.checkout() {
                Some(c) => (c, true),
                // Boxed, as every path rarely taken is (a new connection, a
                // forward proxy's lookup, a back-off): their futures are
                // large, and inline they would be moved (copied) at every
                // level of every request's future.
                None => Box::pin(new_or_freed(cluster, ep, from)).await?,
            }
        };
        if conn.tx.ready().await.is_err() {
            if reused {
                continue;
            }
            cluster.record(ep, Outcome::LocalFailure);
            return Err(TryError::Reset { refused: false });
        }
        conn.mark_used();
        if !counted {
            counted = true;
            cluster.metrics.rq_sent.inc();
        }
        match conn.tx.send(req).await {
            Ok(resp) => return Ok((resp, conn)),
            Err(mut e) => match e.take_message() {
                Some(r) if reused => {
                    req = r;
                    continue;
                }
                _ if fault.is_set() => return Err(TryError::Downstream),
                _ => {
                    log::debug!("cluster {}: {} reset: {}", cluster.name, ep.addr, e.error());
                    let refused = refused_stream(e.error());
                    // A refused stream was never processed: no mark on the endpoint.
                    if !refused {
                        cluster.record(ep, Outcome::LocalFailure);
                    }
                    return Err(TryError::Reset { refused });
                }
            },
        }
    }
}

/// An HTTP/2 stream reset with REFUSED_STREAM somewhere in the error's causes.
fn refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return true;
        }
        cause = err.source();
    }
    false
}
