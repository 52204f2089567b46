//! The measuring half of `cargo xtask bench neighbours` (which builds this
//! binary in release mode, runs it as root and puts its report into
//! docs/benchmarks.md): what one misbehaving pod costs its neighbour.
//!
//! On a simulated node, each setup has the same five pods: `a` (the
//! attacker), `b` (its neighbour), `server` (B's service, 198.51.100.20:80),
//! `other` (A's service, 198.51.100.21:80, whose `/direct` the proxy answers
//! itself) and `sink` (a TCP echo on :9000, outside the mesh):
//!
//! - `weir`: one `weir run` for the node (release build, its default
//!   workers), `a`, `b`, `server` and `other` enrolled with default
//!   annotations;
//! - `sidecars`: an Envoy 1.40 in each of those pods, as Istio runs one:
//!   `--concurrency 2` (Istio's default for sidecars), as uid 1337 behind
//!   iptables REDIRECT of the pod's outbound TCP (OUTPUT, owner not 1337,
//!   not loopback) to :15001 and of its inbound TCP (PREROUTING) to :15006;
//!   the same routes as weir's listeners, and Istio's circuit breakers
//!   (no limit) on every cluster;
//! - `no-proxy`: nothing between the pods; B and A send straight to the
//!   pods' applications (`server` and `other` on :8080), the node's floor
//!   for each attack.
//!
//! B sends `latency-probe` requests to its service at 100 a second on one
//! keep-alive connection while A does one attack at a time (`alone`: none;
//! opaque: from when A's connections are all at the sink),
//! and alone for as long just before each attack (its baseline);
//! during each: the proxies' descriptors, RSS and CPU (sampled every 100 ms),
//! readiness probes every 500 ms, with weir a pod enrolled and served, and
//! weir's count of refused connections per pod; after each: how soon the
//! proxies' descriptors and RSS are back within 2x of before.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use benchkit::load::{Load, Mode, WrkReport, parse_wrk, report_from_output};
use benchkit::measure;
use benchkit::neighbours::{
    Attack, Footprint, ProxyUse, RECOVERY_SECS, Recovery, Row, Setup, failures, recovery_table,
    table,
};
use benchkit::progress::Progress;
use clap::Parser;
use weir_tests::agent::{AgentOptions, AgentProcess, http_get};
use weir_tests::iptables::IptablesRedirect;
use weir_tests::pins::PinRoot;
use weir_tests::sidecar::{
    SIDECAR_ADMIN, SIDECAR_INBOUND, SIDECAR_OUTBOUND, Sidecar, sidecar_rules, start_envoy,
};
use weir_tests::support::{require_root, sim_client, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod, wait};

#[path = "neighbours/proxies.rs"]
mod proxies;
use proxies::{envoy_config, weir_config};
#[path = "neighbours/attacker.rs"]
mod attacker;
use attacker::Attacker;

/// B's service (the `server` pod) and A's (the `other` pod); nothing
/// listens at either address: the proxies claim them.
const SERVICE: &str = "198.51.100.20";
const OTHER: &str = "198.51.100.21";
const APP_PORT: u16 = 8080;
const SINK_PORT: u16 = 9000;
/// B's requests a second, on one keep-alive connection.
const B_RATE: u32 = 100;
/// The floods' wrk connections (one thread), as in the other benchmarks.
const FLOOD_CONNECTIONS: u32 = 16;
/// The slow reader's download and how fast it reads it.
const SLOW_BYTES: u64 = 100_000_000;
const SLOW_RATE: u64 = 1 << 20;
/// Every how many opaque connections sends bytes.
const OPAQUE_TALKER_EVERY: &str = "10";

