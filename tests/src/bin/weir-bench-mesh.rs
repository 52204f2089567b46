//! The measuring half of `cargo xtask bench mesh` (which builds this binary
//! in release mode, runs it as root and puts its report into
//! docs/benchmarks.md): what the mesh tunnel between nodes adds to a
//! request and to a new connection.
//!
//! Two linked simulated nodes; each setup has its own client pod on node A
//! and server pod on node B (`sim-server http` on :8080), and the client
//! calls the service address 198.51.100.20:80, which nothing serves:
//!
//! - `weir-plain`: a `weir run` per node without mesh flags: node A's
//!   agent claims the address and forwards in plain text from the client
//!   pod's namespace to the server pod; node B's delivers it inbound;
//! - `weir-mesh`: the same with mesh credentials (one root, a node CA
//!   each), so A to B goes through the mutual-TLS tunnel to the server
//!   pod's port 15008;
//! - `sidecars-mtls`: no weir; an Envoy 1.40 in each pod as Istio runs
//!   sidecars (`weir_tests::sidecar`: uid 1337, Istio's iptables rules),
//!   the client's originating TLS with its SPIFFE certificate to the
//!   server's, which requires one of the same root and forwards to the app
//!   on 127.0.0.1.
//!
//! Loads (as `bench intercept`): wrk at saturation, keep-alive and a new
//! connection per request, and `latency-probe` at a set rate, each from
//! inside the client pod. Each run is charged the CPU of every proxy
//! process of its setup (both agents, or both Envoys), and records how
//! many connections crossed between the nodes (`weir_mesh_tunnel_*`,
//! Envoy's cluster stats).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::load::{Load, Mode, Run, report_from_output};
use benchkit::measure;
use benchkit::progress::Progress;
use benchkit::sample::{Sample, Subject, Summary, find, summarize};
use clap::Parser;
use weir::mesh::testing::{MeshRoot, NODE_CA_CERT_FILE, NODE_CA_KEY_FILE, TRUST_BUNDLE_FILE};
use weir_tests::agent::{
    AgentOptions, AgentProcess, MINIMAL_CONFIG, claiming_config, http_get, metric_sample,
};
use weir_tests::iptables::IptablesRedirect;
use weir_tests::pins::PinRoot;
use weir_tests::sidecar::{
    SIDECAR_ADMIN, SIDECAR_INBOUND, SIDECAR_OUTBOUND, Sidecar, SidecarPki, WorkloadPem,
    sidecar_rules, start_envoy,
};
use weir_tests::support::{require_root, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod};

#[path = "mesh/setups.rs"]
mod setups;
use setups::Setup;

/// The service address the client calls; the proxies claim it.
const SERVICE: &str = "198.51.100.20:80";
const APP_PORT: u16 = 8080;
const TRUST_DOMAIN: &str = "cluster.local";
/// Both simulated nodes' pod networks (`PodNet::FIRST`, `PodNet::SECOND`).
const POD_CIDRS: &str = "192.0.2.0/24,203.0.113.0/25,2001:db8:1::/64,2001:db8:2::/64";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    WeirPlain,
    WeirMesh,
    Sidecars,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::WeirPlain, Kind::WeirMesh, Kind::Sidecars];

    fn parse(text: &str) -> Result<Kind, String> {
        Kind::from_name(text.trim()).ok_or_else(|| {
            format!("unknown setup {text:?}: expected weir-plain, weir-mesh, sidecars-mtls")
        })
    }
}

impl Subject for Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::WeirPlain => "weir-plain",
            Kind::WeirMesh => "weir-mesh",
            Kind::Sidecars => "sidecars-mtls",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Parser, Debug)]
#[command(
    about = "Mesh tunnel benchmark on two simulated nodes (as root); see cargo xtask bench mesh"
)]
struct Args {
    /// wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// The set-rate load's client (`latency-probe`).
    #[arg(long)]
    probe: PathBuf,
    /// Envoy binary (the sidecars-mtls setup).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Seconds per run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    duration: u64,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Concurrent connections of every load.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Requests per second of the set-rate (latency) loads.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Setups, comma separated, the first the ratios' baseline.
    #[arg(long, value_delimiter = ',', default_value = "weir-plain,weir-mesh,sidecars-mtls", value_parser = Kind::parse)]
    setups: Vec<Kind>,
    /// Where the report goes (markdown); the `sample ...` records go beside it.
    #[arg(long)]
    out: PathBuf,
}

