//! `cargo xtask bench intercept`: what interception costs a request. The
//! measuring runs in `weir-bench-intercept` (tests crate), which builds a
//! simulated node and runs wrk inside its pods; this side builds it, runs it
//! as root, reads its `sample ...` records and reports: medians, the latency
//! each way of interception adds over the direct path, and the target.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use benchkit::intercept::Scenario;
use benchkit::load::Mode;
use benchkit::sample::{Sample, Subject, Summary, find, summarize};
use clap::Args;

use super::report::{NOISY_CORES, ms, ratio};
use super::{docs, parse_seconds, tools};
use crate::run::run;

/// The target: eBPF interception adds at most this share of the
/// latency iptables interception adds.
pub const TARGET_RATIO: f64 = 0.8;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct InterceptArgs {
    /// Length of each wrk run, e.g. `4s` (or seconds).
    #[arg(long, default_value = "4s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Interleaved rounds; each runs every scenario once per load kind.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Concurrent wrk connections (one wrk thread).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub connections: u32,
    /// Requests per second of the set-rate (latency) loads, over `--connections`
    /// (Istio's latency benchmarks: 1000 over 16).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Loads to run, comma separated: keep-alive and conn-per-request (wrk,
    /// saturating), rate-keep-alive and rate-conn-per-request (`--rate`).
    #[arg(long, value_delimiter = ',', default_value = "keep-alive,conn-per-request,rate-keep-alive,rate-conn-per-request", value_parser = parse_load)]
    pub loads: Vec<Mode>,
    /// Scenarios to run, comma separated; also `weir-ebpf-pod-egress` and
    /// `weir-ebpf-node-egress` (the backend outside the mesh, weir's upstream
    /// connections from the client pod's namespace or from the node's).
    #[arg(long, value_delimiter = ',', default_value = "direct,weir-ebpf,weir-ebpf-sk-msg,weir-iptables", value_parser = Scenario::parse)]
    pub scenarios: Vec<Scenario>,
    /// weir's `max_requests_per_connection` towards the backend (0:
    /// unlimited); 1 opens an upstream connection per request, which
    /// measures what opening one costs.
    #[arg(long, default_value_t = 0)]
    pub upstream_requests_per_connection: u32,
    /// Write docs/benchmarks.md even for a shortened run (a full run always does).
    #[arg(long, conflicts_with = "no_docs")]
    pub write_docs: bool,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
}

impl InterceptArgs {
    /// The full benchmark, whose table belongs in the docs.
    fn is_full_run(&self) -> bool {
        self.duration >= Duration::from_secs(4)
            && self.rounds >= 3
            && self.connections == 16
            && self.rate == 1000
            && Mode::INTERCEPT.iter().all(|m| self.loads.contains(m))
            && Scenario::ALL.iter().all(|s| self.scenarios.contains(s))
            && self.upstream_requests_per_connection == 0
    }
}

fn parse_load(text: &str) -> Result<Mode, String> {
    Mode::parse_among(text, &Mode::INTERCEPT)
}

pub fn run_intercept(root: &Path, args: &InterceptArgs) -> Result<()> {
    let (wrk, iptables) = super::simulated_node_prerequisites(root, "intercept")?;
    tools::build_weir(root)?;
    println!("xtask: building the benchmark (cargo build --release -p weir-tests)");
    run(crate::cargo(root).args([
        "build",
        "--release",
        "-p",
        "weir-tests",
        "--bin",
        "weir-bench-intercept",
        "--bin",
        "sim-server",
        "--bin",
        "latency-probe",
    ]))?;
    let dir = root.join("target/bench/intercept");
    std::fs::create_dir_all(&dir)?;
    let records = dir.join("samples.txt");

    let load_before = docs::load_average();
    let scenarios: Vec<String> = args.scenarios.iter().map(|s| s.name().to_owned()).collect();
    run(
        std::process::Command::new(root.join("target/release/weir-bench-intercept"))
            .arg("--wrk")
            .arg(&wrk)
            .arg(format!("--duration={}", args.duration.as_secs()))
            .arg(format!("--rounds={}", args.rounds))
            .arg(format!("--connections={}", args.connections))
            .arg(format!("--rate={}", args.rate))
            .arg(format!(
                "--loads={}",
                args.loads
                    .iter()
                    .map(|m| m.label())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .arg("--probe")
            .arg(root.join("target/release/latency-probe"))
            .arg(format!("--scenarios={}", scenarios.join(",")))
            .arg(format!(
                "--upstream-requests-per-connection={}",
                args.upstream_requests_per_connection
            ))
            .arg("--out")
            .arg(&records),
    )?;
    let load_after = docs::load_average();
    println!("xtask: load average before {load_before}, after {load_after} (1, 5, 15 min)");

    let samples = read_records(&records)?;
    let mut kinds = args.scenarios.clone();
    kinds.sort();
    kinds.dedup();
    let rows = summarize(&samples, &kinds);
    let tables = tables(&rows);
    let targets = targets(&rows);
    println!("\n{tables}");
    for line in &targets {
        println!("{line}");
    }

    if !super::writes_docs(args.no_docs, args.is_full_run(), args.write_docs) {
        return Ok(());
    }
    let body = docs::intercept_section(
        root,
        [&load_before, &load_after],
        args,
        &[&wrk, &iptables],
        &tables,
        &targets,
        &raw_runs(&samples),
    );
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "intercept", &body)?;
    println!("\nxtask: wrote the table into {}", file.display());
    Ok(())
}

fn read_records(path: &PathBuf) -> Result<Vec<Sample<Scenario>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let samples = parse_records(&text)?;
    if samples.is_empty() {
        bail!("{} holds no samples", path.display());
    }
    Ok(samples)
}

