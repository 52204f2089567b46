//! Forward a routed request to its cluster: pick an endpoint, get a pooled or
//! new connection, send, apply timeouts and the retry policy.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue, TE, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::local::{self, ResetReason};
use super::upgrade;
use crate::proxy::body::{BodyDeadline, DownstreamFault, ReqBody, RespBody};
use crate::proxy::cluster::Cluster;
use crate::proxy::cluster::breaker::{Limit, Permit};
use crate::proxy::cluster::endpoint::{ActiveRequest, Endpoint};
use crate::proxy::cluster::forward_proxy::DnsCacheError;
use crate::proxy::cluster::outlier::Outcome;
use crate::proxy::metrics::HandshakeFailure;
use crate::proxy::metrics::{ClusterMetrics, GaugeGuard};
use crate::proxy::retry::{Failure, MAX_RETRY_BODY_BYTES};
use crate::proxy::route::action::Forward;
use crate::proxy::upstream::UpstreamError;
use crate::proxy::upstream::connect::connect;
use crate::proxy::upstream::pool::Pooled;
use crate::proxy::upstream::sender::Sender;

static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
static UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");
static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");

/// How one try ended without a usable response.
enum TryError {
    NoHealthy,
    Overflow,
    /// Why the connection failed (the 503 body names it).
    Connect(ResetReason),
    Reset,
    /// DYNAMIC_FORWARD_PROXY: the request's host has no endpoint.
    Dns(DnsCacheError),
    /// Reading the request body from downstream failed: the client's fault.
    Downstream,
    /// DYNAMIC_FORWARD_PROXY: the request's host is weir's own admin or
    /// stats listener.
    OwnListener,
}

/// How long a forward proxy cluster waits for a host's resolution (c-ares' default).
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Header values for 0..1000 ms, built once from one leaked string, so the
/// common case costs no allocation per request.
fn millis_header(ms: u64) -> HeaderValue {
    const N: usize = 1000;
    static TABLE: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let text: &'static str = (0..N).map(|i| i.to_string()).collect::<String>().leak();
        let mut out = Vec::with_capacity(N);
        let mut at = 0;
        for i in 0..N {
            let len = i.to_string().len();
            out.push(HeaderValue::from_static(&text[at..at + len]));
            at += len;
        }
        out
    });
    match table.get(ms as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(ms),
    }
}

/// Hop-by-hop headers are not forwarded, except `te: trailers` (gRPC) and,
/// on an upgrade, `connection` and `upgrade`. Headers the `Connection`
/// header names are hop-by-hop too (RFC 9110 §7.6.1).
fn strip_hop_by_hop(h: &mut HeaderMap, upgrading: bool) {
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    strip_connection_options(h, upgrading);
    if !upgrading {
        h.remove(CONNECTION);
        h.remove(UPGRADE);
    }
    if let Some(te) = h.get(&TE)
        && te != "trailers"
    {
        h.remove(&TE);
    }
}

/// Remove the headers `Connection` names (`close`, `keep-alive` and, on
/// an upgrade, `upgrade` are options, not header names to drop here).
/// `Host` stays whatever it says: it is the request's one authority, which
/// HTTP/1.1 requires (fuzzing found `Connection: host` forwarding none).
pub(crate) fn strip_connection_options(h: &mut HeaderMap, upgrading: bool) {
    let mut named: Vec<http::HeaderName> = Vec::new();
    for value in h.get_all(CONNECTION) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for token in text.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("host")
                || (upgrading && token.eq_ignore_ascii_case("upgrade"))
            {
                continue;
            }
            if let Ok(name) = http::HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        h.remove(name);
    }
}

