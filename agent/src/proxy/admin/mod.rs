//! Admin listener: `/ready`, `/stats/prometheus` (Envoy's names, then
//! weir's), `/stats` (Envoy's names: text, `?format=json|prometheus`,
//! `?filter=<regex>`, `?usedonly`), `/config_dump`, `/clusters` (text, or `?format=json`),
//! `/listeners`, `/datapath` (what the eBPF data path detected and loaded),
//! `/status` (all of it in one document, for `weir status`), `/graph` (a
//! page drawing who calls whom, from `/graph.json`).
//! The stats listener (`stats.address`) serves only `/stats/prometheus` and
//! `/ready`, for scraping from the network while the admin stays on loopback.

mod graph;
pub mod own;
mod serve;
pub mod status;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::cluster::outlier::now_ms;
use super::metrics::envoy;
use super::runtime::Runtime;
use crate::config::DiscoveryType;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}: bind {1}: {2}")]
    Bind(&'static str, SocketAddr, #[source] std::io::Error),
}

/// Which endpoint set a listener serves.
#[derive(Debug, Clone, Copy)]
enum Endpoints {
    /// Everything: config, clusters, stats.
    Admin,
    /// Read-only: `/stats/prometheus` and `/ready`.
    Stats,
}

/// Bind the admin listener; returns its bound address and spawns the server.
pub async fn start(addr: SocketAddr, rt: Arc<Runtime>) -> Result<SocketAddr, AdminError> {
    bind(Endpoints::Admin, addr, rt).await
}

async fn bind(
    kind: Endpoints,
    addr: SocketAddr,
    rt: Arc<Runtime>,
) -> Result<SocketAddr, AdminError> {
    let name = match kind {
        Endpoints::Admin => "admin",
        Endpoints::Stats => "stats",
    };
    let bound = serve::bind(addr, name, move |req| {
        let rt = rt.clone();
        async move {
            match kind {
                Endpoints::Admin => handle(&rt, req).await,
                Endpoints::Stats => handle_stats(&rt, req).await,
            }
        }
    })
    .await
    .map_err(|e| AdminError::Bind(name, addr, e))?;
    own::register(bound);
    Ok(bound)
}

/// Start the admin and stats listeners the config asks for, logging and
/// announcing (for tests) their bound addresses.
pub async fn start_endpoints(
    admin: Option<SocketAddr>,
    stats: Option<SocketAddr>,
    rt: &Arc<Runtime>,
) -> Result<(), AdminError> {
    if let Some(addr) = admin {
        if !addr.ip().is_loopback() {
            log::warn!(
                "admin on {addr}: not loopback, so /config_dump and /clusters are open to \
                 the network; bind it to 127.0.0.1 and scrape stats.address instead"
            );
        }
        let bound = start(addr, rt.clone()).await?;
        log::info!("admin listening on {bound}");
        super::listener::announce(format_args!("weir: admin listening on {bound}"));
    }
    if let Some(addr) = stats {
        let bound = bind(Endpoints::Stats, addr, rt.clone()).await?;
        log::info!("stats listening on {bound}");
        super::listener::announce(format_args!("weir: stats listening on {bound}"));
    }
    Ok(())
}