fn parse_records(text: &str) -> Result<Vec<Sample<Scenario>>> {
    text.lines().filter_map(Sample::from_record).collect()
}

/// Latency a scenario adds over the direct path under the same load: (p50, p99) in µs.
fn added(rows: &[Summary<Scenario>], s: &Summary<Scenario>) -> Option<(f64, f64)> {
    let direct = find(rows, Scenario::Direct, s.mode)?;
    Some((s.p50_us - direct.p50_us, s.p99_us - direct.p99_us))
}

fn signed_ms(us: f64) -> String {
    format!(
        "{}{:.3} ms",
        if us < 0.0 { "−" } else { "+" },
        us.abs() / 1000.0
    )
}

/// One table per load: rate, latency, added latency, weir's CPU.
pub fn tables(rows: &[Summary<Scenario>]) -> String {
    let mut t = String::new();
    for mode in Mode::INTERCEPT {
        let (title, rate) = match mode {
            Mode::KeepAlive => ("Keep-alive (16 connections, many requests each)", "req/s"),
            Mode::ConnectionPerRequest => (
                "Connection per request (`Connection: close`: the rate is new connections)",
                "conn/s",
            ),
            Mode::RateKeepAlive => (
                "Latency at a set rate, keep-alive (the rate over 16 connections, open loop)",
                "req/s",
            ),
            Mode::RateConnectionPerRequest => (
                "Latency at a set rate, a new connection per request (timed from `connect()`)",
                "conn/s",
            ),
            // The interception benchmark drives plaintext HTTP/1.1 only.
            Mode::TlsKeepAlive | Mode::H2 | Mode::H2c => continue,
        };
        let rows_here: Vec<&Summary<Scenario>> = rows.iter().filter(|r| r.mode == mode).collect();
        if rows_here.is_empty() {
            continue;
        }
        let _ = writeln!(t, "{title}:\n");
        let _ = writeln!(
            t,
            "| scenario | {rate} | p50 | p99 | added p50 | added p99 | weir CPU µs/req | others (cores) | runs with errors |"
        );
        t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
        for r in rows_here {
            let (add50, add99) = match (r.kind, added(rows, r)) {
                (Scenario::Direct, _) | (_, None) => ("-".to_owned(), "-".to_owned()),
                (_, Some((a, b))) => (signed_ms(a), signed_ms(b)),
            };
            let cpu = if r.kind.through_weir() {
                format!("{:.1}", r.cpu_us_per_request)
            } else {
                "-".to_owned()
            };
            let flag = r.errors_cell();
            let _ = writeln!(
                t,
                "| {} | {:.0} | {} | {} | {add50} | {add99} | {cpu} | {:.1} | {flag} |",
                r.kind.name(),
                r.requests_per_sec,
                ms(r.p50_us),
                ms(r.p99_us),
                r.other_cores,
            );
        }
        t.push('\n');
    }
    t
}