/// Rewrite the request head for the upstream: origin-form URI, prefix
/// rewrite, host rewrite, hop-by-hop removal (keeping what an upgrade needs
/// when `upgrading`).
pub fn prepare_head(parts: &mut Parts, fwd: &Forward, matched: usize, upgrading: bool) {
    if let Some(auth) = parts.uri.authority()
        && !parts.headers.contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(auth.as_str())
    {
        parts.headers.insert(HOST, v);
    }
    if let Some(pre) = &fwd.prefix_rewrite {
        let path = parts.uri.path();
        let mut s = String::with_capacity(pre.len() + path.len() + 16);
        s.push_str(pre);
        s.push_str(path.get(matched..).unwrap_or(""));
        if let Some(q) = parts.uri.query() {
            s.push('?');
            s.push_str(q);
        }
        if let Ok(u) = s.parse::<Uri>() {
            parts.uri = u;
        }
    } else if parts.uri.scheme().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // `http://a?q` has the empty path: its origin form is `/?q`
        // (fuzzing found it forwarded in absolute form).
        let origin = if pq.starts_with('/') {
            pq.parse::<Uri>()
        } else {
            format!("/{pq}").parse::<Uri>()
        };
        if let Ok(u) = origin {
            parts.uri = u;
        }
    }
    if let Some(h) = &fwd.host_rewrite {
        parts.headers.insert(HOST, h.clone());
    }
    // Envoy tells the upstream how long it will wait (and overwrites any value the client sent).
    match &fwd.expected_timeout {
        Some(ms) => parts
            .headers
            .insert(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, ms.clone()),
        None => parts.headers.remove(&X_ENVOY_EXPECTED_RQ_TIMEOUT_MS),
    };
    strip_hop_by_hop(&mut parts.headers, upgrading);
}