/// Counters of a setup's proxies (cumulative).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// Connections between the nodes' proxies with a TLS handshake: weir's
    /// outbound tunnel connections, the client sidecar's connections to the
    /// server's (0 for weir without the mesh).
    tls_connections: u64,
    /// Node A's proxy's connections to the server pod: with weir, upstream
    /// connections of the cluster (a tunnel stream each with the mesh); with
    /// sidecars, the same as `tls_connections`.
    upstream_connections: u64,
    /// weir's outbound tunnel streams (`weir_mesh_tunnel_streams_total`).
    tunnel_streams: u64,
    /// Requests node B's proxy delivered to the server (proof of the path).
    delivered: u64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            tls_connections: self.tls_connections.saturating_sub(before.tls_connections),
            upstream_connections: self
                .upstream_connections
                .saturating_sub(before.upstream_connections),
            tunnel_streams: self.tunnel_streams.saturating_sub(before.tunnel_streams),
            delivered: self.delivered.saturating_sub(before.delivered),
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    let mut kinds = Vec::new();
    for &k in &args.setups {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let dir = args.out.parent().unwrap_or(Path::new(".")).join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let (node_a, node_b) = SimNode::linked_pair().context("creating two linked nodes")?;
    println!("bench: nodes {} and {}", node_a.id(), node_b.id());
    // Declared before the setups that use them, so they are dropped after.
    let pins: Vec<(PinRoot, PinRoot)> = kinds
        .iter()
        .map(|_| (PinRoot::new(), PinRoot::new()))
        .collect();
    let mut setups = Vec::new();
    for (&kind, pins) in kinds.iter().zip(&pins) {
        let setup = Setup::start((&node_a, &node_b), kind, pins, args.envoy.as_deref(), &dir)
            .with_context(|| format!("starting {}", kind.name()))?;
        println!(
            "bench: {}: client pod {} on node A -> http://{SERVICE}/, server pod {}:{APP_PORT} on node B",
            kind.name(),
            setup.client.ip4,
            setup.server.ip4
        );
        setups.push(setup);
    }

    let url = format!("http://{}/", SERVICE.trim_end_matches(":80"));
    let run = |mode, secs| Run {
        load: Load {
            wrk: &args.wrk,
            url: &url,
            connections: args.connections,
            duration: Duration::from_secs(secs),
            mode,
        },
        probe: &args.probe,
        rate: args.rate,
    };
    // Warm-up, and proof that each path serves and goes where it should.
    for setup in &setups {
        let before = setup.counters()?;
        let sample = measured(setup, &run(Mode::KeepAlive, 1))?;
        let seen = setup.counters()?.since(before);
        println!(
            "bench: warm-up {}: {} requests, {} errors; node B delivered {}, TLS connections A->B {}",
            setup.kind.name(),
            sample.wrk.requests,
            sample.wrk.errors(),
            seen.delivered,
            seen.tls_connections
        );
        let tunnelled = match setup.kind {
            Kind::WeirPlain => seen.tunnel_streams == 0,
            Kind::WeirMesh => seen.tunnel_streams > 0,
            Kind::Sidecars => seen.tls_connections > 0,
        };
        if sample.wrk.requests == 0
            || sample.wrk.errors() > 0
            || seen.delivered < sample.wrk.requests
            || !tunnelled
        {
            bail!(
                "{} does not serve cleanly through its path: {:?}, counters {seen:?}\n{}",
                setup.kind.name(),
                sample.wrk,
                setup.log()
            );
        }
    }

    let records = args.out.with_extension("samples.txt");
    let mut out = std::fs::File::create(&records)
        .with_context(|| format!("creating {}", records.display()))?;
    let mut samples = Vec::new();
    let mut crossed: Vec<(Kind, Mode, u64, Counters)> = Vec::new();
    let steps = args.rounds as usize * Mode::INTERCEPT.len() * setups.len();
    let mut progress = Progress::uniform(steps, Duration::from_secs(args.duration));
    for round in 0..args.rounds {
        for mode in Mode::INTERCEPT {
            for i in 0..setups.len() {
                let setup = &setups[(i + round as usize) % setups.len()];
                progress.begin(&format!("{}, {}", mode.label(), setup.kind.name()));
                let before = setup.counters()?;
                let mut sample = measured(setup, &run(mode, args.duration))?;
                sample.round = round;
                let seen = setup.counters()?.since(before);
                print_sample(&sample, args.rounds, &seen);
                writeln!(out, "{}", sample.to_record())?;
                out.flush()?;
                crossed.push((setup.kind, mode, sample.wrk.requests, seen));
                samples.push(sample);
            }
        }
    }
    let rows = summarize(&samples, &kinds);
    let report = format!(
        "{}\n{}",
        table(&rows, &kinds, args.rate),
        crossings(&crossed, &kinds)
    );
    println!("\n{report}");
    std::fs::write(&args.out, report)?;
    drop(setups);
    Ok(())
}

/// One run from inside the client pod, charged the CPU of every proxy
/// process of the setup, with how busy the rest of the machine was (all
/// CPU less the proxies' and the load tool's, in cores).
fn measured(setup: &Setup<'_>, run: &Run<'_>) -> Result<Sample<Kind>> {
    let pids = setup.proxy_pids();
    let (machine0, tool0, start) = (
        measure::machine_busy()?,
        measure::children_cpu(),
        Instant::now(),
    );
    let proxies0 = measure::cpu_time(&pids)?;
    let output = setup
        .client
        .spawn(run.command())?
        .wait_output(run.load.duration + Duration::from_secs(20))
        .context("the load did not end")?;
    let cpu = measure::cpu_time(&pids)
        .with_context(|| format!("a proxy of {} exited during the run", setup.kind.name()))?
        .saturating_sub(proxies0);
    let wall = start.elapsed();
    let wrk = report_from_output(&output)?;
    let ours = cpu + measure::children_cpu().saturating_sub(tool0);
    let others = measure::machine_busy()?
        .saturating_sub(machine0)
        .saturating_sub(ours);
    Ok(Sample {
        kind: setup.kind,
        mode: run.load.mode,
        round: 0,
        wrk,
        cpu,
        other_cores: others.as_secs_f64() / wall.as_secs_f64().max(1e-3),
    })
}

