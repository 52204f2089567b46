//! Hot reload: SIGHUP and file change, atomic swap, invalid configs refused,
//! listeners added/removed by name, unchanged clusters keep their pools,
//! in-flight requests finish, and reloads under load drop nothing.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Two clusters `a` and `b`; listener `main` routes `/` to `target`.
fn cfg(target: &str, a: u16, b: u16, extra_listener: &str) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: {target}}}
{extra_listener}clusters:
{}
{}"#,
        static_cluster("a", &[a], ""),
        static_cluster("b", &[b], "")
    )
}

async fn reloads(p: &Proxy, outcome: &str) -> f64 {
    p.metric(&format!(
        r#"weir_config_reloads_total{{outcome="{outcome}"}}"#
    ))
    .await
}

async fn wait_reloads(p: &Proxy, outcome: &str, at_least: f64) {
    eventually(
        &format!("{at_least} reloads with outcome {outcome}"),
        Duration::from_secs(10),
        || async { reloads(p, outcome).await >= at_least },
    )
    .await;
}

// Where a test changes the config more than once, it waits for a reload's
// effect, not for a count of reloads: the file poll may notice a change
// before the SIGHUP sent for it arrives, and then the same file is
// (harmlessly) loaded twice, so a count can run ahead of the changes.

/// Until the listener at `l` answers with `body`.
async fn wait_routes_to(l: SocketAddr, body: &str) {
    eventually(
        &format!("routing to {body}"),
        Duration::from_secs(10),
        || async { get(&format!("http://{l}/")).await.1 == body },
    )
    .await;
}

