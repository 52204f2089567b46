//! The measuring half of `cargo xtask bench intercept` (which builds this
//! binary in release mode, runs it as root and reports what it records).
//!
//! On a simulated node, each scenario has a client pod and a server pod
//! running `sim-server` on :8080; the client sends the same load its own way:
//!
//! - `direct`: to the server pod's address, no proxy;
//! - `weir-ebpf` (and `weir-ebpf-sk-msg`): to the service address
//!   198.51.100.20:80, which nothing serves: both pods are enrolled in a
//!   `weir run`, whose eBPF programs steer the client's connections into
//!   weir, whose `bind_to_port: false` listener claims the address and
//!   routes `/` to the server pod (inbound interception covers it too);
//! - `weir-iptables`: the seeds' way, a `weir proxy` sidecar in each pod's
//!   namespace: the client's behind an iptables OUTPUT `REDIRECT` of the
//!   service address (:15001, same route), the server's behind a PREROUTING
//!   `REDIRECT` of :8080 (:15006, to the app on 127.0.0.1);
//! - `weir-ebpf-pod-egress` and `weir-ebpf-node-egress` (only when asked):
//!   as `weir-ebpf` with the backend pod outside the mesh, so weir connects
//!   to it over the network: from inside the client pod's namespace with
//!   pools per pod (`--pod-egress on`), or from the agent's with pools
//!   shared by pods (`--pod-egress off`).
//!
//! For each run through weir, the share of requests that found an idle
//! upstream connection (pool hits: 1 - connections opened / requests sent,
//! from weir's cluster metrics) is printed with it.
//!
//! wrk (saturating loads) or `latency-probe` (set-rate loads) runs inside
//! each client pod (its cgroup and namespace, where the eBPF hooks see it).
//! Rounds interleave the scenarios, rotating their order. Each run is
//! written to `--out` as a `sample ...` line (`benchkit::sample`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::intercept::Scenario;
use benchkit::load::{Load, Mode, Run, report_from_output};
use benchkit::measure;
use benchkit::progress::Progress;
use benchkit::sample::{Sample, Subject};
use clap::Parser;
use weir_tests::agent::{AgentOptions, AgentProcess, http_get, weir_bin};
use weir_tests::iptables::IptablesRedirect;
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_server, wait_ready_in};
use weir_tests::{PodProcess, SimNode, SimPod};

/// The service address the weir scenarios' client calls; nothing listens there.
const SERVICE: &str = "198.51.100.20:80";
/// The backend's port in its pod.
const BACKEND_PORT: u16 = 8080;
/// The sidecars' listeners (Istio's ports: outbound 15001, inbound 15006)
/// and admin, in the iptables scenario's pods.
const SIDECAR_PORT: u16 = 15001;
const SIDECAR_INBOUND_PORT: u16 = 15006;
const SIDECAR_ADMIN: &str = "127.0.0.1:15000";
/// The cluster both weir scenarios route to.
const CLUSTER: &str = "backend";

