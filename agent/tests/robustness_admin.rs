//! The admin and stats listeners against a hostile peer: the stats listener
//! exposes nothing but metrics and readiness; both close a request head that
//! trickles in (slowloris) and do not spin when file descriptors run out.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(stats: bool) -> String {
    let stats = if stats {
        "stats:\n  address: 127.0.0.1:0\n"
    } else {
        ""
    };
    format!(
        r#"{stats}listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {{match: {{prefix: /}}, direct_response: {{status: 200, body: "ok"}}}}
"#
    )
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> u16 {
    let r = send(
        &client(),
        req(method, &format!("http://{addr}{path}"), &[], ""),
    )
    .await;
    r.status
}

/// Metric family names (`# TYPE` lines) of an exposition.
fn families(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_listener_serves_only_metrics_and_readiness() {
    let mut p = Proxy::start(&config(true)).await;
    let stats: SocketAddr = p
        .wait_line("weir: stats listening on ")
        .await
        .parse()
        .unwrap();
    assert_ne!(stats, p.admin);
    let (status, body) = get(&format!("http://{stats}/stats/prometheus")).await;
    assert_eq!(status, 200);
    assert!(body.contains("weir_"), "{body}");
    assert_eq!(families(&body), families(&p.metrics().await));
    assert_eq!(
        get(&format!("http://{stats}/ready")).await,
        (200, "LIVE\n".into())
    );
    for path in ["/config_dump", "/clusters", "/listeners", "/stats", "/"] {
        assert_eq!(request(stats, "GET", path).await, 404, "{path}");
    }
    assert_eq!(request(stats, "POST", "/stats/prometheus").await, 404);
    // The admin keeps serving everything.
    assert_eq!(p.admin_get("/config_dump").await.0, 200);
}

/// A peer that sends a request head slowly is closed after the header-read
/// timeout (10 s), on the admin and on the stats listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_stats_close_a_slow_request_head() {
    let mut p = Proxy::start(&config(true)).await;
    let stats: SocketAddr = p
        .wait_line("weir: stats listening on ")
        .await
        .parse()
        .unwrap();
    let started = Instant::now();
    let mut conns = Vec::new();
    for addr in [p.admin, stats] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        conns.push(s);
    }
    for mut s in conns {
        // Keep trickling a header line every second, as slowloris does.
        let closed = async {
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if s.write_all(b"X-a: b\r\n").await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), closed)
            .await
            .expect("a trickled request head was never closed");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "closed too early: {waited:?}"
    );
}
