//! The measuring half of `cargo xtask bench node` (which builds this binary
//! in release mode, runs it as root and puts its report into
//! docs/benchmarks.md).
//!
//! What one agent costs on a node of many pods, and how soon it serves them.
//! For each size N: a simulated node with the large pod network
//! (`PodNet::LARGE`), N + `--steady` pod sandboxes (network namespace,
//! kubelet-layout cgroup, a pause process), and `weir run --pods FILE`
//! started with an empty pods file. weir claims the service address
//! 198.51.100.20:80 with a `direct_response` route; the node's router holds
//! that address with nothing listening, so an un-enrolled pod's call is
//! refused and any 200 there is weir's.
//!
//! - warm-up: one more pod enrolled, served once and un-enrolled, so that
//!   code run first for a pod is paged in before the baseline;
//! - baseline: the agent's footprint and idle CPU with no pod;
//! - burst: all N pods written into the pods file at once (a node restart).
//!   A sample of them (the first 100, then 100 evenly spaced: a probe in
//!   every pod would itself load the machine) runs `sim-client until-ok`
//!   from before the write; a pod's latency is its probe's first 200 minus
//!   the write. The agent's log gives when it had enrolled all N;
//! - footprint and idle CPU with N enrolled, no traffic;
//! - steady: `--steady` more pods added to the file one at a time, paced
//!   (`--steady-every-ms`) and each measured before the next;
//! - un-enrolment: the file emptied, until the agent logged each pod
//!   un-enrolled; then whether its descriptors and pins are back to the
//!   baseline and every probed pod's call is refused again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::footprint::{bpf_maps, fds_by_kind, threads};
use benchkit::latency::{ms, percentile};
use benchkit::progress::Progress;
use clap::Parser;
use weir_tests::agent::AgentProcess;
use weir_tests::pins::PinRoot;
use weir_tests::probe::{
    SERVICE, claimed_service_config, epoch_us, probe_result, refused_again, start_probe,
};
use weir_tests::support::require_root;
use weir_tests::{PodNet, PodProcess, SimNode, SimNodeOptions, SimPod, wait};

/// Probed pods of a burst: the first `SAMPLE_HEAD`, then `SAMPLE_SPREAD`
/// evenly spaced among the rest, the last pod included.
const SAMPLE_HEAD: usize = 100;
const SAMPLE_SPREAD: usize = 100;
/// How long the agent's CPU time is read without traffic.
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// The targets.
const TARGET_ONE_POD_P99: Duration = Duration::from_millis(100);
const TARGET_BURST: Duration = Duration::from_secs(2);
const TARGET_KIB_PER_POD: f64 = 16.0;
const TARGET_IDLE_PERCENT: f64 = 1.0;
/// Bounds on every wait.
const BURST_TIMEOUT: Duration = Duration::from_secs(120);
const STEADY_TIMEOUT: Duration = Duration::from_secs(30);
const UNENROL_TIMEOUT: Duration = Duration::from_secs(120);
/// Istio's published sizing of one Envoy sidecar, per 1000 requests/s
/// through it (Istio 1.15.3, "Performance and Scalability").
const ISTIO_SIDECAR_VCPU: f64 = 0.35;
const ISTIO_SIDECAR_MB: f64 = 40.0;
const ISTIO_SOURCE: &str = "https://istio.io/v1.15/docs/ops/deployment/performance-and-scalability";