/// eBPF's added latency over iptables' (p50, p99), per load.
pub fn targets(rows: &[Summary<Scenario>]) -> Vec<String> {
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut lines = Vec::new();
    for mode in Mode::INTERCEPT {
        let (Some(e), Some(i)) = (
            find(rows, Scenario::Ebpf, mode),
            find(rows, Scenario::Iptables, mode),
        ) else {
            continue;
        };
        let (Some((e50, e99)), Some((i50, i99))) = (added(rows, e), added(rows, i)) else {
            continue;
        };
        let others = e.other_cores.max(i.other_cores);
        for (pct, ebpf, ipt) in [("p50", e50, i50), ("p99", e99, i99)] {
            let mut line = format!(
                "{} {pct}: eBPF adds at most {TARGET_RATIO}x what iptables adds: eBPF {} vs iptables {}",
                mode.label(),
                signed_ms(ebpf),
                signed_ms(ipt),
            );
            if ipt <= 0.0 {
                let _ = write!(
                    line,
                    ": no ratio (iptables added nothing over direct: weir reuses its upstream connections, direct cannot)"
                );
            } else if mode.is_fixed_rate() {
                let r = ebpf / ipt;
                let _ = write!(
                    line,
                    " = {}: {}",
                    ratio(ebpf.max(0.0), ipt),
                    verdict(r <= TARGET_RATIO)
                );
            } else {
                // At saturation latency is queueing: throughput, recorded, not judged.
                let _ = write!(
                    line,
                    " = {} (saturating load: for the record; the target is judged at a set rate)",
                    ratio(ebpf.max(0.0), ipt)
                );
            }
            if pct == "p99" && others >= NOISY_CORES {
                let _ = write!(
                    line,
                    " (other work used up to {others:.1} cores meanwhile: p99 is mostly preemption)"
                );
            }
            lines.push(line);
        }
    }
    // Side by side without the direct baseline, which conn-per-request
    // cannot give (weir reuses its upstream connections; direct cannot).
    for mode in Mode::INTERCEPT {
        if let (Some(e), Some(i)) = (
            find(rows, Scenario::Ebpf, mode),
            find(rows, Scenario::Iptables, mode),
        ) {
            lines.push(format!(
                "{} eBPF vs iptables: p50 {} vs {} ({}), p99 {} vs {} ({}), rate {}, weir CPU per request {:.1} vs {:.1} µs ({})",
                mode.label(),
                ms(e.p50_us),
                ms(i.p50_us),
                signed_ms(e.p50_us - i.p50_us),
                ms(e.p99_us),
                ms(i.p99_us),
                signed_ms(e.p99_us - i.p99_us),
                ratio(e.requests_per_sec, i.requests_per_sec),
                e.cpu_us_per_request,
                i.cpu_us_per_request,
                ratio(e.cpu_us_per_request, i.cpu_us_per_request)
            ));
        }
    }
    for mode in Mode::INTERCEPT {
        if let (Some(on), Some(off)) = (
            find(rows, Scenario::EbpfSkMsg, mode),
            find(rows, Scenario::Ebpf, mode),
        ) {
            lines.push(format!(
                "{} sk_msg on vs off: p50 {} vs {} ({}), p99 {} vs {} ({}), rate {}, weir CPU per request {:.1} vs {:.1} µs ({})",
                mode.label(),
                ms(on.p50_us),
                ms(off.p50_us),
                signed_ms(on.p50_us - off.p50_us),
                ms(on.p99_us),
                ms(off.p99_us),
                signed_ms(on.p99_us - off.p99_us),
                ratio(on.requests_per_sec, off.requests_per_sec),
                on.cpu_us_per_request,
                off.cpu_us_per_request,
                ratio(on.cpu_us_per_request, off.cpu_us_per_request)
            ));
        }
    }
    for mode in Mode::INTERCEPT {
        if let (Some(pod), Some(node)) = (
            find(rows, Scenario::EbpfPodEgress, mode),
            find(rows, Scenario::EbpfNodeEgress, mode),
        ) {
            lines.push(format!(
                "{} upstream from the pod vs from the node: p50 {} vs {} ({}), p99 {} vs {} ({}), rate {}, weir CPU per request {:.1} vs {:.1} µs ({:+.1} µs)",
                mode.label(),
                ms(pod.p50_us),
                ms(node.p50_us),
                signed_ms(pod.p50_us - node.p50_us),
                ms(pod.p99_us),
                ms(node.p99_us),
                signed_ms(pod.p99_us - node.p99_us),
                ratio(pod.requests_per_sec, node.requests_per_sec),
                pod.cpu_us_per_request,
                node.cpu_us_per_request,
                pod.cpu_us_per_request - node.cpu_us_per_request
            ));
        }
    }
    let flagged: usize = rows.iter().map(|r| r.flagged_runs).sum();
    if flagged > 0 {
        lines.push(format!(
            "WARNING: {flagged} run(s) had socket errors or non-2xx/3xx responses (see the table)"
        ));
    }
    lines
}

