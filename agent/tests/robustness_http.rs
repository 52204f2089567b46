//! Issue 10's probes against `weir proxy`, with raw sockets: what the client
//! gets, what reaches the backend and what the metrics say. Each was seen to
//! fail on the code before its fix (the commit that added it says so).

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::net::SocketAddr;

use common::*;
use raw::{RawConn, exchange};

/// An egress allowlist: only `localhost:<app>` goes through the forward
/// proxy cluster; everything else is served by `app` or locally.
fn config(app: &[u16], egress_port: u16) -> String {
    format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: allowed
        domains: ["localhost:{egress_port}"]
        routes:
          - {{match: {{prefix: /}}, route: {{cluster: egress}}}}
      - name: rest
        domains: ["*"]
        routes:
          - {{match: {{prefix: /direct}}, direct_response: {{status: 200, body: "direct"}}}}
          - {{match: {{prefix: /only-get, methods: [GET]}}, route: {{cluster: app}}}}
          - {{match: {{prefix: /only-get}}, direct_response: {{status: 403, body: "denied"}}}}
          - {{match: {{prefix: /}}, route: {{cluster: app, retry_policy: {{retry_on: [5xx, reset, connect-failure], num_retries: 2}}}}}}
clusters:
  - name: egress
    type: DYNAMIC_FORWARD_PROXY
    dns_lookup_family: V4_ONLY
    dns_cache: {{name: egress_dns, max_hosts: 4}}
{}    outlier_detection: {{consecutive_5xx: 1, consecutive_gateway_failure: 1, base_ejection_time: 30s, max_ejection_percent: 100}}
"#,
        static_cluster("app", app, "")
    )
}

struct Setup {
    p: Proxy,
    l: SocketAddr,
    app: Backend,
    app2: Backend,
}

async fn setup() -> Setup {
    let app = Backend::named("app").await;
    let app2 = Backend::named("app").await;
    let mut p = Proxy::start(&config(&[app.port(), app2.port()], app.port())).await;
    let l = p.listener("main").await;
    Setup { p, l, app, app2 }
}

impl Setup {
    fn app_requests(&self) -> usize {
        self.app.requests() + self.app2.requests()
    }

    async fn downstream(&self, class: &str) -> f64 {
        self.p
            .metric(&format!(
                r#"weir_http_downstream_requests_total{{listener="main",response_code_class="{class}"}}"#
            ))
            .await
    }

    async fn cluster(&self, family: &str, labels: &str) -> f64 {
        self.p
            .metric(&format!(r#"{family}{{cluster="app"{labels}}}"#))
            .await
    }
}

/// Issue 10, item 1: the absolute-form target's authority is the one
/// authority (routing, forward proxy destination, forwarded Host); a Host
/// naming the admin port goes nowhere near it. Ambiguous, missing or
/// malformed Host: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_authority_per_request() {
    let s = setup().await;
    let egress = s.app.port();
    let ssrf = format!(
        "GET http://localhost:{egress}/config_dump HTTP/1.1\r\nHost: {}\r\n\r\n",
        s.p.admin
    );
    let r = exchange(s.l, ssrf.as_bytes()).await.expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "app", "the allowed host answered, not the admin");
    assert_eq!(r.headers["x-echo-host"], format!("localhost:{egress}"));
    assert_eq!(r.headers["x-seen-path"], "/config_dump");
    let before = s.app_requests();
    for (what, head) in [
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_owned(),
        ),
        ("no Host", "GET / HTTP/1.1\r\n\r\n".to_owned()),
        ("Host a/b", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_owned()),
        (
            "absolute form and two Hosts",
            format!("GET http://localhost:{egress}/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ),
    ] {
        let r = exchange(s.l, head.as_bytes()).await;
        let r = r.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(r.closes(), "{what}: 400 says connection: close");
    }
    assert_eq!(
        s.app_requests(),
        before,
        "nothing malformed reached a backend"
    );
    assert_eq!(s.downstream("4xx").await, 4.0);
}

/// Issue 10, item 1 over HTTP/2: `:authority` wins over a conflicting
/// `host`, so the forward proxy goes where `:authority` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_wins_over_host() {
    let s = setup().await;
    let egress = s.app.port();
    // The client connects to the listener; :authority names the allowed host.
    let uri = format!("http://localhost:{egress}/x");
    let (mut sender, conn) = {
        let tcp = tokio::net::TcpStream::connect(s.l).await.unwrap();
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap()
    };
    tokio::spawn(conn);
    let rq = req("GET", &uri, &[("host", &s.p.admin.to_string())], "");
    let r = sender.send_request(rq).await.expect("h2 response");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-backend"], "app");
    assert_eq!(
        r.headers()["x-echo-host"],
        format!("localhost:{egress}").as_str()
    );
}