#[derive(Parser, Debug)]
#[command(
    about = "Interception benchmark on a simulated node (as root); see cargo xtask bench intercept"
)]
struct Args {
    /// wrk binary.
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=600))]
    duration: u64,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Concurrent wrk connections (one wrk thread).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Requests per second of the set-rate (latency) loads, over `--connections`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Loads, comma separated (labels of `benchkit::load::Mode::INTERCEPT`).
    #[arg(long, value_delimiter = ',', default_value = "keep-alive,conn-per-request,rate-keep-alive,rate-conn-per-request", value_parser = parse_load)]
    loads: Vec<Mode>,
    /// The set-rate load's client (`latency-probe`).
    #[arg(long)]
    probe: PathBuf,
    /// Scenarios, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "direct,weir-ebpf,weir-ebpf-sk-msg,weir-iptables", value_parser = Scenario::parse)]
    scenarios: Vec<Scenario>,
    /// Where the `sample ...` lines go (one per run).
    #[arg(long)]
    out: PathBuf,
    /// weir's `max_requests_per_connection` towards the backend (0:
    /// unlimited); 1 opens an upstream connection per request, to measure
    /// what a new one costs.
    #[arg(long, default_value_t = 0)]
    upstream_requests_per_connection: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    let mut scenarios = args.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();

    let node = SimNode::new().context("creating the simulated node")?;
    println!("bench: node {}", node.id());
    let mut keep: Vec<PodProcess> = Vec::new();

    // Declared before the setups that use them, so they are dropped after.
    let pins: Vec<PinRoot> = scenarios.iter().map(|_| PinRoot::new()).collect();
    let per_connection = args.upstream_requests_per_connection;
    let mut setups = Vec::new();
    for (&scenario, pins) in scenarios.iter().zip(&pins) {
        // Each scenario has its own pair of pods: a mesh is a property of
        // the pods (enrolled, or with sidecars), and each weir owns its own.
        let server_pod = node.add_pod(&format!("server-{}", scenario.name()))?;
        keep.push(server_pod.start_pause()?);
        let backend = server_pod.start_server(
            &sim_server(),
            &["http", "backend", &format!("0.0.0.0:{BACKEND_PORT}")],
            BACKEND_PORT,
        )?;
        let backend_addr = SocketAddr::new(server_pod.ip4.into(), BACKEND_PORT);
        let pod = node.add_pod(&format!("client-{}", scenario.name()))?;
        keep.push(pod.start_pause()?);
        let via = match scenario {
            Scenario::Direct => Via::Direct,
            Scenario::Ebpf
            | Scenario::EbpfSkMsg
            | Scenario::EbpfPodEgress
            | Scenario::EbpfNodeEgress
            | Scenario::EbpfUnclaimedDirect => Via::Agent(Box::new(start_agent(
                &node,
                &pod,
                &server_pod,
                pins,
                scenario,
                per_connection,
            )?)),
            Scenario::Iptables => start_sidecars(&pod, &server_pod, backend_addr, per_connection)?,
        };
        let url = match scenario {
            Scenario::Direct | Scenario::EbpfUnclaimedDirect => format!("http://{backend_addr}/"),
            _ => format!("http://{}/", SERVICE.trim_end_matches(":80")),
        };
        println!(
            "bench: {}: client pod {} -> {url}, backend pod {backend_addr} (sim-server pid {})",
            scenario.name(),
            pod.ip4,
            backend.pid()
        );
        setups.push(Setup {
            scenario,
            pod,
            via,
            url,
            backend,
            _server_pod: server_pod,
            node: &node,
        });
    }

    // What the pod egress adds to each new upstream connection, alone.
    if let Some(setup) = setups
        .iter()
        .find(|s| s.scenario == Scenario::EbpfPodEgress)
    {
        measure_factory(&setup.pod, 20_000)?;
    }

    let mut out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (wrk_bin, connections) = (args.wrk.as_path(), args.connections);
    let load = |url, mode, secs| Run {
        load: Load {
            wrk: wrk_bin,
            url,
            connections,
            duration: Duration::from_secs(secs),
            mode,
        },
        probe: &args.probe,
        rate: args.rate,
    };
    // Warm-up, and proof that each path serves before anything is measured:
    // a second of the first load measured (a saturating one opening an
    // upstream connection per request would leave ten thousand sockets in
    // TIME_WAIT, whose port search then dominates every connect after).
    let warm_up = args.loads.first().copied().unwrap_or(Mode::KeepAlive);
    for setup in &setups {
        let wrk = setup.run(&load(&setup.url, warm_up, 1))?;
        println!(
            "bench: warm-up {} ({}): {} requests, {} errors",
            setup.scenario.name(),
            setup.url,
            wrk.wrk.requests,
            wrk.wrk.errors()
        );
        if wrk.wrk.requests == 0 || wrk.wrk.errors() > 0 {
            bail!(
                "{} does not serve {} cleanly: {:?}{}",
                setup.scenario.name(),
                setup.url,
                wrk.wrk,
                setup.log()
            );
        }
    }
    let before: Vec<u64> = setups
        .iter()
        .map(Setup::upstream_requests)
        .collect::<Result<_>>()?;

    let mut samples = Vec::new();
    let mut hits: Vec<(Scenario, Mode, f64)> = Vec::new();
    let steps = args.rounds as usize * args.loads.len() * setups.len();
    let mut progress = Progress::uniform(steps, Duration::from_secs(args.duration));
    for round in 0..args.rounds {
        for &mode in &args.loads {
            for i in 0..setups.len() {
                let setup = &setups[(i + round as usize) % setups.len()];
                progress.begin(&format!("{}, {}", mode.label(), setup.scenario.name()));
                let pooled0 = setup.upstream_counts()?;
                let mut sample = setup.run(&load(&setup.url, mode, args.duration))?;
                sample.round = round;
                let hit = pool_hits(pooled0, setup.upstream_counts()?);
                if let Some(h) = hit {
                    hits.push((setup.scenario, mode, h));
                }
                print_sample(&sample, args.rounds, hit);
                // Line by line: the records survive a run that fails later.
                writeln!(out, "{}", sample.to_record())?;
                out.flush()?;
                samples.push(sample);
            }
        }
    }

    print_pool_hits(&hits, &scenarios, &args.loads);

    // weir's own count of what it sent to the backend: the load went through it.
    for (setup, before) in setups.iter().zip(before) {
        if !setup.scenario.through_weir() {
            continue;
        }
        let counted = setup.upstream_requests()? - before;
        let completed: u64 = samples
            .iter()
            .filter(|s| s.kind == setup.scenario)
            .map(|s| s.wrk.requests)
            .sum();
        println!(
            "bench: {} sent {counted} requests to cluster {CLUSTER}; wrk completed {completed}",
            setup.scenario.name()
        );
        if counted < completed {
            bail!(
                "{}: weir forwarded fewer requests ({counted}) than wrk completed ({completed}): the load did not go through it",
                setup.scenario.name()
            );
        }
    }
    for setup in setups
        .iter()
        .filter(|s| s.scenario == Scenario::EbpfUnclaimedDirect)
    {
        setup.check_went_direct()?;
    }
    drop(setups);
    drop(keep);
    Ok(())
}