/// Every run, for the record under the table.
pub fn raw_runs(samples: &[Sample<Scenario>]) -> String {
    let mut t = String::new();
    t.push_str("| round | load | scenario | requests | req/s | p50 | p99 | weir CPU ms | weir CPU µs/req | others (cores) | errors |\n");
    t.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in samples {
        let (cpu, per) = if s.kind.through_weir() {
            (
                format!("{:.0}", s.cpu.as_secs_f64() * 1e3),
                format!("{:.1}", s.cpu_us_per_request()),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {cpu} | {per} | {:.1} | {} |",
            s.round + 1,
            s.mode.label(),
            s.kind.name(),
            s.wrk.requests,
            s.wrk.requests_per_sec,
            ms(s.wrk.p50_us),
            ms(s.wrk.p99_us),
            s.other_cores,
            s.wrk.errors(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use benchkit::load::WrkReport;

    use super::*;

    fn sample(kind: Scenario, mode: Mode, round: u32, p50: f64, p99: f64) -> Sample<Scenario> {
        Sample {
            kind,
            mode,
            round,
            wrk: WrkReport {
                requests: 40_000,
                seconds: 4.0,
                requests_per_sec: 10_000.0,
                p50_us: p50,
                p99_us: p99,
                socket_errors: 0,
                non_2xx_3xx: u64::from(kind == Scenario::Iptables && round == 1),
            },
            cpu: Duration::from_millis(1000),
            other_cores: 0.1,
        }
    }

    #[test]
    fn records_among_progress_lines() {
        let a = sample(Scenario::Ebpf, Mode::KeepAlive, 0, 500.0, 2000.0);
        let text = format!(
            "bench: warm-up\n{}\nround 1/3 ...\n{}\n",
            a.to_record(),
            sample(
                Scenario::Direct,
                Mode::ConnectionPerRequest,
                2,
                300.0,
                900.0
            )
            .to_record()
        );
        let samples = parse_records(&text).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0], a);
        assert!(parse_records("sample kind=sidecar mode=keep-alive\n").is_err());
    }

    #[test]
    fn added_latency_and_target() {
        let mut samples = Vec::new();
        for round in 0..3 {
            let r = f64::from(round);
            for mode in Mode::INTERCEPT {
                samples.push(sample(Scenario::Direct, mode, round, 300.0 + r, 1000.0));
                // Adds 200 µs at p50 and 1 ms at p99 ...
                samples.push(sample(Scenario::Ebpf, mode, round, 500.0 + r, 2000.0));
                // ... against iptables' 400 µs and 1 ms.
                samples.push(sample(Scenario::Iptables, mode, round, 700.0 + r, 2000.0));
            }
        }
        let rows = summarize(&samples, &Scenario::ALL);
        let t = targets(&rows);
        assert!(
            t[0].starts_with("keep-alive p50: ")
                && t[0].ends_with(
                    "= 0.50x (saturating load: for the record; the target is judged at a set rate)"
                ),
            "{t:?}"
        );
        let rate: Vec<&String> = t
            .iter()
            .filter(|l| l.starts_with("rate-keep-alive p"))
            .collect();
        assert!(
            rate[0].ends_with("+0.200 ms vs iptables +0.400 ms = 0.50x: met"),
            "{t:?}"
        );
        assert!(rate[1].ends_with("= 1.00x: NOT met"), "{t:?}");
        assert!(
            t.iter().any(|l| l.starts_with("WARNING: 4 run(s)")),
            "{t:?}"
        );
        let table = tables(&rows);
        assert!(
            table.contains("| weir-ebpf | 10000 | 0.501 ms | 2.000 ms | +0.200 ms | +1.000 ms | 25.0 | 0.1 | 0/3 |"),
            "{table}"
        );
        assert!(
            table.contains("| direct | 10000 | 0.301 ms | 1.000 ms | - | - | - |"),
            "{table}"
        );
        assert!(table.contains("| conn/s |"), "{table}");
        assert!(table.contains("**1/3 (1 errors)**"), "{table}");
    }

    #[test]
    fn no_verdict_when_iptables_adds_nothing() {
        let samples = vec![
            sample(Scenario::Direct, Mode::KeepAlive, 0, 500.0, 1000.0),
            sample(Scenario::Ebpf, Mode::KeepAlive, 0, 600.0, 1000.0),
            sample(Scenario::Iptables, Mode::KeepAlive, 0, 450.0, 1000.0),
        ];
        let t = targets(&summarize(&samples, &Scenario::ALL));
        assert!(
            t[0].contains(": no ratio (iptables added nothing over direct"),
            "{t:?}"
        );
    }
}