/// Until the proxy's log holds every one of `parts`.
async fn wait_logged(p: &Proxy, parts: &[&str]) {
    eventually(
        &format!("a log line with {parts:?}"),
        Duration::from_secs(10),
        || async { parts.iter().all(|part| p.stderr().contains(part)) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_switches_routes_and_keeps_unchanged_pools() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", a.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    let c = client();
    assert_eq!(
        send(&c, req("GET", &format!("http://{l}/"), &[], ""))
            .await
            .body,
        "a"
    );
    assert_eq!(
        send(&c, req("GET", &format!("http://{l}/"), &[], ""))
            .await
            .body,
        "a"
    );
    p.write_config(&cfg("b", a.port(), b.port(), ""));
    p.sighup();
    wait_routes_to(l, "b").await;
    assert_eq!(
        send(&c, req("GET", &format!("http://{l}/"), &[], ""))
            .await
            .body,
        "b"
    );
    p.write_config(&cfg("a", a.port(), b.port(), ""));
    p.sighup();
    wait_routes_to(l, "a").await;
    // Counted just after the new routes are installed.
    wait_reloads(&p, "success", 2.0).await;
    assert_eq!(
        send(&c, req("GET", &format!("http://{l}/"), &[], ""))
            .await
            .body,
        "a"
    );
    // cluster `a` was unchanged by both reloads: its pooled connection survived
    assert_eq!(a.connections(), 1);
    let (_, dump) = p.admin_get("/config_dump").await;
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        v["listeners"][0]["virtual_hosts"][0]["routes"][0]["route"]["cluster"],
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reloads_without_signal() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", a.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    p.write_config(&cfg("b", a.port(), b.port(), ""));
    eventually(
        "routing follows the changed file",
        Duration::from_secs(10),
        || async { get(&format!("http://{l}/")).await.1 == "b" },
    )
    .await;
    assert_eq!(reloads(&p, "success").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_refused_and_old_keeps_serving() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", a.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    // a field error the config module reports with file, field and line
    p.write_config(
        &cfg("b", a.port(), b.port(), "").replace("connect_timeout: 1s", "connect_timeout: abc"),
    );
    p.sighup();
    wait_logged(&p, &["reload refused", "weir.yaml", "connect_timeout"]).await;
    wait_reloads(&p, "failure", 1.0).await;
    assert_eq!(get(&format!("http://{l}/")).await.1, "a");
    // a reference the engine refuses: unknown cluster
    p.write_config(&cfg("nope", a.port(), b.port(), ""));
    p.sighup();
    wait_logged(&p, &["unknown cluster \"nope\"", "routes[0].route.cluster"]).await;
    wait_reloads(&p, "failure", 2.0).await;
    assert_eq!(get(&format!("http://{l}/")).await.1, "a");
    assert_eq!(reloads(&p, "success").await, 0.0);

    // `/status` (what `weir status` shows): the generation serving, and the
    // last refusal with its error; a good reload clears it.
    let (_, body) = p.admin_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["config"]["generation"], 1, "{status:#}");
    let error = status["config"]["last_refused"]["error"].as_str().unwrap();
    assert!(
        error.contains("unknown cluster \"nope\""),
        "the last refusal: {error}"
    );
    assert_eq!(
        status["pods"],
        serde_json::Value::Null,
        "no pods under `weir proxy`"
    );
    p.write_config(&cfg("b", a.port(), b.port(), ""));
    p.sighup();
    wait_reloads(&p, "success", 1.0).await;
    let (_, body) = p.admin_get("/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["config"]["generation"], 2, "{status:#}");
    assert!(status["config"]["last_refused"].is_null(), "{status:#}");
    let clusters = status["clusters"].to_string();
    assert!(clusters.contains("\"healthy\":1"), "{clusters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_added_and_removed_by_name() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", a.port(), b.port(), "")).await;
    let main = p.listener("main").await;
    let second = r#"  - name: second
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes: [{match: {prefix: /}, route: {cluster: b}}]
"#;
    p.write_config(&cfg("a", a.port(), b.port(), second));
    p.sighup();
    let s = p.listener("second").await;
    assert_eq!(get(&format!("http://{s}/")).await.1, "b");
    assert_eq!(get(&format!("http://{main}/")).await.1, "a");
    let (_, listeners) = p.admin_get("/listeners").await;
    assert!(listeners.contains(&format!("second::{s}")), "{listeners}");
    // drop `second` again: its port stops accepting
    p.write_config(&cfg("a", a.port(), b.port(), ""));
    p.sighup();
    eventually(
        "second listener closed",
        Duration::from_secs(10),
        || async { tokio::net::TcpStream::connect(s).await.is_err() },
    )
    .await;
    assert_eq!(get(&format!("http://{main}/")).await.1, "a");

    // a changed address rebinds `main` under the same name and drains the old socket
    let port = closed_port();
    p.write_config(&cfg("a", a.port(), b.port(), "").replacen(
        "address: 127.0.0.1:0",
        &format!("address: 127.0.0.1:{port}"),
        1,
    ));
    p.sighup();
    eventually(
        "main listening on its new port",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).await.1, "a");
    eventually(
        "old main socket closed",
        Duration::from_secs(10),
        || async { tokio::net::TcpStream::connect(main).await.is_err() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_old_config() {
    let slow = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        status(200, "old")
    })
    .await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", slow.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    let inflight = tokio::spawn(async move { get(&format!("http://{l}/")).await });
    eventually(
        "request reached the slow backend",
        Duration::from_secs(5),
        || async { slow.requests() == 1 },
    )
    .await;
    // cluster `a` changes too (new connect timeout): the in-flight request keeps the old one
    p.write_config(&cfg("b", slow.port(), b.port(), "").replacen(
        "connect_timeout: 1s",
        "connect_timeout: 2s",
        1,
    ));
    p.sighup();
    wait_routes_to(l, "b").await;
    assert_eq!(inflight.await.unwrap(), (200, "old".to_string()));
}

/// About 20 s of bounded load while the config is reloaded 20 times, half of
/// them invalid: no request fails, and routing ends on the last valid config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_nothing() {
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", a.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    const MAX_PER_WORKER: usize = 20_000;
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok) = (stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            for _ in 0..MAX_PER_WORKER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    c.get(format!("http://{l}/").parse().unwrap()),
                )
                .await;
                match r {
                    Ok(Ok(resp)) if resp.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(resp)) => failures.push(format!("status {}", resp.status())),
                    Ok(Err(e)) => failures.push(format!("error {e}")),
                    Err(_) => failures.push("timeout".to_string()),
                }
                // keep the load bounded: at most ~1000 requests/s per worker
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            failures
        }));
    }
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(1000));
    let mut last_valid = "a";
    for i in 0..20 {
        pace.tick().await;
        let target = if i % 4 == 0 { "b" } else { "a" };
        let (success, failure) = (reloads(&p, "success").await, reloads(&p, "failure").await);
        if i % 2 == 0 {
            let text = cfg(target, a.port(), b.port(), "");
            // alternate cluster changes too, so clusters get rebuilt under load
            let text = if i % 4 == 0 {
                text.replacen("connect_timeout: 1s", "connect_timeout: 2s", 1)
            } else {
                text
            };
            p.write_config(&text);
            p.sighup();
            wait_reloads(&p, "success", success + 1.0).await;
            last_valid = target;
        } else {
            let broken = match i % 3 {
                0 => "listeners: [this is: not: yaml".to_string(),
                1 => cfg("missing", a.port(), b.port(), ""),
                _ => cfg(target, a.port(), b.port(), "")
                    .replace("connect_timeout: 1s", "connect_timeout: 5"),
            };
            p.write_config(&broken);
            p.sighup();
            wait_reloads(&p, "failure", failure + 1.0).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let served = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed requests (of {served}): {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(served > 100, "too little load: {served}");
    assert!(reloads(&p, "failure").await >= 10.0);
    assert!(reloads(&p, "success").await >= 10.0);
    for _ in 0..10 {
        assert_eq!(get(&format!("http://{l}/")).await.1, last_valid);
    }
    eprintln!(
        "reload under load: {served} requests in {:?}",
        started.elapsed()
    );
}

/// SIGTERM: stop accepting, report not ready, let in-flight requests finish, exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let slow = Backend::start(|_| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        status(200, "done")
    })
    .await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", slow.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    let inflight = tokio::spawn(async move { get(&format!("http://{l}/")).await });
    eventually(
        "request reached the slow backend",
        Duration::from_secs(5),
        || async { slow.requests() == 1 },
    )
    .await;
    p.sigterm();
    assert_eq!(inflight.await.unwrap(), (200, "done".to_string()));
    assert!(
        p.exited_within(Duration::from_secs(6)).await,
        "weir did not exit after SIGTERM"
    );
}

