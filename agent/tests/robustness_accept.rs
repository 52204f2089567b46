//! Out of file descriptors, a listener's accept loop backs off and logs at
//! a bounded rate (the first failure, then one line per 10 s with the count
//! not logged), and serves again once descriptors are free (issue 10).

mod common;

use std::time::Duration;

use common::*;
use tokio::net::TcpStream;

fn accept_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(": accept: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_errors_are_logged_at_a_bounded_rate_and_service_resumes() {
    let mut p = Proxy::start(&answering_ok("")).await;
    let main = p.listener("main").await;
    let pid = p.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64;
    let limit = libc::rlimit {
        rlim_cur: open + 4,
        rlim_max: open + 4,
    };
    // SAFETY: prlimit on a child this test started, with a valid rlimit.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    // A bounded burst: more connections than descriptors left, on the main
    // listener and the admin; those not accepted wait in the backlog and
    // every accept of them fails with EMFILE, every 50 ms.
    let mut held = Vec::new();
    for _ in 0..12 {
        held.push(TcpStream::connect(main).await.unwrap());
        held.push(TcpStream::connect(p.admin).await.unwrap());
    }
    eventually(
        "both loops run out of descriptors",
        Duration::from_secs(10),
        || async {
            let s = p.stderr();
            s.contains("listener main: accept: ") && s.contains("admin: accept: ")
        },
    )
    .await;
    // ~60 failed accepts per loop in 3 s; one line each (the next is due
    // 10 s after the first).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stderr = p.stderr();
    let lines = accept_lines(&stderr);
    assert!(
        lines.len() <= 2,
        "{} accept error lines in 3 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().all(|l| l.contains("Too many open files")),
        "{lines:?}"
    );

    // Descriptors released (the limit stays): service resumes, and says so once.
    drop(held);
    let c = client();
    eventually("the listener serves again", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                send(&c, req("GET", &format!("http://{main}/"), &[], "")),
            )
            .await;
            matches!(r, Ok(r) if r.status == 200)
        }
    })
    .await;
    let failed = p
        .metric(r#"weir_http_downstream_accept_errors_total{listener="main"}"#)
        .await;
    assert!(failed >= 2.0, "accept errors counted: {failed}");
    eventually(
        "the recovery is logged",
        Duration::from_secs(10),
        || async { p.stderr().contains("listener main: accepting again after") },
    )
    .await;
}
