//! One request's retry loop: what each try sends ([`Outgoing`]), the
//! route's deadlines ([`Deadlines`]), and [`run`], which judges each try's
//! end and backs off before the next while the policy allows.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::IntCounter;

use super::{Failure, MAX_RETRY_BODY_BYTES, RetryPolicy};
use crate::proxy::access_log::Exchange;
use crate::proxy::body::request::{DownstreamFault, ReqBody};
use crate::proxy::body::response::RespBody;
use crate::proxy::cluster::Cluster;
use crate::proxy::cluster::breaker::{Limit, Permit};
use crate::proxy::cluster::forward_proxy::DnsCacheError;
use crate::proxy::http::attempt::{self, Picking, Tried, TriedHosts, TryError};
use crate::proxy::http::local::{self, ResetReason};
use crate::proxy::http::upgrade;
use crate::proxy::metrics::ClusterMetrics;
use crate::proxy::upstream::egress::Egress;
use crate::proxy::upstream::pool::Pooled;

/// The route's deadlines for one request.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Until the upstream response is complete, body included (route `timeout`).
    pub overall: Option<Instant>,
    /// Each try's own limit (`per_try_timeout`).
    pub per_try: Option<Duration>,
}

impl Deadlines {
    /// The deadline of a try started at `started`.
    pub fn for_try(&self, started: Instant) -> Option<Instant> {
        match (self.overall, self.per_try) {
            (Some(d), Some(p)) => Some(d.min(started + p)),
            (Some(d), None) => Some(d),
            (None, Some(p)) => Some(started + p),
            (None, None) => None,
        }
    }

    fn overall_passed(&self) -> bool {
        self.overall.is_some_and(|d| Instant::now() >= d)
    }
}

/// The body every try sends.
enum Replay {
    /// Complete (or empty): each try sends it again.
    Buffered(Option<Bytes>),
    /// Streamed to the first try only.
    Stream(Option<Incoming>),
}

/// What the tries of one request send (see "When a request is retried").
pub struct Outgoing {
    head: Option<Parts>,
    body: Replay,
    tx_bytes: IntCounter,
    fault: DownstreamFault,
    /// The access log's view of the request, when its listener logs.
    exchange: Option<Exchange>,
}

impl Outgoing {
    /// Buffer the body when the request may be retried and its body is
    /// small enough, within `body_deadline`; stream it otherwise. `Err`: the
    /// answer when the body could not be read.
    pub async fn prepare(
        head: Parts,
        body: Incoming,
        retries: bool,
        body_deadline: Option<Instant>,
        m: &ClusterMetrics,
    ) -> Result<Self, Response<RespBody>> {
        let exchange = head.extensions.get::<Exchange>().cloned();
        let replay = if body.is_end_stream() {
            Replay::Buffered(None)
        } else if retries
            && body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= MAX_RETRY_BODY_BYTES)
        {
            let collect = body.collect();
            let collected = match body_deadline {
                Some(d) => match Box::pin(tokio::time::timeout_at(d.into(), collect)).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(local::reply(
                            StatusCode::REQUEST_TIMEOUT,
                            local::REQUEST_TIMEOUT,
                        ));
                    }
                },
                None => collect.await,
            };
            match collected {
                Ok(c) => {
                    let b = c.to_bytes();
                    m.tx_bytes.inc_by(b.len() as u64);
                    if let Some(x) = &exchange {
                        x.received(b.len());
                    }
                    Replay::Buffered(Some(b))
                }
                Err(_) => return Err(local::reply(StatusCode::BAD_REQUEST, "")),
            }
        } else {
            Replay::Stream(Some(body))
        };
        Ok(Self {
            head: Some(head),
            body: replay,
            tx_bytes: m.tx_bytes.clone(),
            fault: DownstreamFault::default(),
            exchange,
        })
    }

    fn max_tries(&self, policy: Option<&RetryPolicy>, upgrading: bool) -> u32 {
        match (&self.body, policy, upgrading) {
            (Replay::Buffered(_), Some(r), false) => 1 + r.num_retries,
            _ => 1,
        }
    }

    /// The request of the next try (the head moves into the last one).
    fn next(&mut self, last: bool) -> Option<Request<ReqBody>> {
        let head = if last {
            self.head.take()
        } else {
            self.head.as_ref().map(clone_head)
        }?;
        let body = match &mut self.body {
            Replay::Buffered(b) => ReqBody::Buffered(b.clone()),
            Replay::Stream(s) => match s.take() {
                Some(inner) => ReqBody::Stream {
                    inner,
                    tx_bytes: self.tx_bytes.clone(),
                    fault: self.fault.clone(),
                    exchange: self.exchange.clone(),
                },
                None => ReqBody::Buffered(None),
            },
        };
        Some(Request::from_parts(head, body))
    }
}

/// `grpc-status` of a trailers-only gRPC response (in the headers).
fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn clone_head(p: &Parts) -> Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    if let Some(x) = p.extensions.get::<Exchange>() {
        r.extensions_mut().insert(x.clone());
    }
    r.into_parts().0
}