/// The process's CPU time so far (every thread: the factory's too).
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A pod's socket factory (what `--pod-egress on` asks once per new
/// upstream connection) against making the same socket on the asking
/// thread (what `--pod-egress off` does): wall time and this process's CPU
/// per socket, `n` sockets each, one at a time from one task.
fn measure_factory(pod: &SimPod, n: u32) -> Result<()> {
    let factory =
        weir::inpod::SocketFactory::node()?.for_pod(std::sync::Arc::new(pod.netns().try_clone()?));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let remote: SocketAddr = "192.0.2.9:80".parse()?;
    let through_factory = |count: u32| {
        rt.block_on(async {
            for _ in 0..count {
                drop(factory.socket_for(remote).await?);
            }
            Ok::<_, std::io::Error>(())
        })
    };
    let here = |count: u32| -> std::io::Result<()> {
        for _ in 0..count {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.set_nodelay(true)?;
            drop(socket);
        }
        Ok(())
    };
    through_factory(100)?;
    here(100)?;
    let per = |total: Duration| total.as_secs_f64() * 1e6 / f64::from(n);
    let timed = |work: &dyn Fn(u32) -> std::io::Result<()>| -> Result<(f64, f64)> {
        let (wall, cpu) = (Instant::now(), process_cpu());
        work(n)?;
        Ok((per(wall.elapsed()), per(process_cpu() - cpu)))
    };
    let (hop_wall, hop_cpu) = timed(&through_factory)?;
    let (here_wall, here_cpu) = timed(&here)?;
    println!(
        "bench: pod socket factory: {hop_wall:.1} µs wall, {hop_cpu:.1} µs CPU per socket; made on the asking thread: {here_wall:.1} µs wall, {here_cpu:.1} µs CPU ({n} sockets each)"
    );
    Ok(())
}

fn parse_load(text: &str) -> Result<Mode, String> {
    Mode::parse_among(text, &Mode::INTERCEPT)
}