/// Issue 10, item 3: invalid chunked bodies and clients that abort
/// mid-body are the client's fault: 400 or a close, never an upstream 5xx,
/// an ejection or a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_body_faults_stay_downstream() {
    let s = setup().await;
    let ext = format!("3;{}\r\nabc\r\n0\r\n\r\n", "a".repeat(16 * 1024));
    let bodies: Vec<(&str, String)> = vec![
        ("bad size", "zz\r\nabc\r\n0\r\n\r\n".into()),
        ("negative size", "-1\r\nabc\r\n0\r\n\r\n".into()),
        (
            "overflowing size",
            "ffffffffffffffffff\r\nabc\r\n0\r\n\r\n".into(),
        ),
        ("bare LF", "3\nabc\r\n0\r\n\r\n".into()),
        ("16 KB chunk extension", ext),
    ];
    for (what, body) in &bodies {
        for _ in 0..3 {
            let mut c = RawConn::open(s.l).await;
            c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            c.send(body.as_bytes()).await;
            match c.reply().await {
                None => {}
                Some(r) => assert!(
                    r.status == 400 || (*what == "16 KB chunk extension" && r.status == 200),
                    "{what}: {r:?}"
                ),
            }
        }
    }
    for _ in 0..6 {
        let mut c = RawConn::open(s.l).await;
        c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
            .await;
        c.finish().await;
        if let Some(r) = c.reply().await {
            assert_eq!(r.status, 400, "aborted body: {r:?}");
        }
    }
    assert_eq!(
        s.cluster("weir_cluster_outlier_ejections_total", "").await,
        0.0
    );
    assert_eq!(
        s.cluster(
            "weir_cluster_upstream_requests_total",
            r#",response_code_class="5xx""#
        )
        .await,
        0.0
    );
    assert_eq!(
        s.cluster("weir_cluster_upstream_request_retries_total", "")
            .await,
        0.0
    );
    assert_eq!(s.downstream("5xx").await, 0.0);
    // Both endpoints still take traffic.
    let c = client();
    for _ in 0..4 {
        let r = send(&c, req("GET", &format!("http://{}/ok", s.l), &[], "")).await;
        assert_eq!(r.status, 200);
    }
}

/// Issue 10, item 4: a local reply to a request with a body either keeps
/// the connection usable or says `connection: close`, never a silent close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_to_requests_with_bodies_keep_or_close_openly() {
    let s = setup().await;
    let big = "x".repeat(256 * 1024);
    for (what, head, body) in [
        (
            "direct_response",
            "POST /direct HTTP/1.1\r\nHost: a\r\n",
            "hello".to_owned(),
        ),
        (
            "direct_response, big body",
            "POST /direct HTTP/1.1\r\nHost: a\r\n",
            big.clone(),
        ),
        (
            "403 by method",
            "POST /only-get HTTP/1.1\r\nHost: a\r\n",
            big.clone(),
        ),
    ] {
        for _ in 0..20 {
            let mut c = RawConn::open(s.l).await;
            let msg = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
            c.send(msg.as_bytes()).await;
            let r = c
                .reply()
                .await
                .unwrap_or_else(|| panic!("{what}: no answer"));
            if r.closes() {
                assert!(c.closed().await);
                continue;
            }
            c.send(b"GET /direct HTTP/1.1\r\nHost: a\r\n\r\n").await;
            let second = c.reply().await;
            let second = second.unwrap_or_else(|| {
                panic!(
                    "{what}: closed after {} without connection: close",
                    r.status
                )
            });
            assert_eq!(second.status, 200, "{what}");
        }
    }
}

/// Issue 10, item 5: a transfer coding other than chunked gets 501 (Envoy
/// and nginx); headers named in `Connection` are not forwarded; a
/// lower-case method cannot slip past a `methods` match (400, as Envoy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_hygiene() {
    let s = setup().await;
    let before = s.app_requests();
    // `identity` alone hyper's parser refuses before weir sees it: 400.
    for (te, status) in [
        ("identity, chunked", 501),
        ("gzip, chunked", 501),
        ("identity", 400),
    ] {
        let head = format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let r = exchange(s.l, head.as_bytes()).await.expect("an answer");
        assert_eq!(r.status, status, "transfer-encoding {te}: {r:?}");
        assert!(r.closes());
    }
    assert_eq!(
        s.app_requests(),
        before,
        "no unknown transfer coding went upstream"
    );
    let r = exchange(
        s.l,
        b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nX-Kept: 2\r\nTE: identity, chunked\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-echo-x-secret"), "{r:?}");
    assert!(!r.headers.contains_key("x-echo-te"), "{r:?}");
    assert_eq!(r.headers["x-echo-x-kept"], "2");
    let before = s.app_requests();
    for method in ["get", "Get", "delete"] {
        let head = format!("{method} /only-get HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = exchange(s.l, head.as_bytes()).await;
        assert_eq!(r.map(|r| r.status), Some(400), "{method}");
    }
    assert_eq!(
        s.app_requests(),
        before,
        "no lower-case method reached a backend"
    );
}

/// Issue 10, item 1, the rest of it: even a forward proxy cluster that goes
/// wherever the client says (a `*` virtual host, as Envoy's would) is never
/// pointed back at weir's own admin or stats listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_forward_proxy_never_reaches_the_admin() {
    let app = Backend::named("app").await;
    let mut p = Proxy::start(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - {name: any, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: egress}}]}
clusters:
  - name: egress
    type: DYNAMIC_FORWARD_PROXY
    dns_lookup_family: V4_ONLY
"#,
    )
    .await;
    let l = p.listener("main").await;
    let port = p.admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("127.0.0.9:{port}"),
    ] {
        let head = format!("GET /config_dump HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let r = exchange(l, head.as_bytes()).await.expect("an answer");
        assert_eq!(r.status, 403, "{host}: {r:?}");
        assert!(!r.body.contains("listeners"), "{host}: the admin answered");
    }
    // Everything else still goes where the client says.
    let head = format!("GET /x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", app.port());
    let r = exchange(l, head.as_bytes()).await.expect("an answer");
    assert_eq!((r.status, r.body.as_str()), (200, "app"));
}
