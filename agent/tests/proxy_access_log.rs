//! The access log as an operator sees it: `weir proxy` with one listener
//! logging Envoy's text format and one logging Istio's JSON, each to its
//! own file; a 200 from the upstream, a 404 with no route (`NR`) and a 503
//! from a refused connection (`UF`) each write one line.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn config(dir: &Path, a: u16, dead: u16) -> String {
    let listener = |name: &str, format: &str| {
        format!(
            r#"  - name: {name}
    address: 127.0.0.1:0
    access_log: [{{path: {}, format: {format}}}]
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {{match: {{prefix: /dead}}, route: {{cluster: dead}}}}
          - {{match: {{prefix: /a}}, route: {{cluster: a}}}}
"#,
            dir.join(format!("{name}.log")).display()
        )
    };
    format!(
        "listeners:\n{}{}clusters:\n{}\n{}",
        listener("text", "text"),
        listener("json", "json"),
        static_cluster("a", &[a], ""),
        static_cluster("dead", &[dead], "")
    )
}

/// The file's lines once it has `n` of them (no fixed sleep: polled until
/// a deadline, the writer flushes within 100 ms).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            assert!(text.ends_with('\n'), "{text:?}");
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines of {n}:\n{text}",
            path.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-access-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn send_three(l: std::net::SocketAddr) {
    let c = client();
    let ok = send(
        &c,
        req(
            "POST",
            &format!("http://{l}/a/x?q=1"),
            &[
                ("user-agent", "weir-test \"quoted\" ☃"),
                ("x-request-id", "rid-1"),
                ("x-forwarded-for", "10.1.2.3"),
            ],
            "12345",
        ),
    )
    .await;
    assert_eq!(ok.status, 200);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_json_lines_with_envoys_flags() {
    let dir = tempdir();
    let a = Backend::named("a").await;
    let dead = closed_port();
    let mut p = Proxy::start(&config(&dir, a.port(), dead)).await;
    let text = p.listener("text").await;
    let json = p.listener("json").await;

    send_three(text).await;
    let got = lines(&dir.join("text.log"), 3).await;
    // [start] "METHOD PATH PROTOCOL" CODE FLAGS RX TX DURATION UPSTREAM_TIME "XFF" "UA" "ID" "AUTHORITY" "HOST"
    let re = regex::Regex::new(
        r#"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "([A-Z]+) (\S+) HTTP/1\.1" (\d{3}) (\S+) (\d+) (\d+) \d+ (\S+) "([^"]*)" "(.*)" "([^"]+)" "([^"]+)" "([^"]+)"$"#,
    )
    .unwrap();
    let fields: Vec<regex::Captures> = got
        .iter()
        .map(|l| {
            re.captures(l)
                .unwrap_or_else(|| panic!("not Envoy's format: {l}"))
        })
        .collect();
    let at = |i: usize, j: usize| fields[i].get(j).unwrap().as_str();
    let a_host = format!("127.0.0.1:{}", a.port());
    // 200: the body bytes both ways, the upstream's time and address.
    assert_eq!(
        [at(0, 1), at(0, 2), at(0, 3), at(0, 4), at(0, 5), at(0, 6)],
        ["POST", "/a/x?q=1", "200", "-", "5", "1"]
    );
    assert!(at(0, 7).parse::<u64>().is_ok(), "{}", got[0]);
    assert_eq!(
        [at(0, 8), at(0, 9), at(0, 10), at(0, 12)],
        [
            "10.1.2.3",
            "weir-test \"quoted\" ☃",
            "rid-1",
            a_host.as_str()
        ]
    );
    assert_eq!(at(0, 11), text.to_string());
    // 404, no route: NR, no upstream; a request id made for it.
    assert_eq!(
        [at(1, 1), at(1, 3), at(1, 4), at(1, 7), at(1, 8), at(1, 12)],
        ["GET", "404", "NR", "-", "-", "-"]
    );
    assert_ne!(at(1, 10), "-");
    // 503, connection refused: UF, and the endpoint it was refused by.
    let dead_host = format!("127.0.0.1:{dead}");
    assert_eq!(
        [at(2, 3), at(2, 4), at(2, 12)],
        ["503", "UF", dead_host.as_str()]
    );

    send_three(json).await;
    let got = lines(&dir.join("json.log"), 3).await;
    let v: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(v[0]["method"], "POST");
    assert_eq!(v[0]["path"], "/a/x?q=1");
    assert_eq!(v[0]["protocol"], "HTTP/1.1");
    assert_eq!(v[0]["response_code"], 200);
    assert_eq!(v[0]["response_flags"], "-");
    assert_eq!(v[0]["bytes_received"], 5);
    assert_eq!(v[0]["bytes_sent"], 1);
    assert!(v[0]["duration"].is_u64());
    assert!(v[0]["upstream_service_time"].is_string());
    assert_eq!(v[0]["user_agent"], "weir-test \"quoted\" ☃");
    assert_eq!(v[0]["upstream_host"], a_host.as_str());
    assert_eq!(v[0]["upstream_cluster"], "a");
    assert_eq!(v[1]["response_code"], 404);
    assert_eq!(v[1]["response_flags"], "NR");
    assert_eq!(v[1]["upstream_host"], serde_json::Value::Null);
    assert_eq!(v[1]["x_forwarded_for"], serde_json::Value::Null);
    assert_eq!(v[2]["response_code"], 503);
    assert_eq!(v[2]["response_flags"], "UF");
    assert_eq!(v[2]["upstream_cluster"], "dead");
    // The text listener wrote nothing more.
    assert_eq!(lines(&dir.join("text.log"), 3).await.len(), 3);
    assert_eq!(
        p.metric("weir_access_log_dropped_total{listener=\"json\"}")
            .await,
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