/// Send the request through the route's cluster split and return the
/// response for downstream (upstream or local). With `upgrade`, a 101 from
/// the upstream starts a tunnel (`upgrade`); upgrades are tried once.
pub async fn forward(
    fwd: &Forward,
    parts: Parts,
    body: Incoming,
    upgrade: Option<upgrade::Requested>,
) -> Response<RespBody> {
    let cluster = fwd.split.pick().clone();
    if upgrade.is_some() && cluster.params.transport.http2 {
        // An HTTP/1.1 upgrade cannot be sent on an HTTP/2 connection.
        return local::upgrade_refused();
    }
    let started = Instant::now();
    // Bounds reading a body to replay; the route timeout itself starts once
    // the request is complete, as Envoy's does.
    let body_deadline = fwd.timeout.map(|t| started + t);
    let m = &cluster.metrics;

    // Decide whether the request can be replayed (see `retry` module docs).
    let retry = fwd.retry.as_ref();
    let mut stream = None;
    let replay: Option<Option<Bytes>> = if body.is_end_stream() {
        Some(None)
    } else if retry.is_some()
        && body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= MAX_RETRY_BODY_BYTES)
    {
        let collect = body.collect();
        let collected = match body_deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), collect).await {
                Ok(r) => r,
                Err(_) => return local::reply(StatusCode::REQUEST_TIMEOUT, local::REQUEST_TIMEOUT),
            },
            None => collect.await,
        };
        match collected {
            Ok(c) => {
                let b = c.to_bytes();
                m.tx_bytes.inc_by(b.len() as u64);
                Some(Some(b))
            }
            Err(_) => return local::reply(StatusCode::BAD_REQUEST, ""),
        }
    } else {
        stream = Some(body);
        None
    };
    // Until the upstream response is complete, body included.
    let deadline = fwd.timeout.map(|t| Instant::now() + t);
    let max_tries = match (&replay, retry, &upgrade) {
        (Some(_), Some(r), None) => 1 + r.num_retries,
        _ => 1,
    };
    let mut upgrade = upgrade;

    // A forward proxy cluster goes where the request's Host says.
    let authority = cluster.dns_cache.as_ref().and_then(|_| {
        parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .map(str::to_owned)
    });
    let fault = DownstreamFault::default();
    let mut parts = Some(parts);
    let mut tries = 0u32;
    let mut latest_reason = ResetReason::RemoteConnectionFailure;
    let mut held: Option<(Response<Incoming>, Pooled, Instant)> = None;
    let mut _retry_permit = None;
    loop {
        tries += 1;
        let last = tries >= max_tries;
        let head = if last {
            parts.take()
        } else {
            parts.as_ref().map(clone_head)
        };
        let Some(head) = head else {
            return local::reply(StatusCode::INTERNAL_SERVER_ERROR, "");
        };
        let req_body = match (&replay, stream.take()) {
            (Some(b), _) => ReqBody::Buffered(b.clone()),
            (None, Some(inner)) => ReqBody::Stream {
                inner,
                tx_bytes: m.tx_bytes.clone(),
                fault: fault.clone(),
            },
            (None, None) => ReqBody::Buffered(None),
        };
        let req = Request::from_parts(head, req_body);
        let try_started = Instant::now();
        let per_try = retry.and_then(|r| r.per_try_timeout);
        let try_deadline = match (deadline, per_try) {
            (Some(d), Some(p)) => Some(d.min(try_started + p)),
            (Some(d), None) => Some(d),
            (None, Some(p)) => Some(try_started + p),
            (None, None) => None,
        };
        let result = match begin_try(&cluster, authority.as_deref()).await {
            Err(e) => Ok(Err(e)),
            Ok(guard) => {
                let ep = guard.active.endpoint();
                let r = match try_deadline {
                    Some(td) => {
                        let ex = exchange(&cluster, ep, req, &fault);
                        tokio::time::timeout_at(td.into(), ex).await
                    }
                    None => Ok(exchange(&cluster, ep, req, &fault).await),
                };
                if r.is_err() {
                    // timed out: a gateway failure of this endpoint
                    cluster.record(ep, Outcome::LocalFailure);
                }
                r.map(|r| r.map(|(resp, conn)| (resp, conn, guard)))
            }
        };
        // As Envoy: `upstream_requests` counts the answer the request ends
        // with; a response that is retried counts as a retry's instead
        // (`retry.upstream_rq_xx`); a retried connect failure, reset or
        // per-try timeout counts nowhere (checked against Envoy 1.40).
        let failure = match result {
            Ok(Ok((mut resp, conn, guard))) => {
                let status = resp.status().as_u16();
                m.rq_duration.observe(try_started.elapsed().as_secs_f64());
                cluster.record(guard.active.endpoint(), Outcome::Status(status));
                if status == 101
                    && let Some(u) = upgrade.take()
                {
                    m.response(status);
                    upgrade::tunnel(u.downstream, &mut resp, &u.protocol);
                    // The connection now belongs to the tunnel: never pooled.
                    drop(conn);
                    return switching_protocols(resp);
                }
                let retriable =
                    !last && retry.is_some_and(|r| r.should_retry(Failure::Status(status)));
                if !retriable {
                    m.response(status);
                    return downstream_response(resp, conn, &cluster, try_started, deadline);
                }
                // Kept until the retry is certain: if it cannot go, this
                // response is the answer (Envoy on a retry overflow).
                held = Some((resp, conn, try_started));
                Failure::Status(status)
            }
            // Not the upstream's failure: no upstream stat, no outlier
            // record, no retry (Envoy answers 400 and closes).
            Ok(Err(TryError::Downstream)) => {
                log::debug!(
                    "cluster {}: request body from downstream failed",
                    cluster.name
                );
                let mut r = local::reply(StatusCode::BAD_REQUEST, "Bad Request");
                r.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
            Ok(Err(TryError::OwnListener)) => {
                log::debug!(
                    "cluster {}: destination is weir's own admin or stats",
                    cluster.name
                );
                return local::reply(StatusCode::FORBIDDEN, local::OWN_LISTENER);
            }
            Ok(Err(TryError::NoHealthy)) => {
                m.none_healthy.inc();
                m.response(503);
                return local::reply(StatusCode::SERVICE_UNAVAILABLE, local::NO_HEALTHY_UPSTREAM);
            }
            Ok(Err(TryError::Overflow)) => {
                m.response(503);
                return local::overloaded();
            }
            // Envoy answers these from its forward proxy filter, before the
            // router: not an upstream request.
            Ok(Err(TryError::Dns(e))) => {
                return local::reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    match e {
                        DnsCacheError::Resolution => local::DNS_RESOLUTION_FAILURE,
                        DnsCacheError::Overflow => local::DNS_CACHE_OVERFLOW,
                    },
                );
            }
            Ok(Err(TryError::Connect(reason))) => {
                if last || !retry.is_some_and(|r| r.should_retry(Failure::ConnectFailure)) {
                    m.response(503);
                    return local::upstream_reset(reason, tries > 1);
                }
                latest_reason = reason;
                Failure::ConnectFailure
            }
            Ok(Err(TryError::Reset)) => {
                m.rq_reset.inc();
                if last || !retry.is_some_and(|r| r.should_retry(Failure::Reset)) {
                    m.response(503);
                    return local::upstream_reset(ResetReason::ConnectionTermination, tries > 1);
                }
                Failure::Reset
            }
            Err(_elapsed) => {
                let overall = deadline.is_some_and(|d| Instant::now() >= d);
                if overall {
                    m.rq_timeout.inc();
                    m.response(504);
                    return local::reply(StatusCode::GATEWAY_TIMEOUT, local::UPSTREAM_TIMEOUT);
                }
                m.rq_per_try_timeout.inc();
                if last || !retry.is_some_and(|r| r.should_retry(Failure::PerTryTimeout)) {
                    m.response(504);
                    return local::reply(StatusCode::GATEWAY_TIMEOUT, local::UPSTREAM_TIMEOUT);
                }
                Failure::PerTryTimeout
            }
        };
        // Retry: within the breaker's max_retries and the route deadline.
        let Some(policy) = retry else {
            return final_failure(m, failure, latest_reason, tries > 1);
        };
        let Some(permit) = cluster.breaker.try_acquire(Limit::Retries) else {
            m.overflow_retries.inc();
            if let (Some((resp, conn, started)), Failure::Status(status)) = (held.take(), failure) {
                m.response(status);
                return downstream_response(resp, conn, &cluster, started, deadline);
            }
            return final_failure(m, failure, latest_reason, tries > 1);
        };
        _retry_permit = Some(permit);
        drop(held.take());
        let wait = policy.backoff(tries);
        if let Some(d) = deadline
            && Instant::now() + wait >= d
        {
            // Envoy waits out the back-off and its route timeout fires then.
            tokio::time::sleep_until(d.into()).await;
            m.rq_timeout.inc();
            m.response(504);
            return local::reply(StatusCode::GATEWAY_TIMEOUT, local::UPSTREAM_TIMEOUT);
        }
        if let Failure::Status(status) = failure {
            m.retried_response(status);
        }
        m.rq_retry.inc();
        log::debug!("cluster {}: retry {tries} after {failure:?}", cluster.name);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The answer when a failed try cannot be retried after all, counted as final.
fn final_failure(
    m: &ClusterMetrics,
    f: Failure,
    reason: ResetReason,
    retried: bool,
) -> Response<RespBody> {
    let resp = failure_reply(f, reason, retried);
    m.response(resp.status().as_u16());
    resp
}

fn failure_reply(f: Failure, reason: ResetReason, retried: bool) -> Response<RespBody> {
    match f {
        Failure::Status(s) => local::reply(
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
            "",
        ),
        Failure::ConnectFailure => local::upstream_reset(reason, retried),
        Failure::Reset => local::upstream_reset(ResetReason::ConnectionTermination, retried),
        Failure::PerTryTimeout => {
            local::reply(StatusCode::GATEWAY_TIMEOUT, local::UPSTREAM_TIMEOUT)
        }
    }
}

fn clone_head(p: &Parts) -> Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}

