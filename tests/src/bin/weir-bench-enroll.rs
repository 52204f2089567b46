//! The measuring half of `cargo xtask bench enroll` (which builds this binary
//! in release mode, runs it as root with the cached kube-apiserver, and puts
//! its report into docs/benchmarks.md).
//!
//! How soon a pod the API server reports running on the node is enrolled
//! and served by weir. A real API server with `daemonset/` applied, and the
//! agent run as the DaemonSet's container runs it on a simulated node
//! (`weir_tests::kube::Cluster`); this process plays the kubelet. weir claims
//! the service address 198.51.100.20:80 with a `direct_response` route, and
//! the node's router refuses connections to it, so any answer there is weir's.
//!
//! For each pod: its API object and sandbox (netns, cgroup, a pause process)
//! first, then a probe in the pod (`sim-client until-ok`: a GET on a new
//! connection every few ms), then the status patch (phase Running, podIP,
//! podIPs). The latency is from the moment the API server acknowledged the
//! patch to the wall-clock time of the probe's first 200.
//!
//! - steady: pods one after another, each measured before the next;
//! - burst: as many more pods with API objects, sandboxes and probes ready,
//!   then all status patches as fast as the API server takes them (a node
//!   restart);
//! - un-enrolment: every pod deleted with grace 0, until the agent has logged
//!   `pod ns/name: un-enrolled` for each; then every pod's call to the
//!   service address must be refused again.
//!
//! The agent's RSS and open descriptors are read from /proc at each stage.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::latency::{ms, ms_list, percentile};
use benchkit::progress::Progress;
use clap::Parser;
use futures::StreamExt;
use kube::api::DeleteParams;
use weir_tests::kube::{ADMIN, Cluster, KubePod, NAMESPACE, report_running};
use weir_tests::probe::{
    SERVICE, claimed_service_config, epoch_us, probe_result, refused_again, start_probe,
};
use weir_tests::support::require_root;
use weir_tests::{SimNode, SimPod};

/// The target for each arrival's p99.
const TARGET: Duration = Duration::from_secs(1);
/// A simulated node holds 248 pods; both arrivals together must fit.
const MAX_PODS_PER_ARRIVAL: u32 = 120;

#[derive(Parser, Debug)]
#[command(about = "Enrolment latency on a simulated node with a real API server (as root)")]
struct Args {
    /// Pods per arrival (steady, then burst).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PODS_PER_ARRIVAL)))]
    pods: u32,
    /// The probe's gap between attempts in the steady arrival, ms.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=50))]
    steady_gap_ms: u64,
    /// The probes' gap in the burst (every pod's probe runs at once), ms.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    burst_gap_ms: u64,
    /// Status patches (burst) and deletes in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    in_flight: u32,
    /// Where the report (Markdown tables and targets) is written.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    require_root();
    // Declared in this order so they drop in reverse: pods, agent, API, node.
    let node = SimNode::new().context("creating the simulated node")?;
    node.add_service_address(SERVICE.parse::<SocketAddr>()?.ip())?;
    let cluster = Cluster::start(&node)?;
    let deployed = cluster.run_agent(&node, config())?;
    let agent = &deployed.agent;
    let pid = agent.pid().context("the agent runs")?;
    println!(
        "bench: node {}, weir pid {pid}, API server {}",
        node.id(),
        cluster.server.url()
    );
    let mut stages = vec![Stage::read("started, no pod", 0, pid)?];
    let mut pods: Vec<KubePod> = Vec::new();
    let mut progress = Progress::new(planned(args.pods));

    progress.begin(&format!("steady arrival, {} pods one at a time", args.pods));
    let steady = steady(&cluster, &node, &mut pods, &args).with_context(|| agent.log())?;
    println!("bench: steady: {}", steady.summary());
    stages.push(Stage::read("after the steady arrival", pods.len(), pid)?);