/// Try `outgoing` on `cluster` and, while `policy`, the breaker's
/// `max_retries` and the route deadline allow, back off and try again.
/// Returns the response for downstream. With `upgrade`, a 101 starts the
/// tunnel. `authority`: where a forward proxy cluster goes; `egress`: where
/// every try's connection comes from (the engine's own without one).
pub async fn run(
    cluster: &Arc<Cluster>,
    policy: Option<&RetryPolicy>,
    mut outgoing: Outgoing,
    deadlines: Deadlines,
    upgrade: Option<upgrade::Requested>,
    authority: Option<String>,
    egress: Option<&Egress>,
) -> Response<RespBody> {
    let mut stage = Stage {
        max_tries: outgoing.max_tries(policy, upgrade.is_some()),
        cluster,
        policy,
        deadlines,
        upgrade,
        tries: 0,
        latest_reason: ResetReason::RemoteConnectionFailure,
        held: None,
        _retry_permit: None,
        hosts: TriedHosts::default(),
    };
    loop {
        stage.tries += 1;
        let Some(req) = outgoing.next(stage.last()) else {
            return local::reply(StatusCode::INTERNAL_SERVER_ERROR, "");
        };
        let started = Instant::now();
        let deadline = deadlines.for_try(started);
        let fault = &outgoing.fault;
        let picking = stage.picking();
        let tried = attempt::run(
            cluster,
            authority.as_deref(),
            picking,
            req,
            fault,
            started,
            deadline,
            egress,
        )
        .await;
        let failure = match stage.judge(tried, started) {
            ControlFlow::Continue(failure) => failure,
            ControlFlow::Break(answer) => return answer,
        };
        if let ControlFlow::Break(answer) = Box::pin(stage.back_off(failure)).await {
            return answer;
        }
    }
}

/// The state of one request's retry loop.
struct Stage<'a> {
    cluster: &'a Arc<Cluster>,
    policy: Option<&'a RetryPolicy>,
    deadlines: Deadlines,
    upgrade: Option<upgrade::Requested>,
    tries: u32,
    max_tries: u32,
    /// Why the latest connect failed (the 503 body names it).
    latest_reason: ResetReason,
    /// A retriable response, kept until the retry is certain: if it cannot
    /// go, this response is the answer (Envoy on a retry overflow).
    held: Option<(Response<Incoming>, Pooled, Instant)>,
    _retry_permit: Option<Permit>,
    /// The endpoints earlier tries went to, for `previous_hosts`.
    hosts: TriedHosts,
}

