//! Forward a routed request to its cluster: rewrite its head, pick the
//! cluster of the route's split, and hand the request to the retry stage
//! (`proxy::retry::stage`), which runs its tries (`attempt`).

use std::time::Instant;

use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::{Response, Uri};
use hyper::body::Incoming;

use super::hop::{X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, strip_hop_by_hop};
use super::{local, upgrade};
use crate::proxy::body::response::RespBody;
use crate::proxy::retry::stage::{self, Deadlines, Outgoing};
use crate::proxy::route::action::Forward;
use crate::proxy::upstream::egress::Egress;

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
/// response for downstream (upstream or local), on connections of `egress`
/// (the engine's own without one). With `upgrade`, a 101 from the upstream
/// starts a tunnel (`upgrade`); upgrades are tried once.
pub async fn forward(
    fwd: &Forward,
    parts: Parts,
    body: Incoming,
    upgrade: Option<upgrade::Requested>,
    egress: Option<&Egress>,
) -> Response<RespBody> {
    let cluster = fwd.split.pick().clone();
    if upgrade.is_some() && cluster.params.transport.http2 {
        // An HTTP/1.1 upgrade cannot be sent on an HTTP/2 connection.
        return local::upgrade_refused();
    }
    // Bounds reading a body to replay; the route timeout itself starts once
    // the request is complete, as Envoy's does.
    let body_deadline = fwd.timeout.map(|t| Instant::now() + t);
    // A forward proxy cluster goes where the request's Host says.
    let authority = cluster.dns_cache.as_ref().and_then(|_| {
        parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .map(str::to_owned)
    });
    let policy = fwd.retry.as_ref();
    let outgoing = match Outgoing::prepare(
        parts,
        body,
        policy.is_some(),
        body_deadline,
        &cluster.metrics,
    )
    .await
    {
        Ok(o) => o,
        Err(answer) => return answer,
    };
    let deadlines = Deadlines {
        // Until the upstream response is complete, body included.
        overall: fwd.timeout.map(|t| Instant::now() + t),
        per_try: policy.and_then(|r| r.per_try_timeout),
    };
    stage::run(
        &cluster, policy, outgoing, deadlines, upgrade, authority, egress,
    )
    .await
}