fn print_sample(s: &Sample<Kind>, rounds: u32, seen: &Counters) {
    let mut line = s.progress_line(rounds);
    let _ = write!(
        line,
        "  proxies {:>6.1} µs/req  TLS conns A->B +{}  tunnel streams +{}  others {:.1} cores",
        s.cpu_us_per_request(),
        seen.tls_connections,
        seen.tunnel_streams,
        s.other_cores,
    );
    if s.wrk.errors() > 0 {
        let _ = write!(line, "  ERRORS: {}", s.wrk.errors());
    }
    println!("{line}");
}

/// `value (ratio to the baseline's)`, the baseline's own cell without one.
fn with_ratio(value: f64, base: Option<f64>, text: String, is_base: bool) -> String {
    match base {
        Some(b) if !is_base && b > 0.0 => format!("{text} ({:.2}x)", value / b),
        _ => text,
    }
}

/// The one table: per setup and kind of connection, the saturating rate
/// and the proxies' CPU per request (from the saturating runs), and the
/// latency at the set rate; each with its ratio to the first setup's.
fn table(rows: &[Summary<Kind>], kinds: &[Kind], rate: u32) -> String {
    let mut t = format!(
        "| connections | setup | req/s (saturating) | proxies' CPU µs/req | p50 at {rate}/s | p99 at {rate}/s | others (cores) | runs with errors |\n|---|---|---:|---:|---:|---:|---:|---|\n"
    );
    let base = kinds[0];
    for (label, saturating, at_rate) in [
        ("keep-alive", Mode::KeepAlive, Mode::RateKeepAlive),
        (
            "new per request",
            Mode::ConnectionPerRequest,
            Mode::RateConnectionPerRequest,
        ),
    ] {
        for &kind in kinds {
            let (Some(s), Some(r)) = (find(rows, kind, saturating), find(rows, kind, at_rate))
            else {
                continue;
            };
            let (bs, br) = (find(rows, base, saturating), find(rows, base, at_rate));
            let is_base = kind == base;
            let ms = |us: f64| format!("{:.3} ms", us / 1e3);
            let _ = writeln!(
                t,
                "| {label} | {} | {} | {} | {} | {} | {:.1} | {} |",
                kind.name(),
                with_ratio(
                    s.requests_per_sec,
                    bs.map(|b| b.requests_per_sec),
                    format!("{:.0}", s.requests_per_sec),
                    is_base
                ),
                with_ratio(
                    s.cpu_us_per_request,
                    bs.map(|b| b.cpu_us_per_request),
                    format!("{:.1}", s.cpu_us_per_request),
                    is_base
                ),
                with_ratio(r.p50_us, br.map(|b| b.p50_us), ms(r.p50_us), is_base),
                with_ratio(r.p99_us, br.map(|b| b.p99_us), ms(r.p99_us), is_base),
                s.other_cores.max(r.other_cores),
                combined_errors(s, r),
            );
        }
    }
    t
}

fn combined_errors(a: &Summary<Kind>, b: &Summary<Kind>) -> String {
    let (flagged, runs) = (a.flagged_runs + b.flagged_runs, a.runs + b.runs);
    if flagged == 0 {
        format!("0/{runs}")
    } else {
        format!("**{flagged}/{runs} ({} errors)**", a.errors + b.errors)
    }
}

/// What crossed between the nodes over all measured runs, per setup and load.
fn crossings(crossed: &[(Kind, Mode, u64, Counters)], kinds: &[Kind]) -> String {
    let mut t = String::from(
        "| load | setup | requests | node A's new connections to the server | new TLS connections A→B | tunnel streams |\n|---|---|---:|---:|---:|---:|\n",
    );
    for mode in Mode::INTERCEPT {
        for &kind in kinds {
            let runs: Vec<_> = crossed
                .iter()
                .filter(|(k, m, ..)| *k == kind && *m == mode)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let requests: u64 = runs.iter().map(|r| r.2).sum();
            let sum = |f: fn(&Counters) -> u64| runs.iter().map(|r| f(&r.3)).sum::<u64>();
            let streams = if kind == Kind::Sidecars {
                "-".to_owned()
            } else {
                sum(|c| c.tunnel_streams).to_string()
            };
            let _ = writeln!(
                t,
                "| {} | {} | {requests} | {} | {} | {streams} |",
                mode.label(),
                kind.name(),
                sum(|c| c.upstream_connections),
                sum(|c| c.tls_connections),
            );
        }
    }
    t
}