/// The upstream's 101 for downstream: its headers, `Connection` and
/// `Upgrade` included, and no body (the tunnel carries what follows).
/// Envoy 1.40 adds no `x-envoy-upstream-service-time` to it.
fn switching_protocols(resp: Response<Incoming>) -> Response<RespBody> {
    let (mut parts, _) = resp.into_parts();
    parts.version = http::Version::HTTP_11;
    Response::from_parts(parts, RespBody::Local(None))
}

fn downstream_response(
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
            rx_bytes: cluster.metrics.rx_bytes.clone(),
            deadline: deadline.map(|d| BodyDeadline {
                sleep: Box::pin(tokio::time::sleep_until(d.into())),
                timeouts: cluster.metrics.rq_timeout.clone(),
            }),
        }
    };
    Response::from_parts(parts, body)
}

/// No idle connection: open one, or, at `max_connections`, wait (as a
/// pending request, within `max_pending_requests`) until one is released to
/// this endpoint's pool or closed anywhere in the cluster. The try's timeout
/// bounds the wait.
async fn new_or_freed(
    cluster: &Arc<Cluster>,
    ep: &Arc<Endpoint>,
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
        if let Some(c) = ep.pool.checkout() {
            return Ok((c, true));
        }
        if let Some(cx_permit) = cluster.breaker.try_acquire(Limit::Connections) {
            return open(cluster, ep, cx_permit)
                .await
                .map(|tx| (ep.pool.fresh(tx), false));
        }
        if !counted {
            m.overflow_connections.inc();
            counted = true;
        }
        freed.await;
    }
}