#[derive(Parser, Debug)]
#[command(about = "What one weir agent costs on a node of many pods (as root)")]
struct Args {
    /// Node sizes: pods enrolled at once, each size on a node of its own.
    #[arg(long, value_delimiter = ',', default_value = "100,250,500",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    sizes: Vec<u32>,
    /// Pods added one at a time after the burst.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    steady: u32,
    /// The burst's probes' gap between attempts, ms (up to 200 probes at once).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    burst_gap_ms: u64,
    /// The steady arrival's pace: pod k is written at k times this, ms, or
    /// once pod k - 1 is served if that is later. Prime to the agent's
    /// 250 ms poll of the pods file, so the arrivals fall at every phase of
    /// it rather than each just after the tick that served the one before.
    #[arg(long, default_value_t = 337, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    steady_every_ms: u64,
    /// The steady arrival's probe gap, ms (one probe at a time).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100))]
    steady_gap_ms: u64,
    /// Where the report (Markdown tables and targets) is written.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    let capacity = PodNet::LARGE.capacity();
    for n in &args.sizes {
        anyhow::ensure!(
            n + args.steady <= capacity,
            "{n} + {} pods do not fit a node of {capacity}",
            args.steady
        );
    }
    let mut sizes = Vec::new();
    // A guess (pods made and enrolled, the steady arrival, the idle window),
    // corrected by the sizes that ran.
    let planned = args.sizes.iter().map(|&n| {
        Duration::from_millis(60 * u64::from(n)) + Duration::from_secs(15 + 2 * args.steady as u64)
    });
    let mut progress = Progress::new(planned.collect());
    for &n in &args.sizes {
        progress.begin(&format!("a node of {n} pods"));
        let size = run_size(n as usize, &args).with_context(|| format!("the node of {n} pods"))?;
        println!("bench: {n} pods: {}", size.summary());
        sizes.push(size);
    }
    let report = report(&sizes, &args);
    println!("\n{report}");
    std::fs::write(&args.out, &report).with_context(|| format!("writing {}", args.out.display()))
}

/// A pod's sandbox: its pause process goes first, then the pod.
struct Sandbox {
    _pause: PodProcess,
    sim: SimPod,
}

impl Sandbox {
    /// The `index`-th pod sandbox of `node`, its pause process running.
    fn new(node: &SimNode, index: usize) -> Result<Sandbox> {
        let sim = node.add_pod(&format!("pod-{index:04}"))?;
        Ok(Sandbox {
            _pause: sim.start_pause()?,
            sim,
        })
    }
}

/// Pods enrolled and un-enrolled before the baseline ([`warm_up_with`]):
/// their lines come first in the agent's log, which is counted whole.
const WARM_UP_PODS: usize = 1;

/// The pods file listing `pods`, each annotated for enrolment.
fn pods_file(pods: &[Sandbox]) -> String {
    if pods.is_empty() {
        return "pods: []\n".to_owned();
    }
    let mut text = "pods:\n".to_owned();
    for pod in pods {
        text.push_str(&pod.sim.pods_file_entry(&[("weir.dev/enroll", "true")]));
    }
    text
}

/// The indexes of a burst's probed pods: the first `head`, then `spread`
/// evenly spaced among the rest, ending with the last.
fn sample_indexes(n: usize, head: usize, spread: usize) -> Vec<usize> {
    let head = head.min(n);
    let rest = n - head;
    let mut picked: Vec<usize> = (0..head).collect();
    if rest <= spread {
        picked.extend(head..n);
    } else {
        picked.extend((1..=spread).map(|k| head + k * rest / spread - 1));
    }
    picked
}