#[derive(Parser, Debug)]
#[command(
    about = "Noisy-neighbour benchmark on a simulated node (as root); see cargo xtask bench neighbours"
)]
struct Args {
    /// Seconds of B's requests under each attack.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    duration: u64,
    /// Attacks, comma separated, in the order they run (`alone` first gives
    /// the baseline the others are judged against).
    #[arg(long, value_delimiter = ',', default_value = "alone,cpu-direct,cpu-upstream,silent,opaque,slow-reader", value_parser = Attack::parse)]
    attacks: Vec<Attack>,
    /// Setups, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "weir,sidecars,no-proxy", value_parser = Setup::parse)]
    setups: Vec<Setup>,
    /// Connections of the silent and opaque attacks.
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    connections: u32,
    /// Pod A's `weir.dev/max-cpu` in the weir setup; absent: weir's default.
    #[arg(long)]
    a_max_cpu: Option<String>,
    /// Pod A's `weir.dev/unclaimed-traffic` in the weir setup (`direct`:
    /// its opaque connections to the sink, which no listener claims, go
    /// around the proxy); absent: the config's default (through it).
    #[arg(long)]
    a_unclaimed_traffic: Option<String>,
    /// wrk binary (the floods).
    #[arg(long, default_value = "wrk")]
    wrk: PathBuf,
    /// `latency-probe` binary (B).
    #[arg(long)]
    probe: PathBuf,
    /// Envoy binary (the sidecars).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Where the report goes (markdown).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    let node = SimNode::new().context("creating the simulated node")?;
    println!("bench: node {}", node.id());
    // Configs, logs and A's reports, beside the report, for a look afterwards.
    let dir = args.out.parent().unwrap_or(Path::new(".")).join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    // Declared before the meshes that use it, so it is dropped after.
    let pins = PinRoot::new();
    let mut meshes = Vec::new();
    for &setup in &args.setups {
        let mesh = Mesh::start(&node, setup, &args, &dir, pins.path())
            .with_context(|| format!("starting the {} setup", setup.name()))?;
        mesh.warm_up(&args)?;
        meshes.push(mesh);
    }
    let mut rows = Vec::new();
    let mut progress = Progress::new(
        args.attacks
            .iter()
            .flat_map(|&attack| std::iter::repeat_n(planned(attack, &args), meshes.len()))
            .collect(),
    );
    for (n, &attack) in args.attacks.iter().enumerate() {
        for mesh in &meshes {
            progress.begin(&format!("{} under {}", mesh.setup.name(), attack.name()));
            let row = mesh.run_attack(attack, n, &args).with_context(|| {
                format!(
                    "{} under {}{}",
                    mesh.setup.name(),
                    attack.name(),
                    mesh.log_tail()
                )
            })?;
            println!(
                "bench: {} under {}: A {}; B p50 {:.2} ms, p99 {:.2} ms, {} errors; proxies {:?}; /ready {}/{}; enrolled {:?}; refused {:?}; back after {:?} s",
                mesh.setup.name(),
                attack.name(),
                row.load,
                row.b.p50_us / 1e3,
                row.b.p99_us / 1e3,
                row.b.errors(),
                row.proxies,
                row.ready.0,
                row.ready.1,
                row.enrolled_ms,
                row.refused,
                row.recovery.secs,
            );
            rows.push(row);
        }
    }
    drop(meshes);

    let capped: String = a_annotations(&args)
        .iter()
        .map(|(key, value)| format!(" A annotated `{key}: {value}` in the weir setup."))
        .collect();
    let mut report = format!(
        "B: {B_RATE} requests/s on one keep-alive connection for {} s per attack; silent and opaque: {} connections.{capped}\n\n{}",
        args.duration,
        args.connections,
        table(&rows)
    );
    report.push_str("\nThe proxies' descriptors and RSS, all of them together:\n\n");
    report.push_str(&recovery_table(&rows));
    let failed = failures(&rows);
    report.push('\n');
    if failed.is_empty() {
        report.push_str("Every row meets the acceptance.\n");
    } else {
        report.push_str("Rows that miss the acceptance:\n\n");
        for line in &failed {
            report.push_str(&format!("- {line}\n"));
        }
    }
    println!("\n{report}");
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(())
}

