//! `cargo xtask bench ...`: benchmarks, run by hand (not in CI).
//!
//! `bench proxy` runs weir, Envoy and nginx as reverse proxies side by side in
//! one run, against one backend, with the same wrk load in interleaved rounds,
//! and reports medians of req/s, p50, p99, the proxy's CPU per request and its
//! memory, with ratios; the table goes into `docs/benchmarks.md`. Besides
//! plaintext HTTP/1.1 (wrk), the same run drives each proxy's TLS-terminating
//! listener with wrk (HTTP/1.1) and h2load (h2 by ALPN), and its h2c listener
//! with h2load ([`parity`]).
//!
//! `bench intercept` measures what interception adds to a pod's requests:
//! direct, through weir by eBPF, and through the same weir behind an iptables
//! REDIRECT, on a simulated node ([`intercept`]).
//!
//! `bench enroll` measures how soon a pod the Kubernetes API reports running
//! is enrolled and served, with a real API server ([`enroll`]).
//!
//! `bench restart` measures what an agent restart costs the pods, a rolling
//! update beside a crash ([`restart`]).
//!
//! `bench neighbours` measures what one misbehaving pod costs its
//! neighbour, with weir and with a sidecar per pod ([`neighbours`]).
//!
//! `bench mesh` measures what the mesh tunnel between nodes adds to a
//! request and a new connection, against plain forwarding and sidecars with
//! mutual TLS ([`mesh`]).
//!
//! `bench node` measures what one agent costs on a node of hundreds of
//! pods: an enrolment burst, memory, descriptors and idle CPU per pod, and
//! un-enrolling them all ([`node`]).

mod cert;
mod configs;
mod counters;
mod docs;
mod enroll;
mod h2load;
mod intercept;
mod mesh;
mod neighbours;
mod node;
mod parity;
mod peers;
mod report;
mod restart;
mod tools;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use benchkit::load::{Load, Mode, WrkReport};
use benchkit::measure;
use benchkit::progress::Progress;

use self::h2load::{H2Load, Negotiated};
use self::peers::{Kind, Proxy};
use self::report::Sample;
use self::tools::Tools;

