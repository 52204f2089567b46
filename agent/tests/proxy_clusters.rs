//! Cluster behaviour: retries (and when not to), per-try timeout, outlier
//! ejection and recovery, circuit breakers, keep-alive pooling, STRICT_DNS.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body::Frame;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

fn config(route: &str, clusters: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route: {route}
clusters:
{clusters}"#
    )
}

/// Fails the first `fail` requests with 503, then answers 200 with the body it got.
async fn flaky(fail: usize) -> Backend {
    let seen = Arc::new(AtomicUsize::new(0));
    Backend::start(move |req| {
        let seen = seen.clone();
        async move {
            if seen.fetch_add(1, Ordering::SeqCst) < fail {
                status(503, "not yet")
            } else {
                status(200, &format!("ok:{}", String::from_utf8_lossy(req.body())))
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_5xx_with_buffered_body() {
    let up = flaky(2).await;
    let route = "{cluster: up, retry_policy: {retry_on: [5xx], num_retries: 3, retry_back_off: {base_interval: 5ms, max_interval: 20ms}}}";
    let mut p = Proxy::start(&config(route, &static_cluster("up", &[up.port()], ""))).await;
    let l = p.listener("main").await;
    let r = send(
        &client(),
        req("POST", &format!("http://{l}/"), &[], "payload"),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok:payload"));
    assert_eq!(up.requests(), 3);
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_request_retries_total{cluster="up"}"#)
            .await,
        2.0
    );
    // As Envoy: the answer the request ended with in upstream_rq_xx, the
    // retried responses in retry.upstream_rq_xx.
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_requests_total{cluster="up",response_code_class="5xx"}"#)
            .await,
        0.0
    );
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_requests_total{cluster="up",response_code_class="2xx"}"#)
            .await,
        1.0
    );
    assert_eq!(
        p.metric(
            r#"weir_cluster_retry_upstream_requests_total{cluster="up",response_code_class="5xx"}"#
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_returns_last_response() {
    let up = flaky(10).await;
    let route = "{cluster: up, retry_policy: {retry_on: [gateway-error], num_retries: 2, retry_back_off: {base_interval: 1ms, max_interval: 2ms}}}";
    let mut p = Proxy::start(&config(route, &static_cluster("up", &[up.port()], ""))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!((r.status, r.body.as_str()), (503, "not yet"));
    assert_eq!(up.requests(), 3);
}

/// A streamed (chunked) request body is never retried: the bytes already went upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_is_not_retried() {
    let up = flaky(1).await;
    let route = "{cluster: up, retry_policy: {retry_on: [5xx], num_retries: 3}}";
    let mut p = Proxy::start(&config(route, &static_cluster("up", &[up.port()], ""))).await;
    let l = p.listener("main").await;
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Chunks>();
    let body = Chunks(
        [&b"ab"[..], b"cd"]
            .into_iter()
            .map(Bytes::from_static)
            .collect(),
    );
    let r = c
        .request(
            http::Request::post(format!("http://{l}/"))
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(up.requests(), 1);
}

/// A body of unknown length, so it goes out chunked.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retried_on_another_endpoint() {
    let dead = closed_port();
    let up = Backend::named("alive").await;
    let route = "{cluster: up, retry_policy: {retry_on: [connect-failure], num_retries: 2, retry_back_off: {base_interval: 1ms, max_interval: 2ms}}}";
    let mut p = Proxy::start(&config(
        route,
        &static_cluster("up", &[dead, up.port()], ""),
    ))
    .await;
    let l = p.listener("main").await;
    let c = client();
    for _ in 0..4 {
        let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "alive"));
    }
    assert!(
        p.metric(r#"weir_cluster_upstream_connect_failures_total{cluster="up"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_then_retry_succeeds() {
    let seen = Arc::new(AtomicUsize::new(0));
    let up = Backend::start(move |_| {
        let seen = seen.clone();
        async move {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                // Past the route timeout: only the per-try timeout can save it.
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            status(200, "fast")
        }
    })
    .await;
    let route = "{cluster: up, timeout: 3s, retry_policy: {retry_on: [5xx], num_retries: 1, per_try_timeout: 200ms, retry_back_off: {base_interval: 1ms, max_interval: 2ms}}}";
    let mut p = Proxy::start(&config(route, &static_cluster("up", &[up.port()], ""))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "fast"));
    assert!(r.elapsed < Duration::from_millis(2500), "{:?}", r.elapsed);
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_request_per_try_timeouts_total{cluster="up"}"#)
            .await,
        1.0
    );
}

/// Consecutive 5xx eject one endpoint; traffic goes to the healthy one until the back-off ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_and_return() {
    let bad = Backend::start(|_| async { status(500, "bad") }).await;
    let good = Backend::named("good").await;
    // Long enough for the checks below to finish inside it on a loaded machine.
    let outlier = "    outlier_detection: {consecutive_5xx: 3, base_ejection_time: 3s, max_ejection_percent: 50}\n";
    let mut p = Proxy::start(&config(
        "{cluster: up}",
        &static_cluster("up", &[bad.port(), good.port()], outlier),
    ))
    .await;
    let l = p.listener("main").await;
    let c = client();
    for _ in 0..6 {
        send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
    }
    assert_eq!(bad.requests(), 3);
    assert_eq!(
        p.metric(r#"weir_cluster_outlier_ejections_total{cluster="up"}"#)
            .await,
        1.0
    );
    for _ in 0..10 {
        assert_eq!(
            send(&c, req("GET", &format!("http://{l}/"), &[], ""))
                .await
                .body,
            "good"
        );
    }
    let (_, json) = p.admin_get("/clusters?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let eps = v["clusters"][0]["endpoints"].as_array().unwrap();
    assert_eq!(
        eps.iter().filter(|e| e["healthy"] == false).count(),
        1,
        "{json}"
    );
    // After the ejection time the endpoint takes traffic again.
    let before = bad.requests();
    eventually(
        "ejected endpoint back in rotation",
        Duration::from_secs(15),
        || {
            let c = c.clone();
            let bad = &bad;
            async move {
                send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
                bad.requests() > before
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_max_requests_overflows_with_503() {
    let gate = Gate::closed();
    let slow = gate.backend("slow").await;
    let cb = "    circuit_breakers: {max_requests: 1}\n";
    let mut p = Proxy::start(&config(
        "{cluster: up}",
        &static_cluster("up", &[slow.port()], cb),
    ))
    .await;
    let l = p.listener("main").await;
    let c = client();
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            send(&c, req("GET", &format!("http://{l}/"), &[], ""))
                .await
                .status
        }
    });
    eventually(
        "first request in flight",
        Duration::from_secs(5),
        || async { slow.requests() == 1 },
    )
    .await;
    let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-envoy-overloaded"], "true");
    gate.open();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        p.metric(
            r#"weir_cluster_circuit_breaker_overflows_total{breaker="requests",cluster="up"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_limited() {
    let up = Backend::named("up").await;
    let extra = "    upstream_http: {max_requests_per_connection: 10}\n";
    let mut p = Proxy::start(&config(
        "{cluster: up}",
        &static_cluster("up", &[up.port()], extra),
    ))
    .await;
    let l = p.listener("main").await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(
            send(&c, req("GET", &format!("http://{l}/"), &[], ""))
                .await
                .status,
            200
        );
    }
    assert_eq!(up.requests(), 50);
    assert_eq!(up.connections(), 5, "10 requests per pooled connection");
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_connections_total{cluster="up"}"#)
            .await,
        5.0
    );
}

/// STRICT_DNS: every address of the name is an endpoint (here `localhost`, IPv4 only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_cluster_resolves_and_counts() {
    let up = Backend::named("dns").await;
    let cluster = format!(
        "  - name: up\n    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n    dns_refresh_rate: 200ms\n    endpoints: [{{address: localhost, port: {}}}]\n",
        up.port()
    );
    let mut p = Proxy::start(&config("{cluster: up}", &cluster)).await;
    let l = p.listener("main").await;
    assert_eq!(get(&format!("http://{l}/")).await, (200, "dns".into()));
    assert!(
        p.metric(r#"weir_dns_query_attempts_total{cluster="up"}"#)
            .await
            >= 1.0
    );
    assert!(
        p.metric(r#"weir_dns_query_successes_total{cluster="up"}"#)
            .await
            >= 1.0
    );
    assert_eq!(
        p.metric(r#"weir_dns_hosts_added_total{cluster="up"}"#)
            .await,
        1.0
    );
    // re-resolved on the interval, hosts not added twice
    eventually("second resolution", Duration::from_secs(5), || async {
        p.metric(r#"weir_dns_query_attempts_total{cluster="up"}"#)
            .await
            >= 2.0
    })
    .await;
    assert_eq!(
        p.metric(r#"weir_dns_hosts_added_total{cluster="up"}"#)
            .await,
        1.0
    );
    let (_, clusters) = p.admin_get("/clusters").await;
    assert!(
        clusters.contains(&format!(
            "up::127.0.0.1:{}::health_flags::healthy",
            up.port()
        )),
        "{clusters}"
    );
}

/// At `max_connections`, requests wait as pending for a connection to come
/// back; beyond `max_pending_requests` they overflow with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_queues_pending_requests() {
    let (gate_a, gate_b) = (Gate::closed(), Gate::closed());
    let (a, b) = (gate_a.backend("slow").await, gate_b.backend("slow").await);
    let cfg = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {{match: {{prefix: /a}}, route: {{cluster: a}}}}
          - {{match: {{prefix: /b}}, route: {{cluster: b}}}}
clusters:
{}
{}"#,
        static_cluster(
            "a",
            &[a.port()],
            "    circuit_breakers: {max_connections: 1, max_pending_requests: 4}\n"
        ),
        static_cluster(
            "b",
            &[b.port()],
            "    circuit_breakers: {max_connections: 1, max_pending_requests: 1}\n"
        ),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("main").await;
    let c = client();
    let spawn = |path: &'static str| {
        let c = c.clone();
        tokio::spawn(async move {
            send(&c, req("GET", &format!("http://{l}{path}"), &[], ""))
                .await
                .status
        })
    };
    // three at once over one allowed connection: all served, in turn
    let tasks: Vec<_> = (0..3).map(|_| spawn("/a")).collect();
    let overflows = |breaker: &'static str, cluster: &'static str| {
        let p = &p;
        async move {
            p.metric(&format!(
                r#"weir_cluster_circuit_breaker_overflows_total{{breaker="{breaker}",cluster="{cluster}"}}"#
            ))
            .await
        }
    };
    eventually(
        "two requests waiting for the one connection",
        Duration::from_secs(5),
        || async { overflows("connections", "a").await >= 2.0 },
    )
    .await;
    gate_a.open();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses, [200, 200, 200]);
    assert_eq!(
        a.connections(),
        1,
        "one upstream connection, reused in turn"
    );

    // one in flight holds the connection; of three more, one may wait, two overflow
    let first = spawn("/b");
    eventually(
        "first request in flight",
        Duration::from_secs(5),
        || async { b.requests() == 1 },
    )
    .await;
    let tasks: Vec<_> = (0..3).map(|_| spawn("/b")).collect();
    eventually(
        "two requests refused as pending overflow",
        Duration::from_secs(5),
        || async { overflows("pending", "b").await >= 2.0 },
    )
    .await;
    gate_b.open();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 503, 503]);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        p.metric(r#"weir_cluster_circuit_breaker_overflows_total{breaker="pending",cluster="b"}"#)
            .await,
        2.0
    );
}

/// Pooled connections idle longer than `upstream_http.idle_timeout` are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed() {
    let up = Backend::named("up").await;
    // Long enough that the gauge is read before the connection can expire.
    let extra = "    upstream_http: {idle_timeout: 2s}\n";
    let mut p = Proxy::start(&config(
        "{cluster: up}",
        &static_cluster("up", &[up.port()], extra),
    ))
    .await;
    let l = p.listener("main").await;
    assert_eq!(get(&format!("http://{l}/")).await.0, 200);
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_connections_active{cluster="up"}"#)
            .await,
        1.0
    );
    eventually(
        "idle upstream connection closed",
        Duration::from_secs(5),
        || async {
            p.metric(r#"weir_cluster_upstream_connections_active{cluster="up"}"#)
                .await
                == 0.0
        },
    )
    .await;
    assert_eq!(get(&format!("http://{l}/")).await.0, 200);
    assert_eq!(up.connections(), 2);
}

/// Seed 000's egress proxy: a DYNAMIC_FORWARD_PROXY cluster sends each
/// request to its own Host, resolved once through the DNS cache (names
/// resolve from /etc/hosts here: no DNS traffic leaves the machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_forward_proxy_goes_to_the_request_host() {
    let svc = Backend::named("service-b").await;
    let port = svc.port();
    let cluster = "  - name: proxy_cluster\n    type: DYNAMIC_FORWARD_PROXY\n    dns_lookup_family: V4_ONLY\n    dns_cache: {name: proxy_dns_cache, max_hosts: 2}\n";
    let mut p = Proxy::start(&config("{cluster: proxy_cluster}", cluster)).await;
    let l = p.listener("main").await;
    let c = client();
    let get = |host: String| {
        req(
            "GET",
            &format!("http://{l}/"),
            &[("host", host.as_str())],
            "",
        )
    };
    for _ in 0..2 {
        let r = send(&c, get(format!("localhost:{port}"))).await;
        assert_eq!((r.status, r.body.as_str()), (200, "service-b"));
        assert_eq!(
            r.headers["x-echo-host"],
            format!("localhost:{port}").as_str()
        );
    }
    let dns = |name: &'static str| {
        let p = &p;
        async move {
            p.metric(&format!(r#"{name}{{cluster="proxy_cluster"}}"#))
                .await
        }
    };
    assert_eq!(
        dns("weir_dns_query_attempts_total").await,
        1.0,
        "cached after the first request"
    );
    assert_eq!(dns("weir_dns_query_successes_total").await, 1.0);
    // Under the names seed 000 queries Envoy for.
    let (_, envoy) = p
        .admin_get("/stats?format=prometheus&filter=dns_cache")
        .await;
    for line in [
        "envoy_dns_cache_proxy_dns_cache_dns_query_attempt{} 1",
        "envoy_dns_cache_proxy_dns_cache_dns_query_success{} 1",
        "envoy_dns_cache_proxy_dns_cache_host_added{} 1",
    ] {
        assert!(envoy.lines().any(|l| l == line), "{line} in:\n{envoy}");
    }
    // An IP literal needs no resolution.
    let r = send(&c, get(format!("127.0.0.1:{port}"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "service-b"));
    assert_eq!(dns("weir_dns_query_attempts_total").await, 1.0);
    assert_eq!(dns("weir_dns_hosts_added_total").await, 2.0);
    // Envoy's forward proxy filter replies: a third host overflows
    // max_hosts; an address outside dns_lookup_family does not resolve.
    let r = send(&c, get(format!("127.0.0.2:{port}"))).await;
    assert_eq!((r.status, r.body.as_str()), (503, "DNS cache overflow"));
    let r = send(&c, get(format!("[::1]:{port}"))).await;
    assert_eq!((r.status, r.body.as_str()), (503, "DNS resolution failure"));
    assert_eq!(svc.requests(), 3);
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_requests_total{cluster="proxy_cluster",response_code_class="2xx"}"#)
            .await,
        3.0
    );
}

/// A retry the `max_retries` breaker refuses: the upstream's own response is
/// the answer, body included (Envoy's retry overflow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_overflow_passes_the_upstream_response() {
    let busy = Backend::start(|_| async { status(503, "busy") }).await;
    let route = "{cluster: up, retry_policy: {retry_on: [5xx], num_retries: 2}}";
    let breakers = "    circuit_breakers: {max_retries: 0}\n";
    let mut p = Proxy::start(&config(
        route,
        &static_cluster("up", &[busy.port()], breakers),
    ))
    .await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!((r.status, r.body.as_str()), (503, "busy"));
    assert_eq!(busy.requests(), 1);
    assert_eq!(
        p.metric(r#"weir_cluster_circuit_breaker_overflows_total{breaker="retries",cluster="up"}"#)
            .await,
        1.0
    );
}
