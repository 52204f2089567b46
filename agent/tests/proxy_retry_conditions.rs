//! Istio's default route retry policy, as Envoy takes it
//! (`connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
//! with 503, 2 retries): an upstream 503 is tried 3 times in all and
//! `upstream_rq_retry` counts 2; a 500 is not retried; a trailers-only gRPC
//! UNAVAILABLE is retried; an HTTP/2 upstream's REFUSED_STREAM is retried.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use tokio::net::TcpListener;

const ISTIO_DEFAULT: &str = ", retry_policy: {retry_on: \"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\", retriable_status_codes: [503], num_retries: 2, retry_back_off: {base_interval: 1ms}}";

fn config(cluster: &str) -> String {
    one_route(
        &format!("{{cluster: up{ISTIO_DEFAULT}}}"),
        &format!("clusters:\n{cluster}"),
    )
}

/// Answers `status` (with `grpc-status: <grpc>` when given) to every request.
async fn answering(status: u16, grpc: Option<&'static str>) -> Backend {
    Backend::start(move |_req| async move {
        let mut r = common::status(status, "");
        if let Some(g) = grpc {
            r.headers_mut().insert("grpc-status", g.parse().unwrap());
        }
        r
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_default_policy_retries_503_twice_and_not_500() {
    let up = answering(503, None).await;
    let mut p = Proxy::start(&config(&static_cluster("up", &[up.port()], ""))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.requests(), 3, "tried 3 times in all");
    let (_, stats) = p.admin_get("/stats").await;
    for line in [
        "cluster.up.upstream_rq_retry: 2",
        "cluster.up.upstream_rq_503: 1",
        "cluster.up.retry.upstream_rq_5xx: 2",
        "cluster.up.upstream_rq_total: 3",
    ] {
        assert!(stats.lines().any(|l| l == line), "{line} in:\n{stats}");
    }

    let other = answering(500, None).await;
    let mut p = Proxy::start(&config(&static_cluster("up", &[other.port()], ""))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 500);
    assert_eq!(other.requests(), 1, "500 is not in retriable_status_codes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unavailable_in_headers_is_retried() {
    let unavailable = answering(200, Some("14")).await;
    let mut p = Proxy::start(&config(&static_cluster("up", &[unavailable.port()], ""))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("POST", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["grpc-status"], "14",
        "the last answer, as it came"
    );
    assert_eq!(unavailable.requests(), 3);

    let not_found = answering(200, Some("5")).await;
    let mut p = Proxy::start(&config(&static_cluster("up", &[not_found.port()], ""))).await;
    let l = p.listener("main").await;
    send(&client(), req("POST", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(not_found.requests(), 1, "NOT_FOUND is no retry condition");
}

/// An HTTP/2 upstream that refuses the first `refuse` streams with
/// REFUSED_STREAM and answers 200 to the rest; counts the streams.
async fn refusing_h2(refuse: usize) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = tcp.accept().await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        let resp = http::Response::builder().status(200).body(()).unwrap();
                        let _ = respond.send_response(resp, true);
                    }
                }
            });
        }
    });
    (port, streams, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_stream_is_retried() {
    let (port, streams, task) = refusing_h2(1).await;
    let mut p = Proxy::start(&config(&static_cluster("up", &[port], "    http2: true\n"))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        streams.load(Ordering::SeqCst),
        2,
        "refused once, then served"
    );
    assert_eq!(
        p.metric(r#"weir_cluster_upstream_request_retries_total{cluster="up"}"#)
            .await,
        1.0
    );
    task.abort();

    // Refused every time: Envoy's reply names the reason.
    let (port, _streams, task) = refusing_h2(usize::MAX).await;
    let mut p = Proxy::start(&config(&static_cluster("up", &[port], "    http2: true\n"))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote refused stream reset"
    );
    task.abort();
}

/// Answers 200 with `x-upstream-retry: <mark>` to every request.
async fn marked(mark: &'static str) -> Backend {
    Backend::start(move |_req| async move {
        let mut r = common::status(200, "marked");
        r.headers_mut()
            .insert("x-upstream-retry", mark.parse().unwrap());
        r
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_a_retriable_header_is_retried() {
    let policy = "{cluster: up, retry_policy: {retry_on: retriable-headers, retriable_headers: [{name: x-upstream-retry, exact: \"yes\"}], num_retries: 2, retry_back_off: {base_interval: 1ms}}}";
    let yes = marked("yes").await;
    let cluster = static_cluster("up", &[yes.port()], "");
    let mut p = Proxy::start(&one_route(policy, &format!("clusters:\n{cluster}"))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 200, "the last answer, as it came");
    assert_eq!(r.headers["x-upstream-retry"], "yes");
    assert_eq!(yes.requests(), 3, "tried 3 times in all");
    let (_, stats) = p.admin_get("/stats").await;
    for line in [
        "cluster.up.upstream_rq_retry: 2",
        "cluster.up.retry.upstream_rq_2xx: 2",
        "cluster.up.upstream_rq_total: 3",
    ] {
        assert!(stats.lines().any(|l| l == line), "{line} in:\n{stats}");
    }

    let no = marked("no").await;
    let cluster = static_cluster("up", &[no.port()], "");
    let mut p = Proxy::start(&one_route(policy, &format!("clusters:\n{cluster}"))).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(no.requests(), 1, "`no` matches no retriable header");
}

/// With a random balancer over a failing and a working endpoint, a retry
/// that may pick the same endpoint again fails a quarter of the requests;
/// Envoy's `previous_hosts` predicate sends the retry to the other endpoint
/// unless every one of its picks lands on the failing one again (2^-50 odds
/// with 50 picks; Istio's 5 leave 1 in 64 requests failing here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_hosts_sends_the_retry_elsewhere() {
    const REQUESTS: usize = 40;
    let failing = answering(503, None).await;
    let working = answering(200, None).await;
    let cluster = static_cluster(
        "up",
        &[failing.port(), working.port()],
        "    lb_policy: RANDOM\n",
    );
    let route = |predicate: &str| {
        format!(
            "{{cluster: up, retry_policy: {{retry_on: retriable-status-codes, retriable_status_codes: [503], num_retries: 1, retry_back_off: {{base_interval: 1ms}}{predicate}}}}}"
        )
    };
    let avoiding = route(
        ", retry_host_predicate: [envoy.retry_host_predicates.previous_hosts], host_selection_retry_max_attempts: 50",
    );
    let mut p = Proxy::start(&one_route(&avoiding, &format!("clusters:\n{cluster}"))).await;
    let l = p.listener("main").await;
    let c = client();
    for _ in 0..REQUESTS {
        let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
        assert_eq!(r.status, 200, "a retry went back to the failing endpoint");
    }

    // The same without the predicate: some retries go back (0.75^40 odds
    // that none does, so this cannot pass by chance).
    let mut p = Proxy::start(&one_route(&route(""), &format!("clusters:\n{cluster}"))).await;
    let l = p.listener("main").await;
    let mut failed = 0;
    for _ in 0..REQUESTS {
        let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
        failed += usize::from(r.status == 503);
    }
    assert!(failed > 0, "without previous_hosts some retries fail again");
}