    progress.begin(&format!("burst, {} pods at once", args.pods));
    let burst = burst(&cluster, &node, &mut pods, &args).with_context(|| agent.log())?;
    println!("bench: burst: {}", burst.summary());
    stages.push(Stage::read("after the burst", pods.len(), pid)?);

    progress.begin(&format!("un-enrolment of {} pods", pods.len()));
    let gone =
        unenrol_all(&cluster, &pods, &args, &|| agent.log(), pid).with_context(|| agent.log())?;
    println!(
        "bench: un-enrolment of {}: last after {:.0?}",
        gone.pods, gone.last
    );
    stages.push(Stage::read("after deleting every pod", 0, pid)?);

    let report = report(&steady, &burst, &gone, &stages);
    println!("\n{report}");
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    drop(pods);
    Ok(())
}

/// How long each stage should take with `pods` pods per arrival: a pod's
/// object, sandbox and probe made one after another (steady), made ahead
/// and then patched together (burst), every pod deleted (un-enrolment).
fn planned(pods: u32) -> Vec<Duration> {
    let per_pod = |ms: u64| Duration::from_millis(ms * u64::from(pods));
    vec![
        per_pod(500),
        per_pod(400),
        per_pod(100) + Duration::from_secs(5),
    ]
}

/// The ConfigMap's `config.yaml`: the DaemonSet's admin address and the
/// claimed service address answering 200 itself.
fn config() -> String {
    claimed_service_config(ADMIN)
}

/// One arrival's latencies, µs, in pod order.
struct Arrival {
    latencies_us: Vec<i64>,
    /// From the first status patch sent to the last pod served.
    all_served: Duration,
}

impl Arrival {
    fn sorted(&self) -> Vec<i64> {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        v
    }

    fn summary(&self) -> String {
        let s = self.sorted();
        format!(
            "{} pods, p50 {} p99 {} max {}, all served after {}",
            s.len(),
            ms(percentile(&s, 50.0)),
            ms(percentile(&s, 99.0)),
            ms(*s.last().unwrap_or(&0)),
            ms(self.all_served.as_micros() as i64)
        )
    }
}

fn steady(
    cluster: &Cluster,
    node: &SimNode,
    pods: &mut Vec<KubePod>,
    args: &Args,
) -> Result<Arrival> {
    let timeout = Duration::from_secs(30);
    let mut latencies_us = Vec::new();
    let start = Instant::now();
    for i in 0..args.pods {
        let name = format!("steady-{i:03}");
        let mut pod = cluster.create_pod(node, &name, true)?;
        pod.processes.push(pod.sim.start_pause()?);
        let probe = start_probe(&pod.sim, args.steady_gap_ms, timeout)?;
        cluster.report_running(&pod.sim)?;
        let acked = epoch_us()?;
        let served = probe_result(probe, &name, timeout + Duration::from_secs(5))?;
        latencies_us.push(served - acked);
        pods.push(pod);
    }
    Ok(Arrival {
        latencies_us,
        all_served: start.elapsed(),
    })
}

fn burst(
    cluster: &Cluster,
    node: &SimNode,
    pods: &mut Vec<KubePod>,
    args: &Args,
) -> Result<Arrival> {
    let timeout = Duration::from_secs(120);
    let first = pods.len();
    let mut probes = Vec::new();
    for i in 0..args.pods {
        let mut pod = cluster.create_pod(node, &format!("burst-{i:03}"), true)?;
        pod.processes.push(pod.sim.start_pause()?);
        pods.push(pod);
    }
    for pod in &pods[first..] {
        probes.push(start_probe(&pod.sim, args.burst_gap_ms, timeout)?);
    }
    let api = cluster.pods();
    let sent = epoch_us()?;
    let acks: Vec<Result<(usize, i64)>> = cluster.rt.block_on(
        futures::stream::iter(pods[first..].iter().enumerate())
            .map(|(i, pod)| {
                let api = &api;
                async move {
                    report_running(api, &pod.sim).await?;
                    Ok((i, epoch_us()?))
                }
            })
            .buffer_unordered(args.in_flight as usize)
            .collect(),
    );
    let mut acked = vec![0i64; probes.len()];
    for ack in acks {
        let (i, at) = ack?;
        acked[i] = at;
    }
    let deadline = Instant::now() + timeout + Duration::from_secs(5);
    let mut latencies_us = Vec::new();
    let mut last = sent;
    for ((probe, pod), acked) in probes.into_iter().zip(&pods[first..]).zip(acked) {
        let left = deadline.saturating_duration_since(Instant::now());
        let served = probe_result(probe, &pod.sim.name, left.max(Duration::from_secs(1)))?;
        latencies_us.push(served - acked);
        last = last.max(served);
    }
    Ok(Arrival {
        latencies_us,
        all_served: Duration::from_micros((last - sent).max(0) as u64),
    })
}