impl Stage<'_> {
    fn last(&self) -> bool {
        self.tries >= self.max_tries
    }

    fn retries(&self, f: Failure) -> bool {
        !self.last() && self.policy.is_some_and(|r| r.should_retry(f))
    }

    /// How the next try picks its endpoint.
    fn picking(&mut self) -> Picking<'_> {
        match self.policy.and_then(|p| p.avoid_previous_hosts) {
            Some(extra_picks) => Picking::Avoid {
                tried: &mut self.hosts,
                extra_picks,
            },
            None => Picking::Any,
        }
    }

    /// What a try's end means: the answer (`Break`), or a failure to retry.
    ///
    /// As Envoy: `upstream_requests` counts the answer the request ends
    /// with; a response that is retried counts as a retry's instead
    /// (`retry.upstream_rq_xx`); a retried connect failure, reset or
    /// per-try timeout counts nowhere (checked against Envoy 1.40).
    fn judge(
        &mut self,
        tried: Tried,
        started: Instant,
    ) -> ControlFlow<Response<RespBody>, Failure> {
        match tried {
            Tried::Response(resp, conn) => self.judge_response(resp, conn, started),
            Tried::Failed(e) => self.judge_failure(e),
            Tried::TimedOut => self.judge_timeout(),
        }
    }

    /// A response head: the tunnel (101 to an upgrade), held for a retry,
    /// or the answer.
    fn judge_response(
        &mut self,
        mut resp: Response<Incoming>,
        conn: Pooled,
        started: Instant,
    ) -> ControlFlow<Response<RespBody>, Failure> {
        let m = &self.cluster.metrics;
        let status = resp.status().as_u16();
        if status == 101
            && let Some(u) = self.upgrade.take()
        {
            m.response(status);
            upgrade::tunnel(u.downstream, &mut resp, &u.protocol);
            // The connection now belongs to the tunnel: never pooled.
            drop(conn);
            return ControlFlow::Break(attempt::switching_protocols(resp));
        }
        let grpc = grpc_status(resp.headers());
        let retriable_headers = !self.last()
            && self
                .policy
                .is_some_and(|p| p.retries_headers(resp.headers()));
        if self.retries(Failure::Status(status))
            || grpc.is_some_and(|g| self.retries(Failure::Grpc(g)))
            || retriable_headers
        {
            self.held = Some((resp, conn, started));
            return ControlFlow::Continue(Failure::Status(status));
        }
        m.response(status);
        let overall = self.deadlines.overall;
        ControlFlow::Break(attempt::downstream_response(
            resp,
            conn,
            self.cluster,
            started,
            overall,
        ))
    }

    /// The connection closed or reset before the response head.
    fn judge_reset(&mut self, refused: bool) -> ControlFlow<Response<RespBody>, Failure> {
        let m = &self.cluster.metrics;
        m.rq_reset.inc();
        let (failure, reason) = if refused {
            (Failure::RefusedStream, ResetReason::RefusedStream)
        } else {
            (Failure::Reset, ResetReason::ConnectionTermination)
        };
        if self.retries(failure) {
            return ControlFlow::Continue(failure);
        }
        m.response(503);
        ControlFlow::Break(local::upstream_reset(reason, self.tries > 1))
    }

    /// The route deadline (the answer) or the try's own (maybe retried).
    fn judge_timeout(&mut self) -> ControlFlow<Response<RespBody>, Failure> {
        let m = &self.cluster.metrics;
        if self.deadlines.overall_passed() {
            m.rq_timeout.inc();
        } else {
            m.rq_per_try_timeout.inc();
            if self.retries(Failure::PerTryTimeout) {
                return ControlFlow::Continue(Failure::PerTryTimeout);
            }
        }
        m.response(504);
        ControlFlow::Break(local::upstream_timeout())
    }

    /// A try that ended without a response head.
    fn judge_failure(&mut self, e: TryError) -> ControlFlow<Response<RespBody>, Failure> {
        let m = &self.cluster.metrics;
        let answer = match e {
            TryError::Connect(reason) => {
                if self.retries(Failure::Connect) {
                    self.latest_reason = reason;
                    return ControlFlow::Continue(Failure::Connect);
                }
                m.response(503);
                local::upstream_reset(reason, self.tries > 1)
            }
            TryError::Reset { refused } => return self.judge_reset(refused),
            // Not the upstream's failure: no upstream stat, no outlier
            // record, no retry (Envoy answers 400 and closes).
            TryError::Downstream => {
                log::debug!(
                    "cluster {}: request body from downstream failed",
                    self.cluster.name
                );
                let mut r = local::reply(StatusCode::BAD_REQUEST, "Bad Request");
                r.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                local::downstream_failed(r)
            }
            TryError::OwnListener => {
                log::debug!(
                    "cluster {}: destination is weir's own admin or stats",
                    self.cluster.name
                );
                local::reply(StatusCode::FORBIDDEN, local::OWN_LISTENER)
            }
            TryError::NoHealthy => {
                m.none_healthy.inc();
                m.response(503);
                local::no_healthy_upstream()
            }
            TryError::Overflow => {
                m.response(503);
                local::overloaded()
            }
            // Envoy answers these from its forward proxy filter, before the
            // router: not an upstream request.
            TryError::Dns(e) => local::dns_failure(match e {
                DnsCacheError::Resolution => local::DNS_RESOLUTION_FAILURE,
                DnsCacheError::Overflow => local::DNS_CACHE_OVERFLOW,
            }),
        };
        ControlFlow::Break(answer)
    }

    /// Before a retry: within the breaker's `max_retries` and the route
    /// deadline, wait out the back-off (`Continue`); else the answer.
    async fn back_off(&mut self, failure: Failure) -> ControlFlow<Response<RespBody>> {
        let m = &self.cluster.metrics;
        let retried = self.tries > 1;
        let Some(policy) = self.policy else {
            return ControlFlow::Break(final_failure(m, failure, self.latest_reason, retried));
        };
        let Some(permit) = self.cluster.breaker.try_acquire(Limit::Retries) else {
            m.overflow_retries.inc();
            if let (Some((resp, conn, started)), Failure::Status(status)) =
                (self.held.take(), failure)
            {
                m.response(status);
                let overall = self.deadlines.overall;
                return ControlFlow::Break(attempt::downstream_response(
                    resp,
                    conn,
                    self.cluster,
                    started,
                    overall,
                ));
            }
            return ControlFlow::Break(final_failure(m, failure, self.latest_reason, retried));
        };
        self._retry_permit = Some(permit);
        drop(self.held.take());
        let wait = policy.backoff(self.tries);
        if let Some(d) = self.deadlines.overall
            && Instant::now() + wait >= d
        {
            // Envoy waits out the back-off and its route timeout fires then.
            tokio::time::sleep_until(d.into()).await;
            m.rq_timeout.inc();
            m.response(504);
            return ControlFlow::Break(local::upstream_timeout());
        }
        if let Failure::Status(status) = failure {
            m.retried_response(status);
        }
        m.rq_retry.inc();
        log::debug!(
            "cluster {}: retry {} after {failure:?}",
            self.cluster.name,
            self.tries
        );
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        ControlFlow::Continue(())
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
        Failure::Connect => local::upstream_reset(reason, retried),
        Failure::Reset => local::upstream_reset(ResetReason::ConnectionTermination, retried),
        Failure::RefusedStream => local::upstream_reset(ResetReason::RefusedStream, retried),
        // A retried gRPC answer is held and returned as it came: a status.
        Failure::Grpc(_) => local::reply(StatusCode::BAD_GATEWAY, ""),
        Failure::PerTryTimeout => local::upstream_timeout(),
    }
}
