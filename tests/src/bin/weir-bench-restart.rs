//! `cargo xtask bench restart`: what an agent restart costs the pods, on a
//! simulated node, side by side for a rolling update (a successor started
//! beside the agent, then SIGTERM, as the DaemonSet does it) and a crash
//! (SIGKILL, then a new agent), the crash again with the client pod
//! annotated `weir.dev/bypassed-connections: reset`. During each restart: a client on one
//! keep-alive connection, a client opening a connection per request, a
//! fail-closed pod, each every 10 ms, and a 500 ms request in flight at the
//! event. Counted per client: requests sent, failed, and answered without
//! weir (the application saw the client's address, not weir's 127.0.0.6).
//!
//! usage: weir-bench-restart [--runs N] [--out FILE]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use benchkit::progress::Progress;
use weir_tests::agent::{AgentProcess, MINIMAL_CONFIG, metric_sample};
use weir_tests::pins::PinRoot;
use weir_tests::scenario::{Answer, ThreePods, answer, loop_lines, start_loop};
use weir_tests::support::sim_client;
use weir_tests::{PodProcess, SimNode};

const GAP_MS: &str = "10";
const SLOW_MS: u64 = 500;
/// What one restart should take, a node and its agents started and the
/// clients run through the event; the progress line corrects it once runs
/// have taken their real time.
const PLANNED_RUN: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, PartialEq)]
enum Restart {
    RollingUpdate,
    Crash,
    /// A crash, the client pod asking for its bypassed connections reset.
    CrashResetting,
}

impl Restart {
    fn name(self) -> &'static str {
        match self {
            Restart::RollingUpdate => "rolling update (successor, then SIGTERM)",
            Restart::Crash => "crash (SIGKILL, then a new agent)",
            Restart::CrashResetting => "crash, client pod with bypassed-connections: reset",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Tally {
    sent: usize,
    failed: usize,
    direct: usize,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.direct += other.direct;
    }
}

struct Run {
    keepalive: Tally,
    fresh: Tally,
    fail_closed: Tally,
    slow: Tally,
    /// Crash: from the new agent's start to the fail-closed pod's first
    /// request served (its listeners back). Rolling update: SIGTERM to exit.
    ms: f64,
    /// The client pod's connections the new agent counted as bypassed, and
    /// how many of them it reset (its metrics).
    bypassed: (f64, f64),
}

fn main() -> Result<()> {
    let mut runs = 3u32;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--out" => out = Some(args.next().context("--out FILE")?),
            other => {
                bail!("unknown argument {other}; usage: weir-bench-restart [--runs N] [--out FILE]")
            }
        }
    }
    let mut report = String::new();
    let mut rows = Vec::new();
    let kinds = [
        Restart::RollingUpdate,
        Restart::Crash,
        Restart::CrashResetting,
    ];
    let mut progress = Progress::uniform(kinds.len() * runs as usize, PLANNED_RUN);
    for kind in kinds {
        let mut done = Vec::new();
        for run in 1..=runs {
            progress.begin(&format!("{}, run {run}", kind.name()));
            let r = run_once(kind).with_context(|| format!("{}, run {run}", kind.name()))?;
            eprintln!(
                "{}, run {run}: keep-alive {}/{}/{}, per request {}/{}/{}, fail-closed {}/{}/{} (sent/failed/direct)",
                kind.name(),
                r.keepalive.sent,
                r.keepalive.failed,
                r.keepalive.direct,
                r.fresh.sent,
                r.fresh.failed,
                r.fresh.direct,
                r.fail_closed.sent,
                r.fail_closed.failed,
                r.fail_closed.direct,
            );
            done.push(r);
        }
        rows.push((kind, done));
    }
    report.push_str(&table(&rows, runs));
    print!("{report}");
    if let Some(out) = out {
        std::fs::write(&out, &report).with_context(|| format!("writing {out}"))?;
    }
    Ok(())
}

fn table(rows: &[(Restart, Vec<Run>)], runs: u32) -> String {
    let mut t = format!(
        "{runs} run(s) of each; requests every {GAP_MS} ms per client; sums over the runs.\n\n\
         | restart | client | sent | failed | bypassed weir |\n| --- | --- | ---: | ---: | ---: |\n"
    );
    for (kind, done) in rows {
        let sum = |f: fn(&Run) -> Tally| {
            let mut s = Tally::default();
            done.iter().for_each(|r| s.add(f(r)));
            s
        };
        for (client, tally) in [
            ("keep-alive connection", sum(|r| r.keepalive)),
            ("connection per request", sum(|r| r.fresh)),
            ("fail-closed pod", sum(|r| r.fail_closed)),
            ("500 ms request in flight", sum(|r| r.slow)),
        ] {
            t.push_str(&format!(
                "| {} | {client} | {} | {} | {} |\n",
                kind.name(),
                tally.sent,
                tally.failed,
                tally.direct
            ));
        }
    }
    t.push('\n');
    for (kind, done) in rows {
        let mut ms: Vec<f64> = done.iter().map(|r| r.ms).collect();
        ms.sort_by(f64::total_cmp);
        let what = match kind {
            Restart::RollingUpdate => "SIGTERM to the old agent's exit",
            Restart::Crash | Restart::CrashResetting => {
                "new agent's start to its listeners serving (the fail-closed pod's first request answered)"
            }
        };
        t.push_str(&format!(
            "- {}: {what}: median {:.0} ms, max {:.0} ms\n",
            kind.name(),
            ms[ms.len() / 2],
            ms[ms.len() - 1]
        ));
        if *kind != Restart::RollingUpdate {
            let (counted, reset) = done.iter().fold((0.0, 0.0), |(c, r), run| {
                (c + run.bypassed.0, r + run.bypassed.1)
            });
            t.push_str(&format!(
                "- {}: the client pod's connections the new agent counted as bypassed \
                 (`weir_intercept_bypassed_connections_total`): {counted:.0}, of which it reset {reset:.0}\n",
                kind.name()
            ));
        }
    }
    t
}

