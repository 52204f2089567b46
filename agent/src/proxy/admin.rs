//! Admin listener: `/ready`, `/stats/prometheus` (weir's names), `/stats`
//! (Envoy's names: text, `?format=json|prometheus`, `?filter=<regex>`,
//! `?usedonly`), `/config_dump`, `/clusters` (text, or `?format=json`),
//! `/listeners`, `/datapath` (what the eBPF data path detected and loaded).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::cluster::outlier::now_ms;
use super::metrics::envoy;
use super::runtime::Runtime;
use crate::config::DiscoveryType;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin: bind {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// Bind the admin listener; returns its bound address and spawns the server.
pub async fn start(addr: SocketAddr, rt: Arc<Runtime>) -> Result<SocketAddr, AdminError> {
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| AdminError::Bind(addr, e))?;
    let bound = tcp.local_addr().map_err(|e| AdminError::Bind(addr, e))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = tcp.accept().await else {
                continue;
            };
            let rt = rt.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let rt = rt.clone();
                    async move { Ok::<_, Infallible>(handle(&rt, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

async fn handle(rt: &Runtime, req: Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    match req.uri().path() {
        "/ready" => {
            if rt.is_ready().await {
                text(StatusCode::OK, PLAIN, "LIVE\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "PRE_INITIALIZING\n")
            }
        }
        "/stats/prometheus" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            rt.metrics.encode(),
        ),
        "/stats" => envoy_stats(rt, req.uri().query().unwrap_or("")),
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
fn envoy_stats(rt: &Runtime, query: &str) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
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
    let dns_caches = rt
        .effective
        .load()
        .as_deref()
        .map(|cfg| {
            cfg.clusters
                .iter()
                .filter(|c| c.discovery_type == DiscoveryType::DynamicForwardProxy)
                .map(|c| {
                    let cache = c.dns_cache.name.as_ref().unwrap_or(&c.name);
                    (c.name.clone(), cache.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut stats = envoy::stats(&rt.metrics.gather(), &dns_caches);
    // Envoy's "used" is "ever written"; weir's counters say so by being non-zero.
    stats.retain(|s| {
        filter.as_ref().is_none_or(|re| re.is_match(&s.name)) && (!used_only || s.value > 0)
    });
    match format.as_str() {
        "text" => text(StatusCode::OK, PLAIN, envoy::text(&stats)),
        "json" => text(StatusCode::OK, "application/json", envoy::json(&stats)),
        "prometheus" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            envoy::prometheus(&stats),
        ),
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
            let _ = writeln!(
                s,
                "{}::{}::cx_idle::{}",
                c.name,
                e.addr,
                e.pool.idle_count()
            );
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
                "idle_connections": e.pool.idle_count(),
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