/// Every pod deleted (grace 0) until the agent has un-enrolled them all.
struct Unenrolment {
    pods: usize,
    /// From the first delete sent to the last acknowledged.
    deletes: Duration,
    /// From the first delete sent to the agent's last `un-enrolled` line.
    last: Duration,
    /// Pods whose call to the service address is refused again afterwards.
    refused: usize,
    /// The others, with what their calls met instead.
    not_refused: Vec<String>,
}

fn unenrol_all(
    cluster: &Cluster,
    pods: &[KubePod],
    args: &Args,
    log: &dyn Fn() -> String,
    pid: u32,
) -> Result<Unenrolment> {
    let count = || log().matches(": un-enrolled").count();
    let before = count();
    let api = cluster.pods();
    let grace0 = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let start = Instant::now();
    let deleted: Vec<Result<()>> = cluster.rt.block_on(
        futures::stream::iter(pods)
            .map(|pod| {
                let (api, grace0) = (&api, &grace0);
                async move {
                    api.delete(&pod.sim.name, grace0)
                        .await
                        .with_context(|| format!("deleting pod {NAMESPACE}/{}", pod.sim.name))?;
                    Ok(())
                }
            })
            .buffer_unordered(args.in_flight as usize)
            .collect(),
    );
    let deletes = start.elapsed();
    deleted.into_iter().collect::<Result<Vec<()>>>()?;
    // The log is polled often: the agent writes one line per pod.
    let mut seen = before;
    let timeout = Duration::from_secs(120);
    while seen < before + pods.len() {
        if start.elapsed() > timeout {
            bail!(
                "the agent (pid {pid}) un-enrolled {} of {} pods within {timeout:?}",
                seen - before,
                pods.len()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
        seen = count();
    }
    let last = start.elapsed();
    // Every sandbox is still there: its call must now be refused by the node.
    let sims: Vec<&SimPod> = pods.iter().map(|pod| &pod.sim).collect();
    let (refused, not_refused) = refused_again(&sims)?;
    Ok(Unenrolment {
        pods: pods.len(),
        deletes,
        last,
        refused,
        not_refused,
    })
}

/// The agent's footprint at one point of the run.
struct Stage {
    name: &'static str,
    pods: usize,
    rss_kib: u64,
    fds: usize,
}

impl Stage {
    fn read(name: &'static str, pods: usize, pid: u32) -> Result<Stage> {
        let rss_kib = benchkit::measure::memory(&[pid])
            .with_context(|| format!("the agent (pid {pid}) is gone"))?
            .rss_kib;
        let fds = benchkit::measure::open_fds(&[pid])?;
        Ok(Stage {
            name,
            pods,
            rss_kib,
            fds,
        })
    }
}

fn report(steady: &Arrival, burst: &Arrival, gone: &Unenrolment, stages: &[Stage]) -> String {
    let mut t = String::new();
    t.push_str("Enrolment latency, per pod: from the API server's acknowledgement of the pod's status patch (Running, podIP, podIPs) to the first 200 weir answers inside the pod:\n\n");
    t.push_str("| arrival | pods | p50 | p90 | p99 | max | all served | target | met |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---|---|\n");
    let mut verdicts = Vec::new();
    for (label, arrival, all) in [
        ("steady (one pod at a time)", steady, "-".to_owned()),
        (
            "burst (all patches at once)",
            burst,
            ms(burst.all_served.as_micros() as i64),
        ),
    ] {
        let s = arrival.sorted();
        let p99 = percentile(&s, 99.0);
        let met = p99 < TARGET.as_micros() as i64;
        verdicts.push((label, p99, met));
        let _ = writeln!(
            t,
            "| {label} | {} | {} | {} | {} | {} | {all} | p99 < 1 s | {} |",
            s.len(),
            ms(percentile(&s, 50.0)),
            ms(percentile(&s, 90.0)),
            ms(p99),
            ms(*s.last().unwrap_or(&0)),
            if met { "met" } else { "**not met**" },
        );
    }
    t.push_str("\nUn-enrolment: every pod deleted with grace 0 at once:\n\n");
    t.push_str("| pods | deletes acknowledged after | last pod un-enrolled after | calls refused again |\n");
    t.push_str("|---:|---:|---:|---:|\n");
    let _ = writeln!(
        t,
        "| {} | {} | {} | {}/{} |",
        gone.pods,
        ms(gone.deletes.as_micros() as i64),
        ms(gone.last.as_micros() as i64),
        gone.refused,
        gone.pods
    );
    t.push_str(
        "\nThe agent's footprint (`/proc/<pid>/status` VmRSS, entries of `/proc/<pid>/fd`):\n\n",
    );
    t.push_str("| when | enrolled pods | RSS | open fds |\n|---|---:|---:|---:|\n");
    for s in stages {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} MiB | {} |",
            s.name,
            s.pods,
            s.rss_kib as f64 / 1024.0,
            s.fds
        );
    }
    t.push_str("\nTargets (from the issue: a new running pod enrolled in under 1 s p99 from the API event):\n\n");
    for (label, p99, met) in verdicts {
        let _ = writeln!(
            t,
            "- {label}: p99 {} against < 1 s: {}",
            ms(p99),
            if met { "met" } else { "NOT met" }
        );
    }
    if gone.refused < gone.pods {
        let _ = writeln!(
            t,
            "- WARNING: after un-enrolment, {} pod(s) of {} were not refused at the service address within 5 s: {}",
            gone.pods - gone.refused,
            gone.pods,
            first_of(&gone.not_refused, 3)
        );
    }
    let _ = write!(
        t,
        "\n<details><summary>Every pod's latency (ms, in order)</summary>\n\nsteady: {}\n\nburst: {}\n\n</details>\n",
        ms_list(&steady.latencies_us),
        ms_list(&burst.latencies_us)
    );
    t
}