/// How long one attack should take: B alone first (but for `alone`
/// itself), B under the attack, and a few seconds of set-up and recovery.
/// A's annotations beyond enrolment, in the weir setup: what the run
/// changes from weir's defaults.
fn a_annotations(args: &Args) -> Vec<(&'static str, String)> {
    let mut annotations = Vec::new();
    if let Some(cpu) = &args.a_max_cpu {
        annotations.push(("weir.dev/max-cpu", cpu.clone()));
    }
    if let Some(unclaimed) = &args.a_unclaimed_traffic {
        annotations.push(("weir.dev/unclaimed-traffic", unclaimed.clone()));
    }
    annotations
}

fn planned(attack: Attack, args: &Args) -> Duration {
    let windows = if attack == Attack::Alone { 1 } else { 2 };
    Duration::from_secs(windows * args.duration + 5)
}

/// The pods every setup has, their applications running.
struct Pods {
    /// First, so the processes end before their pods' namespaces go.
    _processes: Vec<PodProcess>,
    a: SimPod,
    b: SimPod,
    server: SimPod,
    other: SimPod,
    sink: SimPod,
    /// A process in the sink's network namespace (its echo server).
    sink_pid: u32,
}

impl Pods {
    fn start(node: &SimNode) -> Result<Pods> {
        let [a, b, server, other, sink] =
            ["a", "b", "server", "other", "sink"].map(|name| node.add_pod(name));
        let (a, b, server, other, sink) = (a?, b?, server?, other?, sink?);
        let mut processes: Vec<PodProcess> = [&a, &b, &server, &other, &sink]
            .iter()
            .map(|p| p.start_pause())
            .collect::<Result<_>>()?;
        processes.push(server.start_http_app()?.0);
        let app = format!("0.0.0.0:{APP_PORT}");
        processes.push(server_start(&other, &["http", "other", &app], APP_PORT)?);
        let sink_addr = format!("0.0.0.0:{SINK_PORT}");
        let sink_server = server_start(&sink, &["echo", &sink_addr], SINK_PORT)?;
        let sink_pid = sink_server.pid();
        processes.push(sink_server);
        Ok(Pods {
            _processes: processes,
            a,
            b,
            server,
            other,
            sink,
            sink_pid,
        })
    }
}

fn server_start(pod: &SimPod, args: &[&str], port: u16) -> Result<PodProcess> {
    pod.start_server(&sim_server(), args, port)
}

/// What stands between the pods.
enum Proxies {
    Weir(Box<AgentProcess>),
    /// An Envoy per pod, by the pod's name.
    Sidecars(Vec<Sidecar>),
    /// Nothing: the pods reach each other's applications.
    None,
}

struct Mesh<'n> {
    setup: Setup,
    node: &'n SimNode,
    dir: PathBuf,
    /// Before the rules and pods: fields drop in order.
    proxies: Proxies,
    _rules: Vec<IptablesRedirect>,
    pods: Pods,
    /// weir: a pod per attack, enrolled while the attack runs.
    late: Vec<(SimPod, PodProcess)>,
    /// The pods file's entries of the pods enrolled from the start.
    pods_file: String,
}