#[derive(Subcommand)]
pub enum Target {
    /// weir's L7 proxy against Envoy 1.40 and nginx, HTTP/1.1 (as root: installs peers).
    Proxy(ProxyArgs),
    /// Interception: direct vs weir by eBPF vs weir behind iptables REDIRECT (as root).
    Intercept(intercept::InterceptArgs),
    /// Enrolment latency from the Kubernetes API event, 100 pods (as root: real API server).
    Enroll(enroll::EnrollArgs),
    /// What an agent restart costs the pods: rolling update vs crash (as root).
    Restart(restart::RestartArgs),
    /// What a misbehaving pod costs its neighbour: weir vs a sidecar per pod (as root).
    Neighbours(neighbours::NeighboursArgs),
    /// The mesh tunnel between two nodes: weir plain vs weir mesh vs sidecars with mTLS (as root).
    Mesh(mesh::MeshArgs),
    /// A node of 100, 250 and 500 pods: enrolment burst, footprint per pod, un-enrolment (as root).
    Node(node::NodeArgs),
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ProxyArgs {
    /// Length of each wrk run, e.g. `5s` (or seconds).
    #[arg(long, default_value = "3s", value_parser = parse_seconds)]
    duration: Duration,
    /// Interleaved rounds; each runs every proxy once per load kind. Many short
    /// rounds rather than a few long ones, so that other work on a shared
    /// machine falls on every proxy alike.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Concurrent wrk connections (one wrk thread).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Proxies to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "weir,weir-log,envoy,nginx", value_parser = Kind::parse)]
    peers: Vec<Kind>,
    /// Loads to run, comma separated: keep-alive, conn-per-request, tls
    /// (HTTP/1.1 over TLS, wrk), h2 (HTTP/2 over TLS, h2load), h2c (HTTP/2
    /// cleartext, h2load).
    #[arg(long, value_delimiter = ',', default_value = "keep-alive,conn-per-request,tls,h2,h2c", value_parser = parse_mode)]
    loads: Vec<Mode>,
    /// Write docs/benchmarks.md even for a shortened run (a full run always does).
    #[arg(long, conflicts_with = "no_docs")]
    write_docs: bool,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    no_docs: bool,
}

impl ProxyArgs {
    /// The full benchmark, whose table belongs in the docs.
    fn is_full_run(&self) -> bool {
        self.duration >= Duration::from_secs(3)
            && self.rounds >= 5
            && self.connections == 16
            && Kind::ALL.iter().all(|k| self.peers.contains(k))
            && Mode::EVERY.iter().all(|m| self.loads.contains(m))
    }
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    Mode::parse_among(text, &Mode::EVERY)
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: u64 = text
        .strip_suffix('s')
        .unwrap_or(text)
        .parse()
        .map_err(|_| format!("{text:?}: expected whole seconds, e.g. 5s"))?;
    if !(1..=600).contains(&secs) {
        return Err(format!("{text:?}: between 1s and 600s"));
    }
    Ok(Duration::from_secs(secs))
}

pub fn run(root: &Path, target: Target) -> Result<()> {
    match target {
        Target::Proxy(args) => proxy(root, &args),
        Target::Intercept(args) => intercept::run_intercept(root, &args),
        Target::Enroll(args) => enroll::run_enroll(root, &args),
        Target::Restart(args) => restart::run_restart(root, &args),
        Target::Neighbours(args) => neighbours::run_neighbours(root, &args),
        Target::Mesh(args) => mesh::run_mesh(root, &args),
        Target::Node(args) => node::run_node(root, &args),
    }
}

fn proxy(root: &Path, args: &ProxyArgs) -> Result<()> {
    let mut kinds = args.peers.clone();
    kinds.sort();
    kinds.dedup();
    let tools = tools::ensure(
        root,
        kinds.contains(&Kind::Envoy),
        kinds.iter().any(|k| k.is_weir()),
    )?;
    let dir = root.join("target/bench/proxy");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let cert = cert::self_signed(&tools.openssl, &dir)?;
    // In the order of the docs' table, with no load twice.
    let modes: Vec<Mode> = Mode::EVERY
        .into_iter()
        .filter(|m| args.loads.contains(m))
        .collect();

    let load_before = docs::load_average();
    let (backend, backend_port) = peers::start_backend(&tools, &dir)?;
    let mut proxies = Vec::new();
    for &kind in &kinds {
        proxies.push(peers::start_proxy(kind, &tools, &dir, backend_port, &cert)?);
    }
    println!(
        "xtask: backend on 127.0.0.1:{backend_port}; proxies: {}",
        proxies
            .iter()
            .map(|p| format!("{} {}", p.kind.name(), p.url))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let load = |proxy, mode, duration| load_for(&tools, proxy, args.connections, mode, duration);
    for proxy in &proxies {
        println!("xtask: warm-up {} (1 s)", proxy.kind.name());
        load(proxy, Mode::KeepAlive, Duration::from_secs(1)).run()?;
    }
    // The TLS and h2 warm-up (which also proves those listeners serve) comes
    // right before the first TLS/h2 load, after the memory of the plaintext
    // HTTP/1.1 loads alone is taken, so the existing RSS rows and target keep
    // their meaning.
    let mut negotiated = Vec::new();
    let mut memory_http1: Option<Vec<(Kind, measure::Memory)>> = None;
    let mut warm_tls_h2 = |memory_http1: &mut Option<_>| -> Result<()> {
        *memory_http1 = Some(memory_of(&proxies)?);
        for proxy in &proxies {
            for &mode in modes.iter().filter(|m| parity::MODES.contains(m)) {
                println!(
                    "xtask: warm-up {} {} (1 s)",
                    proxy.kind.name(),
                    mode.label()
                );
                let (report, session) = drive(
                    &tools,
                    &dir,
                    proxy,
                    args.connections,
                    mode,
                    Duration::from_secs(1),
                )
                .with_context(|| format!("warm-up of {} ({})", proxy.kind.name(), mode.label()))?;
                if report.requests == 0 || report.errors() > 0 {
                    anyhow::bail!(
                        "warm-up of {} ({}) was not clean: {} requests, {} errors; see {}",
                        proxy.kind.name(),
                        mode.label(),
                        report.requests,
                        report.errors(),
                        dir.display()
                    );
                }
                if let Some(session) = session {
                    negotiated.push((proxy.kind, mode, session));
                }
            }
        }
        Ok(())
    };

    let mut samples = Vec::new();
    let steps = args.rounds as usize * modes.len() * proxies.len();
    let mut progress = Progress::uniform(steps, args.duration);
    for round in 0..args.rounds {
        for &mode in &modes {
            if memory_http1.is_none() && parity::MODES.contains(&mode) {
                warm_tls_h2(&mut memory_http1)?;
            }
            // Rotate the order each round so no proxy always runs first.
            for i in 0..proxies.len() {
                let proxy = &proxies[(i + round as usize) % proxies.len()];
                progress.begin(&format!("{}, {}", mode.label(), proxy.kind.name()));
                let sample = measure_run(proxy, backend.pid(), mode, round, || {
                    drive(&tools, &dir, proxy, args.connections, mode, args.duration)
                        .map(|(report, _)| report)
                })?;
                print_sample(&sample, args.rounds);
                samples.push(sample);
            }
        }
    }
    let memory_all = memory_of(&proxies)?;
    for proxy in &proxies {
        check_counted(proxy, &samples)?;
    }
    // The plaintext table and targets: memory before any TLS/h2 load, when
    // those ran; else (no TLS/h2 load) after all runs, as before.
    let memory = memory_http1.unwrap_or_else(|| memory_all.clone());
    drop(proxies);
    drop(backend);
    let load_after = docs::load_average();
    println!("xtask: load average before {load_before}, after {load_after} (1, 5, 15 min)");

    let rows = report::summarize(&samples, &kinds);
    let http1: Vec<_> = rows
        .iter()
        .filter(|r| Mode::ALL.contains(&r.mode))
        .cloned()
        .collect();
    let mut tables = report::tables(&http1, &memory);
    let mut targets = report::targets(&rows, &memory);
    let tls_h2 = parity::tables(&rows, &memory_all);
    if !tls_h2.is_empty() {
        let _ = write!(
            tables,
            "\nTLS and HTTP/2 rows, with requests per CPU second (1e6 / CPU µs per request):\n\n{tls_h2}"
        );
        if !negotiated.is_empty() {
            let _ = writeln!(
                tables,
                "\nNegotiated (h2load's report): {}.",
                negotiated_line(&negotiated)
            );
        }
        // Keep the existing targets' order; the TLS/h2 parity targets follow,
        // before any error warning.
        let warnings = targets
            .iter()
            .position(|t| t.starts_with("WARNING"))
            .unwrap_or(targets.len());
        for (i, line) in parity::targets(&rows).into_iter().enumerate() {
            targets.insert(warnings + i, line);
        }
    }
    println!("\n{tables}");
    for line in &targets {
        println!("{line}");
    }

    if !writes_docs(args.no_docs, args.is_full_run(), args.write_docs) {
        return Ok(());
    }
    let body = docs::proxy_section(
        root,
        [&load_before, &load_after],
        args,
        &tools,
        &tables,
        &targets,
        &report::raw_runs(&samples),
    );
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "proxy", &body)?;
    println!("\nxtask: wrote the table into {}", file.display());
    Ok(())
}

/// VmRSS and VmHWM of each proxy's processes now.
fn memory_of(proxies: &[Proxy]) -> Result<Vec<(Kind, measure::Memory)>> {
    proxies
        .iter()
        .map(|p| {
            let tree = measure::process_tree(p.proc.pid());
            Ok((p.kind, measure::memory(&tree)?))
        })
        .collect()
}

fn load_for<'a>(
    tools: &'a Tools,
    proxy: &'a Proxy,
    connections: u32,
    mode: Mode,
    duration: Duration,
) -> Load<'a> {
    Load {
        wrk: &tools.wrk,
        url: proxy.url_for(mode),
        connections,
        duration,
        mode,
    }
}