/// The first `n` entries, and how many more there are.
fn first_of(entries: &[String], n: usize) -> String {
    let mut text = entries[..entries.len().min(n)].join("; ");
    if entries.len() > n {
        let _ = write!(text, "; and {} more", entries.len() - n);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_validates() {
        weir::config::parse_str(&config(), "bench").unwrap();
    }

    #[test]
    fn report_judges_p99() {
        let fast = Arrival {
            latencies_us: (1..=100).map(|i| i * 1000).collect(),
            all_served: Duration::from_millis(900),
        };
        let slow = Arrival {
            latencies_us: (1..=100).map(|i| i * 20_000).collect(),
            all_served: Duration::from_secs(2),
        };
        let gone = Unenrolment {
            pods: 200,
            deletes: Duration::from_millis(300),
            last: Duration::from_millis(700),
            refused: 200,
            not_refused: Vec::new(),
        };
        let r = report(&fast, &slow, &gone, &[]);
        assert!(r.contains("| steady (one pod at a time) | 100 | 50 ms | 90 ms | 99 ms | 100 ms | - | p99 < 1 s | met |"), "{r}");
        assert!(
            r.contains("- burst (all patches at once): p99 1980 ms against < 1 s: NOT met"),
            "{r}"
        );
        assert!(r.contains("| 200 | 300 ms | 700 ms | 200/200 |"), "{r}");
    }
}
