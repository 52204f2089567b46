//! The process log: `--log-format json` writes one JSON object per line, and
//! the lines of a connection carry its span (`conn`: id, listener, peer), so
//! an operator can pull one connection's story out of a busy node's log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_the_connections_span() {
    // An endpoint that refuses: the try's failure is logged (at debug)
    // while the connection is served.
    let cluster = static_cluster("up", &[closed_port()], "");
    let cfg = one_route("{cluster: up}", &format!("clusters:\n{cluster}"));
    let mut p = Proxy::start_with(&cfg, &["--log-format", "json", "--log-level", "debug"]).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 503);

    let failure = |log: &str| -> Option<Value> {
        log.lines()
            .map(|line| {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
            })
            .find(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("cluster up: "))
            })
    };
    eventually(
        "the failed try is logged",
        Duration::from_secs(10),
        || async { failure(&p.stderr()).is_some() },
    )
    .await;
    let line = failure(&p.stderr()).unwrap();
    assert_eq!(line["level"], "DEBUG", "{line:#}");
    let span = &line["span"];
    assert_eq!(span["name"], "conn", "{line:#}");
    assert_eq!(span["listener"], "main", "{line:#}");
    assert!(span["id"].as_u64().is_some_and(|id| id > 0), "{line:#}");
    assert!(
        span["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_log_level_is_refused_with_what_was_expected() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "--log-level",
            "weir=loud",
            "check-config",
            "/nonexistent.yaml",
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log level \"weir=loud\"") && err.contains("expected e.g. `info`"),
        "{err}"
    );
}
