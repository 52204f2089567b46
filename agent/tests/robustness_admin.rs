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

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// With its file descriptors used up, the admin's accept loop backs off
/// instead of spinning on EMFILE (issue 10, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_accept_backs_off_when_out_of_file_descriptors() {
    let p = Proxy::start(&config(false)).await;
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
    // More connections than descriptors left: the rest wait in the backlog,
    // and every accept of them fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(p.admin).await.unwrap());
    }
    eventually(
        "the admin runs out of descriptors",
        Duration::from_secs(10),
        || async { p.stderr().contains("Too many open files") },
    )
    .await;
    let before = cpu_ticks(pid);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = (cpu_ticks(pid) - before) as f64 / 100.0;
    let share = used / started.elapsed().as_secs_f64();
    assert!(
        share < 0.25,
        "the process used {:.0}% of a CPU while out of descriptors",
        share * 100.0
    );
    drop(held);
}