/// Waits until the agent's log holds `count` lines ending in `suffix`
/// (`: enrolled`, `: un-enrolled`), polled every 2 ms; how long from `start`.
fn wait_logged(
    agent: &AgentProcess,
    suffix: &str,
    count: usize,
    start: Instant,
    timeout: Duration,
) -> Result<Duration> {
    loop {
        let seen = agent.logged(suffix);
        if seen >= count {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!(
                "the agent logged {seen} of {count} `{suffix}` within {timeout:?}; log:\n{}",
                agent.log()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Enrols one pod, has it served once and un-enrols it, before the
/// baseline is read: the code a pod's enrolment and first request run is
/// then paged in already. That is 0.9 MiB of the binary's text (smaps:
/// the binary's mapping grew by it with the first pods), once per agent
/// and not per pod, which on a node of 100 would read as 9 KiB a pod.
fn warm_up_with(agent: &AgentProcess, pod: &Sandbox) -> Result<()> {
    let probe = start_probe(&pod.sim, 10, STEADY_TIMEOUT)?;
    agent.write_pods(&pods_file(std::slice::from_ref(pod)))?;
    probe_result(
        probe,
        &pod.sim.name,
        STEADY_TIMEOUT + Duration::from_secs(5),
    )?;
    agent.write_pods(&pods_file(&[]))?;
    wait_logged(
        agent,
        ": un-enrolled",
        WARM_UP_PODS,
        Instant::now(),
        STEADY_TIMEOUT,
    )?;
    let (_, not_refused) = refused_again(&[&pod.sim])?;
    if let Some(why) = not_refused.first() {
        bail!("the warm-up pod was not refused again after un-enrolling: {why}");
    }
    Ok(())
}

/// What the agent holds at one point of a run.
#[derive(Debug, Clone, Default, PartialEq)]
struct Footprint {
    rss_kib: u64,
    /// Open descriptors by kind (`benchkit::footprint::fd_kind`).
    fds: BTreeMap<String, usize>,
    /// BPF maps held, and their `memlock` bytes.
    maps: usize,
    map_bytes: u64,
    /// Files below the agent's pin root.
    pins: usize,
    threads: usize,
}

impl Footprint {
    fn read(pid: u32, pins: &PinRoot) -> Result<Footprint> {
        let rss_kib = benchkit::measure::memory(&[pid])
            .with_context(|| format!("the agent (pid {pid}) is gone"))?
            .rss_kib;
        let (maps, map_bytes) = bpf_maps(pid)?;
        Ok(Footprint {
            rss_kib,
            fds: fds_by_kind(pid)?,
            maps,
            map_bytes,
            pins: pins.pinned_files().len(),
            threads: threads(pid)?,
        })
    }

    fn fd_total(&self) -> usize {
        self.fds.values().sum()
    }
}

/// The agent's CPU (user + system, all threads) over `IDLE_WINDOW`, as % of a core.
fn idle_cpu(pid: u32) -> Result<f64> {
    let before = benchkit::measure::cpu_time(&[pid])?;
    let start = Instant::now();
    // A measuring window, not a wait for something.
    std::thread::sleep(IDLE_WINDOW);
    let used = benchkit::measure::cpu_time(&[pid])? - before;
    Ok(used.as_secs_f64() / start.elapsed().as_secs_f64() * 100.0)
}

/// Everything measured on one node.
#[derive(Debug, Clone, Default)]
struct Size {
    pods: usize,
    /// Sandboxes made, before the agent started.
    sandboxes: Duration,
    baseline: Footprint,
    idle_base_percent: f64,
    /// Probed pods of the burst, latencies in µs, in pod order.
    burst_us: Vec<i64>,
    /// From the write to the last probed pod's first 200.
    burst_served: Duration,
    /// From the write to the agent's N-th `: enrolled` line.
    burst_enrolled: Duration,
    /// Read after the idle window with N enrolled, as the baseline is.
    loaded: Footprint,
    /// RSS right after the burst's probes were served, before the idle window.
    burst_rss_kib: u64,
    idle_percent: f64,
    steady_us: Vec<i64>,
    /// From the emptied file to the last `: un-enrolled` line.
    unenrolled: Duration,
    after: Footprint,
    /// Probed pods whose call is refused again, and the others.
    refused: usize,
    not_refused: Vec<String>,
}

impl Size {
    fn summary(&self) -> String {
        let b = sorted(&self.burst_us);
        let s = sorted(&self.steady_us);
        format!(
            "sandboxes made in {:.1?}; burst p99 {} max {}, all enrolled after {}; steady p99 {}; {:.1} KiB/pod ({:.1} right after the burst); idle {:.2} %; un-enrolled after {}",
            self.sandboxes,
            ms(percentile(&b, 99.0)),
            ms(*b.last().unwrap_or(&0)),
            ms(self.burst_enrolled.as_micros() as i64),
            ms(percentile(&s, 99.0)),
            self.kib_per_pod(),
            self.kib_per_pod_after_burst(),
            self.idle_percent,
            ms(self.unenrolled.as_micros() as i64),
        )
    }

    /// RSS and BPF map memory over the baseline, per enrolled pod, settled.
    fn kib_per_pod(&self) -> f64 {
        self.kib_per_pod_at(self.loaded.rss_kib)
    }

    /// The same with the RSS read right after the burst.
    fn kib_per_pod_after_burst(&self) -> f64 {
        self.kib_per_pod_at(self.burst_rss_kib)
    }

    fn kib_per_pod_at(&self, rss_kib: u64) -> f64 {
        let rss = rss_kib as f64 - self.baseline.rss_kib as f64;
        let maps = (self.loaded.map_bytes as f64 - self.baseline.map_bytes as f64) / 1024.0;
        (rss + maps) / self.pods.max(1) as f64
    }

    /// Nothing left after un-enrolling all: descriptors of every kind and
    /// pins as at the baseline, every probed call refused.
    fn clean(&self) -> bool {
        self.after.fds == self.baseline.fds
            && self.after.pins == self.baseline.pins
            && self.not_refused.is_empty()
    }
}

fn sorted(v: &[i64]) -> Vec<i64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

fn run_size(n: usize, args: &Args) -> Result<Size> {
    let node = SimNode::with_options(SimNodeOptions {
        net: PodNet::LARGE,
        ..SimNodeOptions::default()
    })
    .context("creating the simulated node")?;
    node.add_service_address(SERVICE.parse::<SocketAddr>()?.ip())?;
    let pins = PinRoot::new();
    let total = n + args.steady as usize;
    let made = Instant::now();
    let pods: Vec<Sandbox> = (0..total)
        .map(|i| Sandbox::new(&node, i))
        .collect::<Result<_>>()?;
    let warm_up = Sandbox::new(&node, total)?;
    let sandboxes = made.elapsed();
    println!(
        "bench: node {} with {total} pod sandboxes in {sandboxes:.1?}",
        node.id()
    );
    let agent = AgentProcess::start(
        &node,
        &claimed_service_config("{admin}"),
        &pods_file(&[]),
        pins.path(),
    )?;
    agent.wait_ready(&node, Duration::from_secs(30))?;
    let pid = agent.pid().context("the agent runs")?;
    warm_up_with(&agent, &warm_up)?;
    // Idle first: the baseline is read after it, once the admin connection
    // of the readiness check has surely closed.
    let idle_base_percent = idle_cpu(pid)?;
    let baseline = Footprint::read(pid, &pins)?;

    // The burst.
    let (burst, steady) = pods.split_at(n);
    let sample = sample_indexes(n, SAMPLE_HEAD, SAMPLE_SPREAD);
    let probes: Vec<PodProcess> = sample
        .iter()
        .map(|&i| start_probe(&burst[i].sim, args.burst_gap_ms, BURST_TIMEOUT))
        .collect::<Result<_>>()?;
    let written_at = Instant::now();
    let written = epoch_us()?;
    agent.write_pods(&pods_file(burst))?;
    let burst_enrolled = wait_logged(
        &agent,
        ": enrolled",
        WARM_UP_PODS + n,
        written_at,
        BURST_TIMEOUT,
    )?;
    let mut burst_us = Vec::with_capacity(sample.len());
    let mut last = written;
    for (probe, &i) in probes.into_iter().zip(&sample) {
        let served = probe_result(probe, &burst[i].sim.name, Duration::from_secs(10))?;
        burst_us.push(served - written);
        last = last.max(served);
    }
    let burst_served = Duration::from_micros((last - written).max(0) as u64);
    // Read once right after the burst's traffic and once after the idle
    // window, as the baseline is: what malloc keeps free from the probes'
    // connections is not what a pod costs, and the settled figure is the
    // one judged.
    let burst_rss_kib = Footprint::read(pid, &pins)?.rss_kib;
    let idle_percent = idle_cpu(pid)?;
    let loaded = Footprint::read(pid, &pins)?;

    // The steady arrival, on top of the N enrolled.
    let mut steady_us = Vec::with_capacity(steady.len());
    let paced = Instant::now();
    for k in 0..steady.len() {
        let slot = paced + Duration::from_millis(args.steady_every_ms) * k as u32;
        // Pacing the arrivals (bounded: at most `steady_every_ms`), not a wait for something.
        std::thread::sleep(slot.saturating_duration_since(Instant::now()));
        let probe = start_probe(&steady[k].sim, args.steady_gap_ms, STEADY_TIMEOUT)?;
        let written = epoch_us()?;
        agent.write_pods(&pods_file(&pods[..n + k + 1]))?;
        let served = probe_result(
            probe,
            &steady[k].sim.name,
            STEADY_TIMEOUT + Duration::from_secs(5),
        )?;
        steady_us.push(served - written);
    }
    wait_logged(
        &agent,
        ": enrolled",
        WARM_UP_PODS + total,
        Instant::now(),
        STEADY_TIMEOUT,
    )?;

    // Un-enrolling all.
    let emptied = Instant::now();
    agent.write_pods(&pods_file(&[]))?;
    let unenrolled = wait_logged(
        &agent,
        ": un-enrolled",
        WARM_UP_PODS + total,
        emptied,
        UNENROL_TIMEOUT,
    )?;
    // Descriptors close as the pods' tasks end: wait (bounded) for the baseline.
    wait::until(Duration::from_secs(5), || {
        Footprint::read(pid, &pins).is_ok_and(|f| f.fds == baseline.fds && f.pins == baseline.pins)
    });
    let after = Footprint::read(pid, &pins)?;
    let checked: Vec<&SimPod> = sample
        .iter()
        .map(|&i| &burst[i].sim)
        .chain(steady.iter().map(|pod| &pod.sim))
        .collect();
    let (refused, not_refused) = refused_again(&checked)?;
    Ok(Size {
        pods: n,
        sandboxes,
        baseline,
        idle_base_percent,
        burst_us,
        burst_served,
        burst_enrolled,
        loaded,
        burst_rss_kib,
        idle_percent,
        steady_us,
        unenrolled,
        after,
        refused,
        not_refused,
    })
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn report(sizes: &[Size], args: &Args) -> String {
    let mut t = String::new();
    t.push_str("Burst: all N pods written into the pods file at once. *p50/p99/max* and *all probed served*: from the write to each probed pod's first 200; *all enrolled*: from the write to the agent's N-th `pod <ns>/<name>: enrolled` log line:\n\n");
    t.push_str("| pods | probed | p50 | p99 | max | all probed served | all enrolled (log) | target: all within 2 s | met |\n");
    t.push_str("|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for s in sizes {
        let b = sorted(&s.burst_us);
        let ok = s.burst_enrolled <= TARGET_BURST && s.burst_served <= TARGET_BURST;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | < 2 s | {} |",
            s.pods,
            b.len(),
            ms(percentile(&b, 50.0)),
            ms(percentile(&b, 99.0)),
            ms(*b.last().unwrap_or(&0)),
            ms(s.burst_served.as_micros() as i64),
            ms(s.burst_enrolled.as_micros() as i64),
            met(ok)
        );
    }
    let _ = write!(
        t,
        "\nSteady arrival: {} pods added to the file one at a time on top of the N enrolled, one every {} ms (or once the one before is served, if later), each from the write to its first 200:\n\n",
        args.steady, args.steady_every_ms
    );
    t.push_str("| node of | pods | p50 | p99 | max | target: p99 < 100 ms | met |\n");
    t.push_str("|---:|---:|---:|---:|---:|---|---|\n");
    for s in sizes {
        let v = sorted(&s.steady_us);
        let p99 = percentile(&v, 99.0);
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | < 100 ms | {} |",
            s.pods,
            v.len(),
            ms(percentile(&v, 50.0)),
            ms(p99),
            ms(*v.last().unwrap_or(&0)),
            met(p99 < TARGET_ONE_POD_P99.as_micros() as i64)
        );
    }
    t.push_str("\nThe agent's memory and idle CPU, with no pod and with N enrolled (no traffic), each read after the 5 s idle window. *per pod*: (RSS + BPF map `memlock`) over the no-pod baseline, / N; *right after the burst*: the same with the RSS read as the last probed pod was served, before the window (memory malloc still held free from the probes' connections). CPU: `utime + stime` of all its threads over 5 s, as % of one core (one clock tick, 10 ms, is 0.2 %):\n\n");
    t.push_str("| pods | RSS no pod | RSS with N | BPF maps (memlock) no pod | with N | per pod | right after the burst | target: < 16 KiB | met | idle CPU no pod | with N | target: < 1 % | met |\n");
    t.push_str("|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|---|\n");
    for s in sizes {
        let _ = writeln!(
            t,
            "| {} | {:.1} MiB | {:.1} MiB | {} in {} | {} in {} | {:.1} KiB | {:.1} KiB | < 16 KiB | {} | {:.2} % | {:.2} % | < 1 % | {} |",
            s.pods,
            s.baseline.rss_kib as f64 / 1024.0,
            s.loaded.rss_kib as f64 / 1024.0,
            kib(s.baseline.map_bytes),
            s.baseline.maps,
            kib(s.loaded.map_bytes),
            s.loaded.maps,
            s.kib_per_pod(),
            s.kib_per_pod_after_burst(),
            met(s.kib_per_pod() < TARGET_KIB_PER_POD),
            s.idle_base_percent,
            s.idle_percent,
            met(s.idle_percent < TARGET_IDLE_PERCENT),
        );
    }
    t.push_str(&fd_table(sizes));
    t.push_str("\nUn-enrolling all: the pods file emptied, until the agent logged `pod <ns>/<name>: un-enrolled` for each; then the agent's descriptors (by kind) and the files below its pin root against the no-pod baseline, and each probed pod's call to the service refused again by the node:\n\n");
    t.push_str("| pods | all un-enrolled after | fds no pod / with N / after | pins no pod / with N / after | calls refused again | target: nothing left | met |\n");
    t.push_str("|---:|---:|---:|---:|---:|---|---|\n");
    for s in sizes {
        let total = s.pods + s.steady_us.len();
        let checked = s.refused + s.not_refused.len();
        let _ = writeln!(
            t,
            "| {total} | {} | {} / {} / {} | {} / {} / {} | {}/{checked} | nothing left | {} |",
            ms(s.unenrolled.as_micros() as i64),
            s.baseline.fd_total(),
            s.loaded.fd_total(),
            s.after.fd_total(),
            s.baseline.pins,
            s.loaded.pins,
            s.after.pins,
            s.refused,
            met(s.clean()),
        );
        if s.after.fds != s.baseline.fds {
            let _ = writeln!(
                t,
                "\n  descriptors left on the node of {}: no pod {:?}, after {:?}\n",
                s.pods, s.baseline.fds, s.after.fds
            );
        }
        if let Some(first) = s.not_refused.first() {
            let _ = writeln!(
                t,
                "\n  not refused again: {first} (and {} more)\n",
                s.not_refused.len() - 1
            );
        }
    }
    t.push_str(&sidecar_table(sizes));
    t
}

/// weir's whole agent beside what Istio's published sizing gives N sidecars.
fn sidecar_table(sizes: &[Size]) -> String {
    let mut t = format!(
        "\nBeside sidecars: Istio's published sizing ([Performance and Scalability]({ISTIO_SOURCE}), the edition for Istio 1.15.3) is that the Envoy proxy uses {ISTIO_SIDECAR_VCPU} vCPU and {ISTIO_SIDECAR_MB:.0} MB memory per 1000 requests per second going through it. It gives no figure for an idle sidecar, so the sidecar column is N times that figure, for pods each serving 1000 requests/s, while weir's is idle: the conditions differ, and the column says what one sidecar per pod is sized at, not what it was measured at here.\n\n"
    );
    t.push_str("| pods | weir: agent RSS + BPF maps, idle | weir: per pod | weir: idle CPU, whole node | N sidecars at 1000 req/s each: memory | CPU |\n");
    t.push_str("|---:|---:|---:|---:|---:|---:|\n");
    for s in sizes {
        let total_mib = (s.loaded.rss_kib as f64 + s.loaded.map_bytes as f64 / 1024.0) / 1024.0;
        let _ = writeln!(
            t,
            "| {} | {total_mib:.1} MiB | {:.1} KiB | {:.2} % of a core | {:.0} MB | {:.0} vCPU |",
            s.pods,
            s.kib_per_pod(),
            s.idle_percent,
            ISTIO_SIDECAR_MB * s.pods as f64,
            ISTIO_SIDECAR_VCPU * s.pods as f64,
        );
    }
    t
}

/// Open descriptors by kind: the no-pod baseline, and the added ones per
/// enrolled pod at each size.
fn fd_table(sizes: &[Size]) -> String {
    let mut t = String::from(
        "\nThe agent's open descriptors by kind (`readlink /proc/<pid>/fd/*`): with no pod, and over that per enrolled pod:\n\n| kind |",
    );
    let mut kinds: Vec<&String> = sizes
        .iter()
        .flat_map(|s| s.baseline.fds.keys().chain(s.loaded.fds.keys()))
        .collect();
    kinds.sort();
    kinds.dedup();
    for s in sizes {
        let _ = write!(t, " no pod ({}) | per pod ({}) |", s.pods, s.pods);
    }
    t.push_str("\n|---|");
    t.push_str(&"---:|---:|".repeat(sizes.len()));
    t.push('\n');
    let row = |t: &mut String, label: &str, count: &dyn Fn(&Footprint) -> usize| {
        let _ = write!(t, "| {label} |");
        for s in sizes {
            let (base, with) = (count(&s.baseline), count(&s.loaded));
            let per = (with as f64 - base as f64) / s.pods.max(1) as f64;
            let _ = write!(t, " {base} | {per:.2} |");
        }
        t.push('\n');
    };
    for kind in kinds {
        row(&mut t, kind, &|f| f.fds.get(kind).copied().unwrap_or(0));
    }
    row(&mut t, "**all**", &|f| f.fd_total());
    row(&mut t, "threads (not descriptors)", &|f| f.threads);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        assert_eq!(sample_indexes(5, 100, 100), vec![0, 1, 2, 3, 4]);
        assert_eq!(sample_indexes(150, 100, 100), (0..150).collect::<Vec<_>>());
        let s = sample_indexes(500, 100, 100);
        assert_eq!(s.len(), 200);
        assert_eq!(s[99..102], [99, 103, 107]);
        assert_eq!(s.last(), Some(&499));
        let s = sample_indexes(250, 100, 100);
        assert_eq!(s.len(), 200);
        assert_eq!(s.last(), Some(&249));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }

    fn footprint(rss_kib: u64, fds: &[(&str, usize)], map_bytes: u64, pins: usize) -> Footprint {
        Footprint {
            rss_kib,
            fds: fds.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            maps: 10,
            map_bytes,
            pins,
            threads: 8,
        }
    }

    #[test]
    fn report_judges_the_targets() {
        let base = footprint(10_240, &[("socket", 4), ("bpf-map", 10)], 1 << 20, 12);
        let good = Size {
            pods: 100,
            baseline: base.clone(),
            burst_us: (1..=100).map(|i| i * 10_000).collect(),
            burst_served: Duration::from_millis(1000),
            burst_enrolled: Duration::from_millis(900),
            loaded: footprint(
                10_240 + 1_200,
                &[("socket", 404), ("bpf-map", 10)],
                1 << 20,
                12,
            ),
            burst_rss_kib: 10_240 + 2_000,
            idle_percent: 0.2,
            steady_us: (1..=20).map(|i| i * 4_000).collect(),
            unenrolled: Duration::from_millis(300),
            after: base.clone(),
            refused: 120,
            ..Size::default()
        };
        let bad = Size {
            pods: 500,
            baseline: base.clone(),
            burst_us: vec![2_500_000],
            burst_served: Duration::from_millis(2500),
            burst_enrolled: Duration::from_millis(2100),
            loaded: footprint(
                10_240 + 10_000,
                &[("socket", 2004), ("bpf-map", 10)],
                1 << 20,
                12,
            ),
            burst_rss_kib: 10_240 + 10_000,
            idle_percent: 1.5,
            steady_us: vec![150_000],
            after: footprint(10_240, &[("socket", 6), ("bpf-map", 10)], 1 << 20, 13),
            refused: 119,
            not_refused: vec!["pod-0001: answered".into()],
            ..Size::default()
        };
        assert!((good.kib_per_pod() - 12.0).abs() < 1e-9);
        assert!((good.kib_per_pod_after_burst() - 20.0).abs() < 1e-9);
        assert!(good.clean() && !bad.clean());
        let args = Args::parse_from(["bench", "--out", "x"]);
        let r = report(&[good, bad], &args);
        assert!(
            r.contains(
                "| 100 | 100 | 500 ms | 990 ms | 1000 ms | 1000 ms | 900 ms | < 2 s | met |"
            ),
            "{r}"
        );
        assert!(r.contains("| 500 | 1 | 2500 ms | 2500 ms | 2500 ms | 2500 ms | 2100 ms | < 2 s | **not met** |"), "{r}");
        assert!(
            r.contains("| 100 | 20 | 40 ms | 80 ms | 80 ms | < 100 ms | met |"),
            "{r}"
        );
        assert!(
            r.contains("| 12.0 KiB | 20.0 KiB | < 16 KiB | met | 0.00 % | 0.20 % | < 1 % | met |"),
            "{r}"
        );
        assert!(
            r.contains("| 20.0 KiB | 20.0 KiB | < 16 KiB | **not met** |"),
            "{r}"
        );
        assert!(r.contains("| socket | 4 | 4.00 | 4 | 4.00 |"), "{r}");
        assert!(
            r.contains(
                "| 120 | 300 ms | 14 / 414 / 14 | 12 / 12 / 12 | 120/120 | nothing left | met |"
            ),
            "{r}"
        );
        assert!(
            r.contains("| 14 / 2014 / 16 | 12 / 12 / 13 | 119/120 | nothing left | **not met** |"),
            "{r}"
        );
        assert!(
            r.contains("| 100 | 12.2 MiB | 12.0 KiB | 0.20 % of a core | 4000 MB | 35 vCPU |"),
            "{r}"
        );
    }
}