impl<'n> Mesh<'n> {
    fn start(
        node: &'n SimNode,
        setup: Setup,
        args: &Args,
        dir: &Path,
        pins: &Path,
    ) -> Result<Self> {
        let dir = dir.join(setup.name());
        std::fs::create_dir_all(&dir)?;
        let pods = Pods::start(node)?;
        let enroll = [("weir.dev/enroll", "true")];
        let a_extra = a_annotations(args);
        let a_annotations: Vec<(&str, &str)> = enroll
            .into_iter()
            .chain(a_extra.iter().map(|(k, v)| (*k, v.as_str())))
            .collect();
        let pods_file: String = pods.a.pods_file_entry(&a_annotations)
            + &[&pods.b, &pods.server, &pods.other]
                .iter()
                .map(|p| p.pods_file_entry(&enroll))
                .collect::<String>();
        let (proxies, rules, late) = match setup {
            Setup::Weir => {
                let late = args
                    .attacks
                    .iter()
                    .map(|a| {
                        let pod = node.add_pod(&format!("late-{}", a.name()))?;
                        let pause = pod.start_pause()?;
                        Ok((pod, pause))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let config = weir_config(pods.server.ip4, pods.other.ip4);
                let options = AgentOptions {
                    log: "warn".to_owned(),
                    ..AgentOptions::default()
                };
                let agent = AgentProcess::start_with_options(
                    node,
                    &config,
                    &format!("pods:\n{pods_file}"),
                    pins,
                    options,
                )?;
                agent.wait_ready(node, Duration::from_secs(30))?;
                println!(
                    "bench: weir run (pid {}) enrolled a, b, server and other",
                    agent.pid().unwrap_or(0)
                );
                (Proxies::Weir(Box::new(agent)), Vec::new(), late)
            }
            Setup::Sidecars => {
                let envoy = args
                    .envoy
                    .as_deref()
                    .context("the sidecars setup needs --envoy")?;
                let config = dir.join("envoy.yaml");
                std::fs::write(&config, envoy_config(pods.server.ip4, pods.other.ip4))?;
                let mut sidecars = Vec::new();
                let mut rules = Vec::new();
                for (role, pod) in [
                    ("a", &pods.a),
                    ("b", &pods.b),
                    ("server", &pods.server),
                    ("other", &pods.other),
                ] {
                    sidecars.push(start_envoy(envoy, &config, role, pod, &dir)?);
                    rules.extend(sidecar_rules(pod)?);
                }
                (Proxies::Sidecars(sidecars), rules, Vec::new())
            }
            Setup::NoProxy => (Proxies::None, Vec::new(), Vec::new()),
        };
        Ok(Mesh {
            setup,
            node,
            dir,
            proxies,
            _rules: rules,
            pods,
            late,
            pods_file,
        })
    }

    /// Where requests to `service` (whose application runs in `pod`) go:
    /// the service address the proxies claim, or without a proxy the
    /// application itself.
    fn reach(&self, service: &str, pod: &SimPod) -> SocketAddr {
        match self.proxies {
            Proxies::None => SocketAddr::new(pod.ip4.into(), APP_PORT),
            _ => SocketAddr::new(service.parse().expect("a literal address"), 80),
        }
    }

    /// Where B's requests go.
    fn service(&self) -> SocketAddr {
        self.reach(SERVICE, &self.pods.server)
    }

    /// Where A's requests and silent connections go.
    fn other(&self) -> SocketAddr {
        self.reach(OTHER, &self.pods.other)
    }

    /// Proof that every path an attack takes serves, before anything is measured.
    fn warm_up(&self, args: &Args) -> Result<()> {
        let b = self.probe_b(args, Duration::from_secs(1))?;
        if b.requests == 0 || b.errors() > 0 {
            bail!(
                "{}: B's requests to its service are not served cleanly: {b:?}{}",
                self.setup.name(),
                self.log_tail()
            );
        }
        let other = self.other();
        // Without a proxy, `other` answers `/direct` itself.
        let direct = match self.proxies {
            Proxies::None => "other from",
            _ => "answered by the proxy",
        };
        for (path, body) in [("/", "other from"), ("/direct", direct)] {
            let got = self.run_in_a(&["http", &other.to_string(), OTHER, path, "1"])?;
            anyhow::ensure!(
                got.starts_with(&format!("1 200 {body}")),
                "{}: A's GET {other}{path}: {got:?}{}",
                self.setup.name(),
                self.log_tail()
            );
        }
        let sink = SocketAddr::new(self.pods.sink.ip4.into(), SINK_PORT);
        let echo = self.run_in_a(&["echo", &sink.to_string(), "100000"])?;
        anyhow::ensure!(
            echo.trim() == "identical",
            "{}: A's echo through the sink: {echo:?}",
            self.setup.name()
        );
        println!(
            "bench: {}: B served ({} requests, p99 {:.2} ms); A reaches its service, the direct route and the sink",
            self.setup.name(),
            b.requests,
            b.p99_us / 1e3
        );
        Ok(())
    }

    fn run_in_a(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(sim_client());
        cmd.args(args);
        let out = self
            .pods
            .a
            .spawn(cmd)?
            .wait_output(Duration::from_secs(20))?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// B's requests: `latency-probe` in pod B at [`B_RATE`] on one connection.
    fn probe_b(&self, args: &Args, length: Duration) -> Result<WrkReport> {
        let mut cmd = Command::new(&args.probe);
        cmd.arg(format!("http://{}/", self.service()))
            .arg(format!("--rate={B_RATE}"))
            .arg("--connections=1")
            .arg(format!("--duration-ms={}", length.as_millis()))
            .arg("--slowest=12");
        let out = self
            .pods
            .b
            .spawn(cmd)?
            .wait_output(length + Duration::from_secs(20))
            .context("B's latency-probe did not end")?;
        // Which of B's requests make its p99 (the 10th slowest of 1000),
        // and when: bunched at the attack's start or spread through it.
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if line.starts_with("slowest:") {
                println!("bench: {} B {line}", self.setup.name());
            }
        }
        report_from_output(&out)
    }

    /// The proxy processes, by role.
    fn pids(&self) -> Vec<(String, u32)> {
        match &self.proxies {
            Proxies::Weir(agent) => vec![("weir".to_owned(), agent.pid().unwrap_or(0))],
            Proxies::Sidecars(sidecars) => sidecars
                .iter()
                .map(|s| (s.role.to_owned(), s.process.pid()))
                .collect(),
            Proxies::None => Vec::new(),
        }
    }

    /// weir's `/ready`, or B's sidecar's; `None` without a proxy.
    fn ready(&self) -> Option<bool> {
        let answer = match &self.proxies {
            Proxies::None => return None,
            Proxies::Weir(agent) => agent.admin_get(self.node, "/ready"),
            Proxies::Sidecars(_) => {
                let admin = SocketAddr::from(([127, 0, 0, 1], SIDECAR_ADMIN));
                self.pods
                    .b
                    .netns()
                    .run(move || http_get(admin, "/ready"))
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
            }
        };
        Some(answer.is_ok_and(|(status, _)| status == 200))
    }

    /// Connections weir refused, counted against A and against B.
    fn refused(&self) -> Result<Option<(f64, f64)>> {
        let Proxies::Weir(agent) = &self.proxies else {
            return Ok(None);
        };
        let (status, text) = agent.admin_get(self.node, "/stats/prometheus")?;
        anyhow::ensure!(status == 200, "weir's metrics answered {status}");
        Ok(Some((refused_of(&text, "a"), refused_of(&text, "b"))))
    }

    /// weir: enrols the late pod of the `n`th attack (and keeps the earlier
    /// ones) and starts its requests to the route weir answers itself.
    fn enrol_late(&self, n: usize) -> Result<Option<(PodProcess, u128)>> {
        let Proxies::Weir(agent) = &self.proxies else {
            return Ok(None);
        };
        let enroll = [("weir.dev/enroll", "true")];
        let late: String = self.late[..=n]
            .iter()
            .map(|(pod, _)| pod.pods_file_entry(&enroll))
            .collect();
        let since = epoch_us()?;
        agent.write_pods(&format!("pods:\n{}{late}", self.pods_file))?;
        let mut cmd = Command::new(sim_client());
        cmd.args([
            "until-ok",
            &format!("{OTHER}:80"),
            OTHER,
            "/direct",
            "5",
            "30000",
        ]);
        Ok(Some((self.late[n].0.spawn(cmd)?, since)))
    }

    /// One attack with B's requests under it, measured.
    fn run_attack(&self, attack: Attack, n: usize, args: &Args) -> Result<Row> {
        // B alone just before, for as long, so the machine's drift falls on both.
        let alone = match attack {
            Attack::Alone => None,
            _ => Some(self.probe_b(args, Duration::from_secs(args.duration))?),
        };
        let pids = self.pids();
        let all: Vec<u32> = pids.iter().map(|(_, p)| *p).collect();
        let before = footprint(&all)?;
        let refused_before = self.refused()?;
        let cpu_before = pids
            .iter()
            .map(|(_, p)| measure::cpu_time(&[*p]))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        let done = AtomicBool::new(false);
        let peaks = Mutex::new(vec![Footprint::default(); pids.len()]);
        let ready = Mutex::new((0u32, 0u32));
        let window = std::thread::scope(|s| {
            s.spawn(|| {
                // Bounded by the attack: `done` is set when it ends.
                while !done.load(Ordering::Relaxed) {
                    for (i, (_, pid)) in pids.iter().enumerate() {
                        let now = footprint(&[*pid]).unwrap_or_default();
                        let mut peaks = peaks.lock().unwrap_or_else(|e| e.into_inner());
                        peaks[i].fds = peaks[i].fds.max(now.fds);
                        peaks[i].rss_kib = peaks[i].rss_kib.max(now.rss_kib);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let Some(ok) = self.ready() else { break };
                    let mut r = ready.lock().unwrap_or_else(|e| e.into_inner());
                    r.0 += u32::from(ok);
                    r.1 += 1;
                    drop(r);
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
            let result = self.attack_window(attack, n, args);
            done.store(true, Ordering::Relaxed);
            result
        });
        let (b, enrolled_ms, load) = window?;
        let wall = started.elapsed().as_secs_f64();
        let peaks = peaks.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut proxies = Vec::new();
        for (((role, pid), peak), cpu0) in pids.iter().zip(peaks).zip(cpu_before) {
            let cpu = measure::cpu_time(&[*pid])
                .with_context(|| format!("proxy {role} (pid {pid}) exited during the attack"))?
                .saturating_sub(cpu0);
            proxies.push(ProxyUse {
                role: role.clone(),
                peak_fds: peak.fds,
                peak_rss_kib: peak.rss_kib,
                cpu_cores: cpu.as_secs_f64() / wall.max(1e-3),
            });
        }
        let refused = match (refused_before, self.refused()?) {
            (Some((a0, b0)), Some((a1, b1))) => Some((a1 - a0, b1 - b0)),
            _ => None,
        };
        let recovery = recover(&all, before)?;
        Ok(Row {
            attack,
            setup: self.setup,
            load,
            alone_p99_us: alone.map_or(b.p99_us, |a| a.p99_us),
            b,
            proxies,
            ready: ready.into_inner().unwrap_or_else(|e| e.into_inner()),
            enrolled_ms,
            refused,
            recovery,
        })
    }

    /// Starts A's attack, enrols a pod (weir), runs B's requests, ends the
    /// attack: B's report, the enrolment's milliseconds, what A managed.
    fn attack_window(
        &self,
        attack: Attack,
        n: usize,
        args: &Args,
    ) -> Result<(WrkReport, Option<Option<f64>>, String)> {
        let length = Duration::from_secs(args.duration);
        let attacker = Attacker::start(self, attack, args, length)?;
        let enrolling = self.enrol_late(n)?;
        let b = self.probe_b(args, length);
        let enrolled = match enrolling {
            None => None,
            Some((process, since)) => {
                let out = process.wait_output(Duration::from_secs(40))?;
                let text = String::from_utf8_lossy(&out.stdout);
                Some(
                    text.split_whitespace()
                        .nth(1)
                        .and_then(|us| us.parse::<u128>().ok())
                        .map(|at| at.saturating_sub(since) as f64 / 1e3),
                )
            }
        };
        let load = match attacker {
            Some(attacker) => attacker.end(args)?,
            None => "-".to_owned(),
        };
        Ok((b?, enrolled, load))
    }

    /// The end of the proxies' logs, to explain a failure.
    fn log_tail(&self) -> String {
        let text = match &self.proxies {
            Proxies::Weir(agent) => agent.log(),
            Proxies::Sidecars(sidecars) => sidecars
                .iter()
                .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n"),
            Proxies::None => return String::new(),
        };
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        format!(
            "\nthe proxies' log (end):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

/// Sum of `weir_intercept_connections_refused_total` over the series of `pod`.
fn refused_of(exposition: &str, pod: &str) -> f64 {
    let name = "weir_intercept_connections_refused_total{";
    let label = format!("pod=\"{pod}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with(name))
        .filter(|l| {
            let labels = &l[name.len() - 1..];
            labels.contains(&format!("{{{label}")) || labels.contains(&format!(",{label}"))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn footprint(pids: &[u32]) -> Result<Footprint> {
    if pids.is_empty() {
        // No proxy (the floor): nothing of its own to count.
        return Ok(Footprint::default());
    }
    Ok(Footprint {
        fds: measure::open_fds(pids)?,
        rss_kib: measure::memory(pids)?.rss_kib,
    })
}

/// Polls the proxies until their descriptors and RSS are back within the
/// factor of `before`, for [`RECOVERY_SECS`] at most.
fn recover(pids: &[u32], before: Footprint) -> Result<Recovery> {
    let ended = Instant::now();
    let mut after = footprint(pids)?;
    let back = wait::until(Duration::from_secs_f64(RECOVERY_SECS), || {
        after = footprint(pids).unwrap_or(after);
        after.back_to(&before)
    });
    Ok(Recovery {
        before,
        after,
        secs: back.then(|| ended.elapsed().as_secs_f64()),
    })
}

fn epoch_us() -> Result<u128> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros())
}

#[cfg(test)]
mod tests {
    use super::attacker::a_load;
    use super::*;

    #[test]
    fn refusals_of_one_pod_over_its_series() {
        let text = "# TYPE weir_intercept_connections_refused_total counter\n\
            weir_intercept_connections_refused_total{direction=\"outbound\",namespace=\"default\",pod=\"a\",reason=\"pod_connections\"} 1904\n\
            weir_intercept_connections_refused_total{direction=\"outbound\",namespace=\"default\",pod=\"a\",reason=\"pod_rate\"} 6\n\
            weir_intercept_connections_refused_total{direction=\"inbound\",namespace=\"default\",pod=\"ab\",reason=\"pod_rate\"} 50\n\
            weir_intercept_connections_refused_total{pod=\"b\",reason=\"node_descriptors\"} 2\n";
        assert_eq!(refused_of(text, "a"), 1910.0);
        assert_eq!(refused_of(text, "b"), 2.0);
        assert_eq!(refused_of(text, "c"), 0.0);
    }

    #[test]
    fn what_a_managed() {
        let wrk = "  Latency Distribution\n     50%  100.00us\n     99%    1.00ms\n  400000 requests in 10.00s, 1MB read\nRequests/sec:  40000.12\n";
        assert_eq!(a_load(Attack::CpuDirect, wrk).unwrap(), "40000 req/s");
        let idle = "opened 6000 of 6000 in 2140 ms, 0 failed\nheld 4096 open to the end, 1904 closed or reset by the peer\n";
        assert_eq!(
            a_load(Attack::Silent, idle).unwrap(),
            "6000 opened in 2.1 s, 1904 closed by the proxy"
        );
        assert_eq!(
            a_load(
                Attack::SlowReader,
                "reading\nread 10485760 bytes in 10012 ms\n"
            )
            .unwrap(),
            "10.0 MiB read"
        );
        assert!(a_load(Attack::Opaque, "opened 5 of 6000 in 9 ms, 5995 failed\n").is_err());
    }

    #[test]
    fn weir_config_validates() {
        let config = weir_config([192, 0, 2, 4].into(), [192, 0, 2, 5].into())
            .replace("{admin}", "127.0.0.1:15000");
        weir::config::parse_str(&config, "bench").unwrap();
    }

    #[test]
    fn envoy_config_has_every_route_and_istio_limits() {
        let config = envoy_config([192, 0, 2, 4].into(), [192, 0, 2, 5].into());
        for part in [
            "name: 198.51.100.20_80",
            "name: 198.51.100.21_80",
            "inline_string: \"answered by the proxy\"",
            "socket_address: { address: 192.0.2.5, port_value: 8080 }",
            "socket_address: { address: 127.0.0.1, port_value: 8080 }",
            "use_original_dst: true",
            "type: ORIGINAL_DST",
        ] {
            assert!(config.contains(part), "{part}:\n{config}");
        }
        assert_eq!(config.matches("max_connections: 4294967295").count(), 4);
        // Tabs would make it invalid YAML.
        assert!(!config.contains('\t'));
    }
}
