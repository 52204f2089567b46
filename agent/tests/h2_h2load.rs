//! HTTP/2: h2load drives h2 over TLS (ALPN) and over cleartext (prior
//! knowledge) through weir with no errors; HTTP/1.1 keeps working on the
//! same cleartext listener; an `http2: true` cluster multiplexes requests
//! on one upstream connection.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn h2load_ok(out: &std::process::Output, n: u32) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load failed: {text}");
    let want =
        format!("requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed, 0 errored");
    assert!(text.contains(&want), "h2load: {text}");
    assert!(
        text.contains(&format!("status codes: {n} 2xx")),
        "h2load: {text}"
    );
}

async fn h2load(url: &str, n: u32) -> std::process::Output {
    tokio::process::Command::new("h2load")
        .args(["-n", &n.to_string(), "-c", "4", "-m", "8", "-t", "1"])
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_tls_and_cleartext() {
    tls::require_tool("h2load");
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed(dir.path(), "server", &["localhost"]);
    let backend = Backend::named("svc").await;
    let cfg = format!(
        r#"listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{{cert_chain_file: {}, private_key_file: {}}}]
      alpn: [h2, http/1.1]
    virtual_hosts: &vh
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: svc}}
  - name: plain
    address: 127.0.0.1:0
    virtual_hosts: *vh
clusters:
{}"#,
        cert.cert_file.display(),
        cert.key_file.display(),
        static_cluster("svc", &[backend.port()], "")
    );
    let mut p = Proxy::start(&cfg).await;
    let tls_addr = p.listener("tls").await;
    let plain = p.listener("plain").await;
    h2load_ok(
        &h2load(&format!("https://127.0.0.1:{}/", tls_addr.port()), 400).await,
        400,
    );
    h2load_ok(&h2load(&format!("http://{plain}/"), 400).await, 400);
    // HTTP/1.1 still served on the auto-detecting cleartext listener.
    let (status, body) = get(&format!("http://{plain}/")).await;
    assert_eq!((status, body.as_str()), (200, "svc"));
    for (l, n) in [("tls", 400.0), ("plain", 400.0)] {
        let series = format!(
            r#"weir_http_downstream_requests_by_protocol_total{{listener="{l}",protocol="HTTP/2"}}"#
        );
        assert_eq!(p.metric(&series).await, n, "{l}");
    }
}

/// `http2: true`: weir speaks h2 to the upstream and multiplexes concurrent
/// requests on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_h2_multiplexes() {
    tls::require_tool("h2load");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = tcp.accept().await else {
                continue;
            };
            c2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let v = format!("{:?}", req.version());
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("x-upstream-version", v)
                                .body(Full::new(Bytes::from_static(b"h2-backend")))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let cfg = format!(
        r#"listeners:
  - name: l
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: h2}}
clusters:
{}"#,
        static_cluster("h2", &[addr.port()], "    http2: true\n")
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("l").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "h2-backend"));
    assert_eq!(r.headers["x-upstream-version"], "HTTP/2.0");
    h2load_ok(&h2load(&format!("http://{l}/"), 400).await, 400);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one multiplexed upstream connection"
    );
    server.abort();
}