/// Share of requests that found an idle upstream connection between two
/// (requests sent, connections opened) readings.
fn pool_hits(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((rq0, cx0), (rq1, cx1)) = (before?, after?);
    let requests = rq1.checked_sub(rq0).filter(|&n| n > 0)?;
    let opened = cx1.saturating_sub(cx0);
    Some(1.0 - opened as f64 / requests as f64)
}

/// The median pool hit rate per scenario and load.
fn print_pool_hits(hits: &[(Scenario, Mode, f64)], scenarios: &[Scenario], loads: &[Mode]) {
    for &mode in loads {
        for &scenario in scenarios {
            let mut values: Vec<f64> = hits
                .iter()
                .filter(|(s, m, _)| *s == scenario && *m == mode)
                .map(|(_, _, h)| *h)
                .collect();
            if values.is_empty() {
                continue;
            }
            let median = benchkit::sample::median(&mut values);
            println!(
                "bench: pool hits {:<16} {:<22} {:>6.2} % (median of {})",
                mode.label(),
                scenario.name(),
                median * 100.0,
                values.len()
            );
        }
    }
}

fn print_sample(s: &Sample<Scenario>, rounds: u32, pool_hits: Option<f64>) {
    let mut line = s.progress_line(rounds);
    if s.kind.through_weir() {
        let _ = write!(line, "  weir {:>6.1} µs/req", s.cpu_us_per_request());
    }
    if let Some(h) = pool_hits {
        let _ = write!(line, "  pool hits {:>6.2} %", h * 100.0);
    }
    let _ = write!(line, "  others {:.1} cores", s.other_cores);
    if s.wrk.errors() > 0 {
        let _ = write!(
            line,
            "  ERRORS: {} (socket {}, non-2xx/3xx {})",
            s.wrk.errors(),
            s.wrk.socket_errors,
            s.wrk.non_2xx_3xx
        );
    }
    println!("{line}");
}

/// What stands between a client pod and the backend.
enum Via {
    Direct,
    /// `weir run` with the client pod enrolled.
    Agent(Box<AgentProcess>),
    /// A `weir proxy` in each pod's namespace behind iptables rules (the
    /// client's first: its outbound, then the server's inbound).
    Sidecars {
        proxies: Vec<PodProcess>,
        /// Held for their drop, which deletes the rules.
        _rules: Vec<IptablesRedirect>,
        logs: Vec<PathBuf>,
    },
}

struct Setup<'n> {
    /// Before the pods: fields drop in order, and weir and the iptables
    /// rules go while the pods' namespaces are still there.
    via: Via,
    scenario: Scenario,
    /// The client pod, where the load runs.
    pod: SimPod,
    url: String,
    /// `sim-server` in `server_pod`.
    backend: PodProcess,
    _server_pod: SimPod,
    node: &'n SimNode,
}