const PLAIN: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn ready(rt: &Runtime) -> Response<Full<Bytes>> {
    if rt.is_ready().await {
        text(StatusCode::OK, PLAIN, "LIVE\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "PRE_INITIALIZING\n")
    }
}

/// The stats listener: nothing but the two read-only endpoints, GET only.
async fn handle_stats(rt: &Runtime, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET {
        return text(StatusCode::NOT_FOUND, PLAIN, "not found\n");
    }
    match req.uri().path() {
        "/ready" => ready(rt).await,
        "/stats/prometheus" => scrape(rt).await,
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    }
}

/// The scrape page: Envoy's families first (what Prometheus setups
/// written for Envoy query), then weir's own. The two never share a name
/// (`envoy_*`, `weir_*`); the page grows with listeners, clusters and the
/// bounded label values of docs/metrics.md, never with traffic.
async fn scrape(rt: &Runtime) -> Response<Full<Bytes>> {
    let families = rt.metrics.gather();
    let mut page =
        envoy::prometheus(&envoy::stats(&families, &envoy_inputs(rt).await)).into_bytes();
    page.extend_from_slice(&rt.metrics.encode_families(&families));
    text(StatusCode::OK, PROMETHEUS, page)
}

/// What Envoy's names need beyond the metrics: DNS cache names, listener
/// addresses, and endpoint counts now.
async fn envoy_inputs(rt: &Runtime) -> envoy::Inputs {
    let mut inputs = envoy::Inputs::default();
    if let Some(cfg) = rt.effective.load().as_deref() {
        for c in &cfg.clusters {
            if c.discovery_type == DiscoveryType::DynamicForwardProxy {
                let cache = c.dns_cache.name.as_ref().unwrap_or(&c.name);
                inputs.dns_caches.insert(c.name.clone(), cache.clone());
            }
        }
        for l in &cfg.listeners {
            inputs.listener_addresses.insert(l.name.clone(), l.address);
        }
    }
    let now = now_ms();
    for c in rt.clusters().await {
        let endpoints = c.endpoints.load();
        let healthy = endpoints
            .iter()
            .filter(|e| !e.outlier.is_ejected(now))
            .count();
        inputs
            .membership
            .push((c.name.to_string(), endpoints.len() as u64, healthy as u64));
    }
    inputs
}

fn text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

async fn handle(rt: &Runtime, req: Request<Incoming>) -> Response<Full<Bytes>> {
    const JSON: &str = "application/json";
    match req.uri().path() {
        "/ready" => ready(rt).await,
        "/stats/prometheus" => scrape(rt).await,
        "/stats" => envoy_stats(rt, req.uri().query().unwrap_or("")).await,
        "/config_dump" => {
            let cfg = rt.effective.load();
            let body = serde_json::to_vec_pretty(&cfg.as_deref()).unwrap_or_default();
            text(StatusCode::OK, JSON, body)
        }
        "/listeners" => {
            let mut s = String::new();
            for (name, addr) in rt.listeners().await {
                let _ = writeln!(s, "{name}::{addr}");
            }
            text(StatusCode::OK, PLAIN, s)
        }
        "/clusters" => {
            let json = req.uri().query().is_some_and(|q| q.contains("format=json"));
            clusters(rt, json).await
        }
        "/status" => {
            let body = serde_json::to_vec_pretty(&status::status(rt).await).unwrap_or_default();
            text(StatusCode::OK, JSON, body)
        }
        "/graph" => graph::page(),
        "/graph.json" => {
            let g = graph::build(&rt.metrics.gather(), &graph::topology(rt).await);
            let mut r = text(
                StatusCode::OK,
                JSON,
                serde_json::to_vec(&g).unwrap_or_default(),
            );
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        "/datapath" => match rt.datapath_status.get() {
            Some(json) => text(StatusCode::OK, JSON, json.clone()),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                "no data path loaded\n",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n"),
    }
}

/// Envoy's `/stats`, with its query parameters.
async fn envoy_stats(rt: &Runtime, query: &str) -> Response<Full<Bytes>> {
    let mut format = "text".to_owned();
    let mut filter = None;
    let mut used_only = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "format" => format = value,
            "filter" if !value.is_empty() => match regex::Regex::new(&value) {
                Ok(re) => filter = Some(re),
                Err(e) => {
                    let msg = format!("filter: invalid regex {value:?}: {e}\n");
                    return text(StatusCode::BAD_REQUEST, PLAIN, msg);
                }
            },
            "usedonly" => used_only = true,
            _ => {}
        }
    }
    let mut stats = envoy::stats(&rt.metrics.gather(), &envoy_inputs(rt).await);
    // Envoy's "used" is "ever written"; weir's counters say so by being non-zero.
    stats.retain(|s| {
        filter.as_ref().is_none_or(|re| re.is_match(&s.name)) && (!used_only || s.used())
    });
    match format.as_str() {
        "text" => text(StatusCode::OK, PLAIN, envoy::text(&stats)),
        "json" => text(StatusCode::OK, "application/json", envoy::json(&stats)),
        "prometheus" => text(StatusCode::OK, PROMETHEUS, envoy::prometheus(&stats)),
        other => text(
            StatusCode::BAD_REQUEST,
            PLAIN,
            format!("format: {other:?} is not one of text, json, prometheus\n"),
        ),
    }
}

async fn clusters(rt: &Runtime, json: bool) -> Response<Full<Bytes>> {
    let now = now_ms();
    let mut s = String::new();
    let mut list = Vec::new();
    for c in rt.clusters().await {
        let mut eps = Vec::new();
        for e in c.endpoints.load().iter() {
            let healthy = !e.outlier.is_ejected(now);
            let flags = if healthy {
                "healthy"
            } else {
                "/failed_outlier_check"
            };
            let _ = writeln!(s, "{}::{}::health_flags::{flags}", c.name, e.addr);
            let _ = writeln!(s, "{}::{}::rq_active::{}", c.name, e.addr, e.active());
            let _ = writeln!(s, "{}::{}::cx_idle::{}", c.name, e.addr, e.idle_count());
            let _ = writeln!(
                s,
                "{}::{}::times_ejected::{}",
                c.name,
                e.addr,
                e.outlier.times_ejected()
            );
            eps.push(serde_json::json!({
                "address": e.addr.to_string(),
                "healthy": healthy,
                "active_requests": e.active(),
                "idle_connections": e.idle_count(),
                "source_pools": e.sources.len(),
                "times_ejected": e.outlier.times_ejected(),
            }));
        }
        list.push(serde_json::json!({ "name": &*c.name, "endpoints": eps }));
    }
    if json {
        let body =
            serde_json::to_vec_pretty(&serde_json::json!({ "clusters": list })).unwrap_or_default();
        text(StatusCode::OK, "application/json", body)
    } else {
        text(StatusCode::OK, "text/plain; charset=utf-8", s)
    }
}