/// Open a new connection to `ep` holding `permit`.
async fn open(
    cluster: &Arc<Cluster>,
    ep: &Arc<Endpoint>,
    permit: Permit,
) -> Result<Sender, TryError> {
    let notify = cluster.freed.clone();
    let t = &cluster.params.transport;
    match connect(
        ep.addr,
        cluster.connect_timeout,
        permit,
        notify,
        &cluster.metrics,
        t,
    )
    .await
    {
        Ok(tx) => Ok(tx),
        Err(e) => {
            log::debug!("cluster {}: {e}", cluster.name);
            cluster.record(ep, Outcome::LocalFailure);
            Err(TryError::Connect(match e {
                UpstreamError::Tls(h) if h.reason == HandshakeFailure::VerifyFailed => {
                    ResetReason::TlsVerifyFailed
                }
                UpstreamError::Tls(_) => ResetReason::TlsHandshakeFailed,
                UpstreamError::ConnectTimeout(_) => ResetReason::ConnectionTimeout,
                _ => ResetReason::RemoteConnectionFailure,
            }))
        }
    }
}

/// HTTP/2 clusters: the endpoint's shared connection, opened (under
/// `max_connections`) when there is none or it closed.
async fn shared_h2(cluster: &Arc<Cluster>, ep: &Arc<Endpoint>) -> Result<Pooled, TryError> {
    let mut slot = ep.pool.h2.lock().await;
    if let Some(tx) = slot.as_ref()
        && !tx.is_closed()
    {
        return Ok(ep.pool.fresh(Sender::H2(tx.clone())));
    }
    let Some(permit) = cluster.breaker.try_acquire(Limit::Connections) else {
        cluster.metrics.overflow_connections.inc();
        return Err(TryError::Overflow);
    };
    match open(cluster, ep, permit).await? {
        Sender::H2(tx) => {
            *slot = Some(tx.clone());
            Ok(ep.pool.fresh(Sender::H2(tx)))
        }
        h1 => Ok(ep.pool.fresh(h1)),
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
async fn begin_try(cluster: &Arc<Cluster>, authority: Option<&str>) -> Result<TryGuard, TryError> {
    let m = &cluster.metrics;
    let Some(rq_permit) = cluster.breaker.try_acquire(Limit::Requests) else {
        m.overflow_requests.inc();
        return Err(TryError::Overflow);
    };
    let ep = match (&cluster.dns_cache, authority) {
        (None, _) => cluster.pick().ok_or(TryError::NoHealthy)?,
        (Some(cache), Some(authority)) => {
            let ep =
                match tokio::time::timeout(DNS_TIMEOUT, cache.endpoint(cluster, authority)).await {
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
    loop {
        let (mut conn, reused) = if transport.http2 {
            (shared_h2(cluster, ep).await?, false)
        } else {
            match ep.pool.checkout() {
                Some(c) => (c, true),
                None => new_or_freed(cluster, ep).await?,
            }
        };
        if conn.tx.ready().await.is_err() {
            if reused {
                continue;
            }
            cluster.record(ep, Outcome::LocalFailure);
            return Err(TryError::Reset);
        }
        conn.mark_used();
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
                    cluster.record(ep, Outcome::LocalFailure);
                    return Err(TryError::Reset);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_header_values() {
        assert_eq!(millis_header(0), "0");
        assert_eq!(millis_header(7), "7");
        assert_eq!(millis_header(42), "42");
        assert_eq!(millis_header(999), "999");
        assert_eq!(millis_header(1000), "1000");
        assert_eq!(millis_header(123_456), "123456");
    }
}