impl Setup<'_> {
    /// The weir processes whose CPU the run is charged.
    fn weir_pids(&self) -> Vec<u32> {
        match &self.via {
            Via::Direct => Vec::new(),
            Via::Agent(agent) => agent.pid().into_iter().collect(),
            Via::Sidecars { proxies, .. } => proxies.iter().map(PodProcess::pid).collect(),
        }
    }

    /// One wrk run from inside the client pod, with weir's CPU over it and
    /// how busy the rest of the machine was (less weir, the backend and wrk).
    fn run(&self, run: &Run<'_>) -> Result<Sample<Scenario>> {
        let load = &run.load;
        let weir = self.weir_pids();
        let backend = self.backend.pid();
        let (machine0, backend0, wrk0) = (
            measure::machine_busy()?,
            measure::cpu_time(&[backend])?,
            measure::children_cpu(),
        );
        let start = Instant::now();
        let weir0 = measure::cpu_time(&weir)?;
        let wrk = self
            .pod
            .spawn(run.command())?
            .wait_output(load.duration + Duration::from_secs(20))
            .context("wrk did not end")?;
        let cpu = measure::cpu_time(&weir)
            .with_context(|| format!("weir of {} exited during the run", self.scenario.name()))?
            .saturating_sub(weir0);
        let wall = start.elapsed();
        let wrk = report_from_output(&wrk)?;
        let ours = cpu
            + measure::cpu_time(&[backend])?.saturating_sub(backend0)
            + measure::children_cpu().saturating_sub(wrk0);
        let others = measure::machine_busy()?
            .saturating_sub(machine0)
            .saturating_sub(ours);
        Ok(Sample {
            kind: self.scenario,
            mode: load.mode,
            round: 0,
            wrk,
            cpu,
            other_cores: others.as_secs_f64() / wall.as_secs_f64().max(1e-3),
        })
    }

    /// weir's `weir_cluster_upstream_requests_total` for the backend cluster.
    fn upstream_requests(&self) -> Result<u64> {
        let text = match self.metrics()? {
            Some(text) => text,
            None => return Ok(0),
        };
        upstream_requests(&text, CLUSTER)
            .with_context(|| format!("no upstream request count for cluster {CLUSTER}"))
    }

    /// (upstream requests sent, upstream connections opened) of the backend
    /// cluster, through weir.
    fn upstream_counts(&self) -> Result<Option<(u64, u64)>> {
        let Some(text) = self.metrics()? else {
            return Ok(None);
        };
        let requests = upstream_requests(&text, CLUSTER);
        let opened = cluster_counter(&text, "weir_cluster_upstream_connections_total", CLUSTER);
        Ok(requests.zip(opened))
    }

    /// weir's metrics page (`None` without weir).
    fn metrics(&self) -> Result<Option<String>> {
        let (status, text) = match &self.via {
            Via::Direct => return Ok(None),
            Via::Agent(agent) => agent.admin_get(self.node, "/stats/prometheus")?,
            Via::Sidecars { .. } => {
                let admin: SocketAddr = SIDECAR_ADMIN.parse()?;
                self.pod
                    .netns()
                    .run(move || http_get(admin, "/stats/prometheus"))??
            }
        };
        anyhow::ensure!(status == 200, "metrics answered {status}");
        Ok(Some(text))
    }

    /// The load of an unclaimed-direct scenario never met weir's proxy (no
    /// protocol detected outbound) and the kernel counted its connections.
    fn check_went_direct(&self) -> Result<()> {
        let backend = self.url.trim_start_matches("http://").trim_end_matches('/');
        let labels = [
            ("direction", "outbound"),
            ("destination", backend),
            ("connection_security_policy", "none"),
        ];
        let mut direct = None;
        // The agent exports the kernel's counts every 2 s.
        for _ in 0..50 {
            let text = self.metrics()?.unwrap_or_default();
            direct = weir_tests::agent::metric_sample(
                &text,
                "weir_intercept_tcp_connections_opened_total",
                &labels,
            );
            if direct.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = self.metrics()?.unwrap_or_default();
        let detected: f64 = ["http1", "tls", "opaque"]
            .iter()
            .filter_map(|p| {
                weir_tests::agent::metric_sample(
                    &text,
                    "weir_intercept_protocol_detected_total",
                    &[("direction", "outbound"), ("protocol", p)],
                )
            })
            .sum();
        println!(
            "bench: {}: {} connections counted direct by the kernel, {detected} met the proxy",
            self.scenario.name(),
            direct.unwrap_or(0.0)
        );
        anyhow::ensure!(
            direct.is_some_and(|n| n > 0.0) && detected == 0.0,
            "{}: the load did not go direct{}",
            self.scenario.name(),
            self.log()
        );
        Ok(())
    }

    /// The end of weir's log, to explain a failure.
    fn log(&self) -> String {
        let text = match &self.via {
            Via::Direct => return String::new(),
            Via::Agent(agent) => agent.log(),
            Via::Sidecars { logs, .. } => logs
                .iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "\nweir's log (end):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// Sum of `weir_cluster_upstream_requests_total{...cluster="NAME"...} N` over its other labels.
fn upstream_requests(exposition: &str, cluster: &str) -> Option<u64> {
    cluster_counter(exposition, "weir_cluster_upstream_requests_total", cluster)
}

/// Sum of `NAME{...cluster="CLUSTER"...} N` over its other labels.
fn cluster_counter(exposition: &str, name: &str, cluster: &str) -> Option<u64> {
    let name = format!("{name}{{");
    let label = format!("cluster=\"{cluster}\"");
    let values: Vec<f64> = exposition
        .lines()
        .filter(|l| l.starts_with(&name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

/// The proxy config both weir scenarios share from the listener down:
/// `/` of any host to the backend cluster (`per_connection`: its
/// `max_requests_per_connection`, 0 unlimited).
fn weir_config(
    admin: &str,
    listener: &str,
    bind_to_port: bool,
    backend: SocketAddr,
    per_connection: u32,
) -> String {
    format!(
        r#"admin:
  address: "{admin}"
listeners:
  - name: backend
    address: "{listener}"
    bind_to_port: {bind_to_port}
    virtual_hosts:
      - name: backend
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            route: {{ cluster: {CLUSTER} }}
clusters:
  - name: {CLUSTER}
    endpoints: [{{ address: "{}", port: {} }}]
    upstream_http: {{ max_requests_per_connection: {per_connection} }}
"#,
        backend.ip(),
        backend.port()
    )
}

/// `weir run` (release, one worker; `--sk-msg on` for [`Scenario::EbpfSkMsg`],
/// `--pod-egress off` for [`Scenario::EbpfNodeEgress`]) with the client pod
/// enrolled, and the backend pod too where the scenario says (else listed,
/// not enrolled). Each agent has its own pin root and cgroup, so the eBPF
/// scenarios' agents leave each other's sockets alone.
fn start_agent(
    node: &SimNode,
    client: &SimPod,
    backend: &SimPod,
    pins: &PinRoot,
    scenario: Scenario,
    per_connection: u32,
) -> Result<AgentProcess> {
    let backend_addr = SocketAddr::new(backend.ip4.into(), BACKEND_PORT);
    let config = weir_config("{admin}", SERVICE, false, backend_addr, per_connection);
    // The client is alone on the node and this measures what interception
    // costs, not fair shares: its proxy CPU is not capped below the
    // machine's (weir's default share would hold a saturating client back).
    let annotations = [("weir.dev/enroll", "true"), ("weir.dev/max-cpu", "1024")];
    let mut client_annotations = annotations.to_vec();
    if scenario == Scenario::EbpfUnclaimedDirect {
        client_annotations.push(("weir.dev/unclaimed-traffic", "direct"));
    }
    let outside = [("weir.dev/enroll", "false")];
    let pods = format!(
        "pods:\n{}{}",
        client.pods_file_entry(&client_annotations),
        backend.pods_file_entry(if scenario.backend_enrolled() {
            &annotations
        } else {
            &outside
        })
    );
    let sk_msg = scenario == Scenario::EbpfSkMsg;
    let cgroup = node
        .cgroup_root()
        .join(format!("agent-{}", scenario.name()));
    std::fs::create_dir_all(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
    let pod_egress = scenario != Scenario::EbpfNodeEgress;
    let options = AgentOptions {
        workers: Some(1),
        extra_args: vec![
            format!("--sk-msg={}", if sk_msg { "on" } else { "off" }),
            format!("--pod-egress={}", if pod_egress { "on" } else { "off" }),
        ],
        log: "warn".to_owned(),
        cgroup: Some(cgroup),
        ..AgentOptions::default()
    };
    let agent = AgentProcess::start_with_options(node, &config, &pods, pins.path(), options)?;
    agent.wait_ready(node, Duration::from_secs(30))?;
    println!(
        "bench: weir run --sk-msg {} --pod-egress {} (pid {}) enrolled {} ({}); {SERVICE} is claimed by its bind_to_port: false listener",
        if sk_msg { "on" } else { "off" },
        if pod_egress { "on" } else { "off" },
        agent.pid().unwrap_or(0),
        client.name,
        client.ip4
    );
    Ok(agent)
}

/// The seeds' way, a sidecar in each pod: `weir proxy --workers 1` in the
/// client pod's namespace (not its cgroup) on 127.0.0.1:15001 behind an
/// OUTPUT REDIRECT of the service address, routing to the backend pod; and
/// one in the server pod's namespace on :15006 behind a PREROUTING REDIRECT
/// of the app's port, forwarding to the app on 127.0.0.1.
fn start_sidecars(
    client: &SimPod,
    server: &SimPod,
    backend: SocketAddr,
    per_connection: u32,
) -> Result<Via> {
    let outbound = format!("127.0.0.1:{SIDECAR_PORT}");
    let (client_proxy, client_log) = start_sidecar(client, &outbound, backend, per_connection)?;
    let inbound = format!("0.0.0.0:{SIDECAR_INBOUND_PORT}");
    let app = SocketAddr::from(([127, 0, 0, 1], BACKEND_PORT));
    let (server_proxy, server_log) = start_sidecar(server, &inbound, app, 0)?;
    let service: SocketAddr = SERVICE.parse()?;
    let rules = vec![
        IptablesRedirect::add(
            client,
            "OUTPUT",
            &[
                "-d",
                &service.ip().to_string(),
                "--dport",
                &service.port().to_string(),
            ],
            SIDECAR_PORT,
        )?,
        IptablesRedirect::add(
            server,
            "PREROUTING",
            &["--dport", &BACKEND_PORT.to_string()],
            SIDECAR_INBOUND_PORT,
        )?,
    ];
    for (pod, proxy, rule) in [
        (client, &client_proxy, &rules[0]),
        (server, &server_proxy, &rules[1]),
    ] {
        println!(
            "bench: weir proxy (pid {}) in {}'s namespace; iptables: {}",
            proxy.pid(),
            pod.name,
            rule.spec.join(" ")
        );
    }
    Ok(Via::Sidecars {
        proxies: vec![client_proxy, server_proxy],
        _rules: rules,
        logs: vec![client_log, server_log],
    })
}

/// `weir proxy --workers 1` in `pod`'s namespace, `listener` routing `/` to `to`.
fn start_sidecar(
    pod: &SimPod,
    listener: &str,
    to: SocketAddr,
    per_connection: u32,
) -> Result<(PodProcess, PathBuf)> {
    let dir = std::env::temp_dir().join(format!(
        "weir-bench-sidecar-{}-{}",
        std::process::id(),
        pod.netns_name()
    ));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("weir.yaml");
    std::fs::write(
        &config,
        weir_config(SIDECAR_ADMIN, listener, true, to, per_connection),
    )?;
    let log = dir.join("weir.log");
    let mut cmd = Command::new(weir_bin()?);
    cmd.arg("proxy")
        .arg("--config")
        .arg(&config)
        .args(["--workers", "1"])
        .env("RUST_LOG", "warn");
    let proxy = pod.spawn_outside_cgroup_logged(cmd, &log)?;
    let admin: SocketAddr = SIDECAR_ADMIN.parse()?;
    if !wait_ready_in(pod, admin, Duration::from_secs(20)) {
        bail!(
            "weir proxy in pod {} never became ready; its log:\n{}",
            pod.name,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Ok((proxy, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_requests_of_one_cluster() {
        let text = "# TYPE weir_cluster_upstream_requests_total counter\n\
            weir_cluster_upstream_requests_total{cluster=\"backend\",response_code_class=\"2xx\"} 1200\n\
            weir_cluster_upstream_requests_total{cluster=\"backend\",response_code_class=\"5xx\"} 3\n\
            weir_cluster_upstream_requests_total{cluster=\"other\",response_code_class=\"2xx\"} 50\n";
        assert_eq!(upstream_requests(text, "backend"), Some(1203));
        assert_eq!(upstream_requests(text, "back"), None);
        assert_eq!(upstream_requests("", "backend"), None);
    }

    #[test]
    fn both_weir_configs_validate() {
        let backend: SocketAddr = "192.0.2.2:8080".parse().unwrap();
        for text in [
            weir_config("127.0.0.1:0", SERVICE, false, backend, 0),
            weir_config(SIDECAR_ADMIN, "127.0.0.1:15001", true, backend, 1),
        ] {
            weir::config::parse_str(&text, "bench").unwrap();
        }
    }
}
