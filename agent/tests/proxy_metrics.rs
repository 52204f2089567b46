//! Metrics: Envoy meanings under Prometheus names; `promtool check metrics`
//! accepts the exposition; a real Prometheus server scrapes it.
//!
//! `promtool` and `prometheus` come from the Debian package `prometheus`
//! (`apt-get install -y prometheus`; `cargo xtask test` installs it). Without
//! them the two tests that need them fail and say so.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn config(a: u16, dead: u16) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {{match: {{prefix: /dead}}, route: {{cluster: dead}}}}
          - {{match: {{prefix: /a}}, route: {{cluster: a}}}}
clusters:
{}
{}"#,
        static_cluster("a", &[a], ""),
        static_cluster("dead", &[dead], "")
    )
}

async fn setup() -> (Proxy, Backend, std::net::SocketAddr) {
    let a = Backend::named("a").await;
    let dead = closed_port();
    let mut p = Proxy::start(&config(a.port(), dead)).await;
    let l = p.listener("main").await;
    (p, a, l)
}

fn require(bin: &str) -> String {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        None => panic!(
            "`{bin}` not found in PATH: install the Debian package `prometheus` \
             (apt-get update && apt-get install -y prometheus); `cargo xtask test` installs it"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_with_envoy_meanings() {
    let (p, _a, l) = setup().await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            send(&c, req("GET", &format!("http://{l}/a"), &[], ""))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        send(&c, req("POST", &format!("http://{l}/a"), &[], "12345"))
            .await
            .status,
        200
    );
    assert_eq!(
        send(&c, req("GET", &format!("http://{l}/none"), &[], ""))
            .await
            .status,
        404
    );
    assert_eq!(
        send(&c, req("GET", &format!("http://{l}/dead"), &[], ""))
            .await
            .status,
        503
    );
    let m = p.metrics().await;
    let v = |s: &str| metric_value(&m, s);
    assert_eq!(
        v(r#"weir_http_downstream_requests_total{listener="main",response_code_class="2xx"}"#),
        4.0
    );
    assert_eq!(
        v(r#"weir_http_downstream_requests_total{listener="main",response_code_class="4xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_http_downstream_requests_total{listener="main",response_code_class="5xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_requests_total{cluster="a",response_code_class="2xx"}"#),
        4.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_requests_total{cluster="dead",response_code_class="5xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_request_duration_seconds_count{cluster="a"}"#),
        4.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_request_duration_seconds_bucket{cluster="a",le="+Inf"}"#),
        4.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_connect_failures_total{cluster="dead"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_connections_total{cluster="a"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_connections_active{cluster="a"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_sent_bytes_total{cluster="a"}"#),
        5.0
    );
    assert!(v(r#"weir_cluster_upstream_received_bytes_total{cluster="a"}"#) >= 4.0);
    assert!(v(r#"weir_http_downstream_received_bytes_total{listener="main"}"#) > 100.0);
    assert!(v(r#"weir_http_downstream_sent_bytes_total{listener="main"}"#) > 100.0);
    assert!(v(r#"weir_http_downstream_connections_total{listener="main"}"#) >= 1.0);
    assert!(v(r#"weir_http_downstream_connections_active{listener="main"}"#) >= 1.0);
    assert_eq!(
        v(r#"weir_http_downstream_no_route_total{listener="main"}"#),
        1.0
    );
    assert_eq!(
        v(r#"weir_http_downstream_request_duration_seconds_count{listener="main"}"#),
        6.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_requests_by_code_total{cluster="a",response_code="200"}"#),
        4.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_requests_by_code_total{cluster="dead",response_code="503"}"#),
        1.0
    );
    // Tries on a connection: the dead cluster's connect failed, so none.
    assert_eq!(
        v(r#"weir_cluster_upstream_requests_sent_total{cluster="a"}"#),
        4.0
    );
    assert_eq!(
        v(r#"weir_cluster_upstream_requests_sent_total{cluster="dead"}"#),
        0.0
    );
    // Envoy's families lead the page, weir's and the process's follow;
    // nothing else.
    let first_weir = m.find("weir_").expect("weir families");
    for line in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(
            ["weir_", "envoy_", "process_"]
                .iter()
                .any(|p| line.starts_with(p)),
            "{line}"
        );
    }
    assert!(v("process_resident_memory_bytes") > 0.0, "{m}");
    assert!(
        !m[first_weir..].contains("\nenvoy_"),
        "envoy_ families come first"
    );
    assert!(m.contains("# TYPE weir_cluster_upstream_request_duration_seconds histogram"));
}

/// The scrape page carries Envoy's Prometheus names, as seed 000's
/// Prometheus queries them, and the stats Envoy 1.40 adds beyond the
/// classes: per-code, tries, membership, no_route, the duration
/// histograms in milliseconds; a dotted cluster name is cut at its first
/// dot as Envoy's tag extraction cuts it (checked against Envoy 1.40).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_page_speaks_envoys_prometheus_names() {
    let a = Backend::named("a").await;
    let cfg = format!(
        r#"listeners:
  - name: egress_http
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {{match: {{prefix: /a}}, route: {{cluster: "outbound|80||httpbin.org"}}}}
clusters:
{}"#,
        static_cluster("outbound|80||httpbin.org", &[a.port()], "")
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("egress_http").await;
    let c = client();
    for path in ["/a", "/a", "/nothing"] {
        send(&c, req("GET", &format!("http://{l}{path}"), &[], "")).await;
    }
    let m = p.metrics().await;
    let v = |s: &str| metric_value(&m, s);
    let cluster = r#"envoy_cluster_name="outbound|80||httpbin""#;
    for (series, want) in [
        (
            r#"envoy_http_downstream_rq_xx{envoy_response_code_class="2",envoy_http_conn_manager_prefix="egress_http"}"#.to_owned(),
            2.0,
        ),
        (
            r#"envoy_http_no_route{envoy_http_conn_manager_prefix="egress_http"}"#.to_owned(),
            1.0,
        ),
        (
            r#"envoy_http_downstream_rq_completed{envoy_http_conn_manager_prefix="egress_http"}"#.to_owned(),
            3.0,
        ),
        (format!(r#"envoy_cluster_org_upstream_rq_xx{{envoy_response_code_class="2",{cluster}}}"#), 2.0),
        (format!(r#"envoy_cluster_org_upstream_rq{{envoy_response_code="200",{cluster}}}"#), 2.0),
        (format!(r#"envoy_cluster_org_upstream_rq_total{{{cluster}}}"#), 2.0),
        (format!(r#"envoy_cluster_org_upstream_rq_completed{{{cluster}}}"#), 2.0),
        (format!(r#"envoy_cluster_org_membership_total{{{cluster}}}"#), 1.0),
        (format!(r#"envoy_cluster_org_membership_healthy{{{cluster}}}"#), 1.0),
        (format!(r#"envoy_cluster_org_upstream_rq_time_count{{{cluster}}}"#), 2.0),
        (format!(r#"envoy_cluster_org_upstream_rq_time_bucket{{{cluster},le="3600000"}}"#), 2.0),
        (
            r#"envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="egress_http"}"#.to_owned(),
            3.0,
        ),
    ] {
        assert_eq!(v(&series), want, "{series} in:\n{m}");
    }
    assert!(
        m.contains("# TYPE envoy_cluster_org_membership_total gauge\n"),
        "{m}"
    );
    assert!(
        m.contains("# TYPE envoy_cluster_org_upstream_rq_time histogram\n"),
        "{m}"
    );
    // The text form keeps the whole name, as Envoy's /stats does.
    let (_, text) = p.admin_get("/stats?usedonly").await;
    for line in [
        "cluster.outbound|80||httpbin.org.upstream_rq_200: 2",
        "cluster.outbound|80||httpbin.org.membership_total: 1",
        "http.egress_http.no_route: 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("cluster.outbound|80||httpbin.org.upstream_rq_time: P0(nan,")),
        "{text}"
    );
    let (_, json) = p.admin_get("/stats?format=json&filter=rq_time%24").await;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let computed = &json["stats"][0]["histograms"]["computed_quantiles"];
    assert_eq!(computed.as_array().map(Vec::len), Some(2), "{json}");
    promtool_check(&m, Lint::ParseOnly);
}

/// `/stats` answers with the stat names an Envoy with the same config uses
/// (checked against Envoy 1.40's admin output), in its text, JSON and
/// Prometheus forms, with its `filter` and `usedonly` parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_endpoint_speaks_envoys_names() {
    let (p, _a, l) = setup().await;
    let c = client();
    for path in ["/a", "/a", "/none", "/dead"] {
        send(&c, req("GET", &format!("http://{l}{path}"), &[], "")).await;
    }
    let (status, text) = p.admin_get("/stats").await;
    assert_eq!(status, 200);
    for line in [
        "http.main.downstream_rq_2xx: 2",
        "http.main.downstream_rq_4xx: 1",
        "http.main.downstream_rq_5xx: 1",
        "http.main.downstream_rq_total: 4",
        "http.main.downstream_rq_http1_total: 4",
        "cluster.a.upstream_rq_2xx: 2",
        "cluster.a.upstream_cx_total: 1",
        "cluster.a.upstream_cx_active: 1",
        "cluster.dead.upstream_rq_5xx: 1",
        "cluster.dead.upstream_cx_connect_fail: 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    // The client may have needed more than one connection for its four requests.
    let connections = text
        .lines()
        .find_map(|l| l.strip_prefix("http.main.downstream_cx_total: "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(connections.is_some_and(|n| n >= 1), "{text}");

    let (_, filtered) = p
        .admin_get("/stats?filter=%5Ecluster%5C.a%5C.&usedonly")
        .await;
    let names: Vec<_> = filtered.lines().collect();
    assert!(!names.is_empty());
    assert!(
        names
            .iter()
            .all(|l| l.starts_with("cluster.a.") && !l.ends_with(": 0")),
        "{filtered}"
    );

    let (_, json) = p
        .admin_get("/stats?format=json&filter=downstream_rq_2xx")
        .await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["stats"],
        serde_json::json!([{"name": "http.main.downstream_rq_2xx", "value": 2}])
    );

    let (_, prom) = p.admin_get("/stats?format=prometheus").await;
    assert!(prom.contains(
        "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"main\"} 2\n"
    ), "{prom}");
    assert!(prom.contains(
        "envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"dead\"} 1\n"
    ), "{prom}");
    // Parses; the style lints (help text, `_total`) fail Envoy's own output too.
    promtool_check(&prom, Lint::ParseOnly);

    assert_eq!(p.admin_get("/stats?format=xml").await.0, 400);
    let (status, body) = p.admin_get("/stats?filter=(").await;
    assert_eq!(status, 400);
    assert!(body.contains("filter: invalid regex"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    let (p, _a, l) = setup().await;
    get(&format!("http://{l}/a")).await;
    get(&format!("http://{l}/dead")).await;
    let page = p.metrics().await;
    // Envoy's names fail promtool's style lints (no help text, counters
    // without `_total`) exactly as Envoy's own page does; weir's pass them.
    promtool_check(&page, Lint::ParseOnly);
    let weir = &page[page.find("# HELP weir_").expect("weir families")..];
    promtool_check(weir, Lint::Full);
}

enum Lint {
    Full,
    ParseOnly,
}

/// `promtool check metrics` accepts `text`: no problem at all, or (with
/// `ParseOnly`) none but lint findings, which promtool reports with exit code 3.
fn promtool_check(text: &str, lint: Lint) {
    let promtool = require("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let accepted = match lint {
        Lint::Full => out.status.success(),
        Lint::ParseOnly => matches!(out.status.code(), Some(0 | 3)),
    };
    assert!(
        accepted,
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server started by the test; killed by PID on drop.
struct PromServer(Child);

impl Drop for PromServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_queries() {
    let prometheus = require("prometheus");
    let (p, _a, l) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weir\n    metrics_path: /stats/prometheus\n    static_configs:\n      - targets: ['{}']\n",
            p.admin
        ),
    )
    .unwrap();
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn prometheus");
    let _server = PromServer(child);
    // The bound port is in the log line `msg="Listening on" address=127.0.0.1:PORT`.
    let mut addr = String::new();
    eventually("prometheus listening", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let found = text
            .lines()
            .find(|l| l.contains("msg=\"Listening on\""))
            .and_then(|l| l.split("address=").nth(1))
            .map(|a| a.trim().to_string());
        if let Some(a) = found {
            addr = a;
        }
        let ok = !addr.is_empty();
        async move { ok }
    })
    .await;
    let c = client();
    for _ in 0..7 {
        assert_eq!(
            send(&c, req("GET", &format!("http://{l}/a"), &[], ""))
                .await
                .status,
            200
        );
    }
    let query = "weir_http_downstream_requests_total%7Blistener%3D%22main%22%2Cresponse_code_class%3D%222xx%22%7D";
    let url = format!("http://{addr}/api/v1/query?query={query}");
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    eventually(
        "prometheus query returns 7",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let last = last.clone();
            async move {
                let (status, body) = get(&url).await;
                let ok =
                    status == 200 && body.contains(r#""value":["#) && body.contains(r#","7"]"#);
                *last.lock().unwrap() = body;
                ok
            }
        },
    )
    .await;
    let last = last.lock().unwrap().clone();
    assert!(last.contains(r#""job":"weir""#), "{last}");
    // Seed 000's query, as written for Envoy, answers from the same scrape.
    let query = "envoy_http_downstream_rq_xx%7Benvoy_http_conn_manager_prefix%3D%22main%22%2Cenvoy_response_code_class%3D%222%22%7D";
    let (status, body) = get(&format!("http://{addr}/api/v1/query?query={query}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#","7"]"#), "{body}");
}