/// A connection accepted just before SIGTERM that has not sent its request
/// yet (one an agent takes from its queue as it hands over) is served: its
/// request gets an answer, with `connection: close`, not a closed socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_the_first_request_of_a_fresh_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Backend::named("a").await;
    let b = Backend::named("b").await;
    let mut p = Proxy::start(&cfg("a", a.port(), b.port(), "")).await;
    let l = p.listener("main").await;
    let mut conn = tokio::net::TcpStream::connect(l).await.unwrap();
    eventually(
        "the connection accepted",
        Duration::from_secs(5),
        || async {
            p.metric(r#"weir_http_downstream_connections_active{listener="main"}"#)
                .await
                >= 1.0
        },
    )
    .await;
    p.sigterm();
    eventually(
        "the drain under way with the connection open",
        Duration::from_secs(5),
        || async { p.stderr().contains("draining 1 connection(s)") },
    )
    .await;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .expect("the connection closed after its answer")
        .unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text:?}");
    assert!(text.contains("connection: close"), "{text:?}");
    assert!(
        p.exited_within(Duration::from_secs(6)).await,
        "weir did not exit after SIGTERM"
    );
}

/// An unchanged cluster keeps its outlier state across a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_cluster_keeps_health_across_reload() {
    let bad = Backend::start(|_| async { status(500, "bad") }).await;
    let b = Backend::named("b").await;
    let outlier = "    connect_timeout: 1s\n    outlier_detection: {consecutive_5xx: 2, base_ejection_time: 60s, max_ejection_percent: 100}\n";
    let with_outlier = |target: &str| {
        cfg(target, bad.port(), b.port(), "").replacen("    connect_timeout: 1s\n", outlier, 1)
    };
    let mut p = Proxy::start(&with_outlier("a")).await;
    let l = p.listener("main").await;
    for _ in 0..2 {
        assert_eq!(get(&format!("http://{l}/")).await.0, 500);
    }
    let ejected = format!(
        "a::127.0.0.1:{}::health_flags::/failed_outlier_check",
        bad.port()
    );
    let (_, clusters) = p.admin_get("/clusters").await;
    assert!(clusters.contains(&ejected), "{clusters}");
    // route-only change: cluster `a` is kept, still ejected
    p.write_config(&with_outlier("a").replace("domains: [\"*\"]", "domains: [\"*\", \"x.local\"]"));
    p.sighup();
    wait_reloads(&p, "success", 1.0).await;
    let (_, clusters) = p.admin_get("/clusters").await;
    assert!(clusters.contains(&ejected), "{clusters}");
    // Its only endpoint ejected, the cluster is in panic mode (as Envoy's):
    // the request still goes to it, and is counted as a panic pick.
    assert_eq!(get(&format!("http://{l}/")).await.0, 500);
    assert_eq!(
        p.metric(r#"weir_cluster_lb_healthy_panic_total{cluster="a"}"#)
            .await,
        1.0
    );
    assert_eq!(
        p.metric(r#"weir_cluster_outlier_ejections_total{cluster="a"}"#)
            .await,
        1.0
    );
}