/// One load of `mode` against the proxy: wrk for HTTP/1.1 (plaintext or
/// TLS), h2load for HTTP/2; h2load also says what it negotiated.
fn drive(
    tools: &Tools,
    dir: &Path,
    proxy: &Proxy,
    connections: u32,
    mode: Mode,
    duration: Duration,
) -> Result<(WrkReport, Option<Negotiated>)> {
    if !mode.is_h2() {
        let report = load_for(tools, proxy, connections, mode, duration).run()?;
        return Ok((report, None));
    }
    let h2 = H2Load {
        h2load: &tools.h2load,
        url: proxy.url_for(mode),
        connections,
        duration,
        log: dir.join(format!("h2load-{}-{}.log", proxy.kind.name(), mode.label())),
    };
    let (report, session) = h2.run()?;
    Ok((report, Some(session)))
}

/// `weir h2 TLSv1.3 TLS_AES_256_GCM_SHA384, ...`: one entry per proxy and load.
fn negotiated_line(negotiated: &[(Kind, Mode, Negotiated)]) -> String {
    negotiated
        .iter()
        .map(|(kind, mode, n)| {
            let tls = if n.tls.is_empty() {
                String::new()
            } else {
                format!(", {}", n.tls)
            };
            format!(
                "{} `{}` load: {}{tls}",
                kind.name(),
                mode.label(),
                n.protocol
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One load run (`run`: wrk or h2load) with the proxy's CPU time (all its
/// processes and threads) read from /proc before and after.
/// Also how busy the rest of the machine was meanwhile: all CPU time spent
/// on the machine less the proxy's, the backend's and the load tool's, in cores.
fn measure_run(
    proxy: &Proxy,
    backend: u32,
    mode: Mode,
    round: u32,
    run: impl FnOnce() -> Result<WrkReport>,
) -> Result<Sample> {
    let tree = measure::process_tree(proxy.proc.pid());
    let (machine0, backend0, wrk0) = (
        measure::machine_busy()?,
        measure::cpu_time(&[backend])?,
        measure::children_cpu(),
    );
    let start = Instant::now();
    let before = measure::cpu_time(&tree)?;
    let wrk = run()?;
    let after = measure::cpu_time(&tree)
        .with_context(|| format!("{} exited during the run", proxy.kind.name()))?;
    let wall = start.elapsed();
    let cpu = after.saturating_sub(before);
    let ours = cpu
        + measure::cpu_time(&[backend])?.saturating_sub(backend0)
        + measure::children_cpu().saturating_sub(wrk0);
    let others = measure::machine_busy()?
        .saturating_sub(machine0)
        .saturating_sub(ours);
    Ok(Sample {
        kind: proxy.kind,
        mode,
        round,
        wrk,
        cpu,
        other_cores: others.as_secs_f64() / wall.as_secs_f64().max(1e-3),
    })
}

/// The proxy's own metrics must have seen at least the requests wrk completed.
fn check_counted(proxy: &Proxy, samples: &[Sample]) -> Result<()> {
    let completed: u64 = samples
        .iter()
        .filter(|s| s.kind == proxy.kind)
        .map(|s| s.wrk.requests)
        .sum();
    let counted = counters::requests_counted(proxy)?;
    println!(
        "xtask: {} counted {counted} requests in its metrics; wrk completed {completed} in the measured runs",
        proxy.kind.name()
    );
    if counted < completed {
        anyhow::bail!(
            "{} counted fewer requests ({counted}) than wrk completed ({completed}): the load did not go through it",
            proxy.kind.name()
        );
    }
    Ok(())
}

fn print_sample(s: &Sample, rounds: u32) {
    let errors = match s.wrk.errors() {
        0 => String::new(),
        n => format!(
            "  ERRORS: {n} (socket {}, non-2xx/3xx {})",
            s.wrk.socket_errors, s.wrk.non_2xx_3xx
        ),
    };
    println!(
        "round {}/{rounds} {:<16} {:<5} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  CPU {:>6.1} µs/req  others {:.1} cores{errors}",
        s.round + 1,
        s.mode.label(),
        s.kind.name(),
        s.wrk.requests_per_sec,
        s.wrk.p50_us / 1e3,
        s.wrk.p99_us / 1e3,
        s.cpu_us_per_request(),
        s.other_cores,
    );
}

/// `cargo build` of weir and of the tests crate's `bins` (a benchmark and
/// the helpers it runs in pods), `release` or debug.
fn build_with_weir(root: &Path, release: bool, bins: &[&str]) -> Result<()> {
    println!(
        "xtask: building the benchmark (cargo build{} -p weir-agent --bin weir -p weir-tests --bin {})",
        if release { " --release" } else { "" },
        bins.join(" --bin ")
    );
    let mut cmd = crate::cargo(root);
    cmd.arg("build").args(release.then_some("--release")).args([
        "-p",
        "weir-agent",
        "--bin",
        "weir",
        "-p",
        "weir-tests",
    ]);
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    crate::run::run(&mut cmd)
}

/// Whether a run's section goes into docs/benchmarks.md: never with
/// `--no-docs`; a shortened run only with `--write-docs` (said so otherwise).
fn writes_docs(no_docs: bool, full_run: bool, write_docs: bool) -> bool {
    if no_docs {
        return false;
    }
    if !(full_run || write_docs) {
        println!(
            "\nxtask: shortened run, docs/benchmarks.md left as it is (--write-docs writes it)"
        );
        return false;
    }
    true
}

/// What a benchmark on a simulated node needs before it builds: root, the
/// eBPF object and the node's tools, and wrk; returns wrk and iptables.
fn simulated_node_prerequisites(
    root: &Path,
    bench: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "bench {bench} needs root (network namespaces, cgroups, eBPF, iptables in a pod's namespace)"
        );
    }
    crate::ensure_runtime_prerequisites(root)?;
    crate::install::ensure_apt_packages(&["wrk"])?;
    let wrk = tools::on_path("wrk")?;
    let iptables = tools::on_path("iptables").unwrap_or_else(|_| "/usr/sbin/iptables".into());
    Ok((wrk, iptables))
}

/// Runs a simulated-node benchmark binary (`cmd`, with its own arguments)
/// as `bench neighbours` and `bench mesh` do: with wrk, latency-probe and the release weir
/// (Envoy when given), between two readings of the load average; returns
/// those readings and the report the binary wrote to `out`.
fn run_on_simulated_nodes(
    root: &Path,
    cmd: &mut std::process::Command,
    (wrk, envoy): (&Path, Option<&Path>),
    out: &Path,
) -> Result<([String; 2], String)> {
    let release = root.join("target/release");
    cmd.arg("--wrk")
        .arg(wrk)
        .arg("--probe")
        .arg(release.join("latency-probe"))
        .arg("--out")
        .arg(out)
        .env("WEIR_TEST_PREBUILT_WEIR", release.join("weir"));
    if let Some(envoy) = envoy {
        cmd.arg("--envoy").arg(envoy);
    }
    let load_before = docs::load_average();
    println!("xtask: load average before the run {load_before} (1, 5, 15 min)");
    crate::run::run(cmd)?;
    let load_after = docs::load_average();
    println!("xtask: load average before {load_before}, after {load_after} (1, 5, 15 min)");
    let report =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    Ok(([load_before, load_after], report))
}

/// The tools of a simulated-node benchmark, for its section: weir's commit,
/// wrk, iptables and Envoy when it ran.
fn simulated_node_versions(
    root: &Path,
    wrk: &Path,
    iptables: &Path,
    envoy: Option<&Path>,
) -> Result<String> {
    let mut versions = vec![
        format!("weir {}", docs::git_describe(root)),
        format!("wrk: `{}`", tools::version_line(wrk, &["-v"])),
        format!("iptables: `{}`", tools::version_line(iptables, &["-V"])),
    ];
    if let Some(envoy) = envoy {
        versions.push(format!("Envoy {}", crate::envoy::envoy_version(envoy)?));
    }
    Ok(versions.join(", "))
}

/// `target/bench/<name>/report.md`, any earlier one removed.
fn fresh_report(root: &Path, name: &str) -> Result<std::path::PathBuf> {
    let dir = root.join("target/bench").join(name);
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("report.md");
    if out.exists() {
        std::fs::remove_file(&out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_flag() {
        assert_eq!(parse_seconds("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert!(parse_seconds("0s").is_err());
        assert!(parse_seconds("1.5s").is_err());
    }
}
