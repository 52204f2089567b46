//! Memory comes back (issue 18): after a flood of connections that each
//! made the proxy buffer a partial request head ends, the proxy's resident
//! memory returns to within twice what it was before, within 60 s.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Connections in the flood, each holding an unfinished 16 KiB request head.
const FLOOD: usize = 3000;
const HEAD_BYTES: usize = 16 * 1024;

fn resident_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Lets this test hold the flood's client sockets (the proxy, started
/// after, inherits the limit).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 2 * FLOOD as u64 + 1024,
        "the hard limit on open files ({}) is too low for this test",
        limit.rlim_max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_returns_after_a_flood() {
    raise_open_files();
    let mut p = Proxy::start(&answering_ok("    timeouts: {request_headers: 120s}\n")).await;
    let main = p.listener("main").await;
    let url = format!("http://{main}/");
    for _ in 0..50 {
        assert_eq!(get(&url).await.0, 200);
    }
    let before = resident_kib(p.pid());

    let head = format!(
        "GET / HTTP/1.1\r\nhost: flood\r\nx-pad: {}\r\n",
        "a".repeat(HEAD_BYTES)
    );
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        let mut s = TcpStream::connect(main).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        flood.push(s);
    }
    let mut peak = 0;
    eventually(
        "the proxy holds the flood's request heads",
        Duration::from_secs(30),
        || {
            peak = resident_kib(p.pid());
            async move { peak > before + (FLOOD * HEAD_BYTES / 1024 / 2) as u64 }
        },
    )
    .await;
    drop(flood);

    let ended = Instant::now();
    let mut after = peak;
    while ended.elapsed() < Duration::from_secs(60) {
        after = resident_kib(p.pid());
        if after <= 2 * before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        after <= 2 * before,
        "resident memory {before} KiB before the flood, {peak} KiB during it, still {after} KiB 60 s after it ended"
    );
    // And the proxy still serves.
    assert_eq!(get(&url).await.0, 200);
    eprintln!(
        "resident: {before} KiB before, {peak} KiB at the peak, {after} KiB {:?} after the flood",
        ended.elapsed()
    );
}