fn run_once(kind: Restart) -> Result<Run> {
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let pods = ThreePods::start(&node)?;
    let (client, locked, http) = (&pods.client, &pods.locked, pods.http);
    let pods_file = match kind {
        Restart::CrashResetting => {
            pods.pods_file_with(&[("weir.dev/bypassed-connections", "reset")])
        }
        Restart::RollingUpdate | Restart::Crash => pods.pods_file(),
    };
    let mut serving = AgentProcess::start(&node, MINIMAL_CONFIG, &pods_file, pins.path())?;
    serving.wait_ready(&node, Duration::from_secs(20))?;
    let stop = serving.dir.join("stop-loops");
    let keepalive = start_loop(client, "keepalive", http, GAP_MS, &stop)?;
    let fresh = start_loop(client, "loop", http, GAP_MS, &stop)?;
    let closed = start_loop(locked, "loop", http, GAP_MS, &stop)?;
    serving.wait_outbound_answers(&node, "client", 20.0, Duration::from_secs(10))?;
    serving.wait_outbound_answers(&node, "locked", 10.0, Duration::from_secs(10))?;
    let mut slow = Command::new(sim_client());
    slow.args([
        "http",
        &http.to_string(),
        "server",
        &format!("/delay/{SLOW_MS}"),
        "1",
    ]);
    let slow = client.spawn(slow)?;
    // The slow request reaches the application (a few ms) before the event.
    std::thread::sleep(Duration::from_millis(100));

    // The first agent's directory (the stop file's) lives as long as the run.
    let mut _first = None;
    let mut bypassed = (0.0, 0.0);
    let ms = match kind {
        Restart::RollingUpdate => {
            let successor = AgentProcess::start(&node, MINIMAL_CONFIG, &pods_file, pins.path())?;
            successor.wait_ready(&node, Duration::from_secs(20))?;
            let signalled = Instant::now();
            serving.terminate(Duration::from_secs(30))?;
            let ms = signalled.elapsed().as_secs_f64() * 1e3;
            _first = Some(std::mem::replace(&mut serving, successor));
            ms
        }
        Restart::Crash | Restart::CrashResetting => {
            serving.kill();
            let started = epoch_us()?;
            serving.restart(&node, pins.path())?;
            let mut probe = Command::new(sim_client());
            probe.args(["until-ok", &http.to_string(), "server", "/", "1", "10000"]);
            let out = locked.spawn(probe)?.wait_output(Duration::from_secs(15))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let at: u128 = text
                .split_whitespace()
                .nth(1)
                .and_then(|t| t.parse().ok())
                .with_context(|| format!("probe said {text:?}"))?;
            serving.wait_ready(&node, Duration::from_secs(20))?;
            let (_, metrics) = serving.admin_get(&node, "/stats/prometheus")?;
            let client = [("source_pod", "client")];
            let sample = |name| metric_sample(&metrics, name, &client).unwrap_or(0.0);
            bypassed = (
                sample("weir_intercept_bypassed_connections_total"),
                sample("weir_intercept_bypassed_connections_reset_total"),
            );
            (at.saturating_sub(started)) as f64 / 1e3
        }
    };
    // A second of traffic with the new agent alone, then stop.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(&stop, "")?;
    let run = Run {
        keepalive: tally(keepalive)?,
        fresh: tally(fresh)?,
        fail_closed: tally(closed)?,
        slow: tally_http(slow)?,
        ms,
        bypassed,
    };
    serving.terminate(Duration::from_secs(30))?;
    Ok(run)
}

fn epoch_us() -> Result<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros())
}

/// A loop's `ok MS BODY` / `err MS ERROR` lines.
fn tally(process: PodProcess) -> Result<Tally> {
    let mut t = Tally::default();
    for line in loop_lines(process)? {
        t.sent += 1;
        classify(&mut t, &line);
    }
    Ok(t)
}

/// `sim-client http … 1`: `1 200 BODY`, or an error.
fn tally_http(process: PodProcess) -> Result<Tally> {
    let out = process.wait_output(Duration::from_secs(20))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut t = Tally {
        sent: 1,
        ..Tally::default()
    };
    if out.status.success() {
        classify(&mut t, text.trim());
    } else {
        t.failed += 1;
    }
    Ok(t)
}

/// Served through weir, bypassed, or failed ([`answer`]).
fn classify(t: &mut Tally, line: &str) {
    match answer(line) {
        Answer::ViaWeir => {}
        Answer::Bypassed => t.direct += 1,
        Answer::Failed => t.failed += 1,
    }
}
