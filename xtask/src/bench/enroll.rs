//! `cargo xtask bench enroll`: how soon a pod the API server reports running
//! is enrolled and served. The measuring runs in `weir-bench-enroll` (tests
//! crate), which starts a real API server and the agent as the DaemonSet
//! runs it on a simulated node; this side makes sure the kube-apiserver is
//! built, builds the benchmark in release mode, runs it as root and puts its
//! report into docs/benchmarks.md.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::docs;
use crate::run::run;

/// The issue's figure: 100 pods.
const FULL_RUN_PODS: u32 = 100;
/// Status patches and deletes in flight at once (the API server takes them
/// as fast as it can; more would only queue in its handlers).
const IN_FLIGHT: u32 = 8;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct EnrollArgs {
    /// Pods per arrival (steady, then burst; at most 120: a simulated node
    /// holds 248 pods).
    #[arg(long, default_value_t = FULL_RUN_PODS, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub pods: u32,
    /// Cargo profile of weir and the benchmark: `release` (what a node runs)
    /// or `debug` (unoptimized: slower, so its figures bound release's from above).
    #[arg(long, default_value = "release", value_parser = ["release", "debug"])]
    pub profile: String,
    /// Write docs/benchmarks.md even for a shortened run (a full run always does).
    #[arg(long, conflicts_with = "no_docs")]
    pub write_docs: bool,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
}

pub fn run_enroll(root: &Path, args: &EnrollArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench enroll needs root (network namespaces, cgroups, eBPF)");
    }
    crate::ensure_runtime_prerequisites(root)?;
    let apiserver = crate::kube::ensure_kube_apiserver()?;
    let release = args.profile == "release";
    super::build_with_weir(root, release, &["weir-bench-enroll", "sim-client"])?;
    let out = super::fresh_report(root, "enroll")?;

    let load_before = docs::load_average();
    let bin = root
        .join("target")
        .join(&args.profile)
        .join("weir-bench-enroll");
    run(Command::new(bin)
        .arg(format!("--pods={}", args.pods))
        .arg(format!("--in-flight={IN_FLIGHT}"))
        .arg("--out")
        .arg(&out)
        .env(crate::kube::BINARY_ENV, &apiserver))?;
    let load_after = docs::load_average();
    println!("xtask: load average before {load_before}, after {load_after} (1, 5, 15 min)");
    let report =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;

    if !super::writes_docs(args.no_docs, args.pods == FULL_RUN_PODS, args.write_docs) {
        return Ok(());
    }
    let body = section(root, [&load_before, &load_after], args, &report);
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "enroll", &body)?;
    println!("\nxtask: wrote the report into {}", file.display());
    Ok(())
}

/// The "Enrolment latency" section: command, machine, setup, the report.
fn section(root: &Path, load_avg: [&str; 2], args: &EnrollArgs, report: &str) -> String {
    let command: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "## Enrolment latency (Kubernetes API to served)

Command (as root; it builds the eBPF object, and kube-apiserver {version} once, when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {load_before} before the run and
{load_after} after it (the cores are shared with other work). weir {weir}, {profile} build{unoptimized}.

Setup: a real kube-apiserver {version} with etcd on loopback, `kubectl apply -k daemonset/`
done, and `weir run` started as the DaemonSet's container runs it (its args, its
capabilities only, its service account's token, the API reached from the simulated node's
own network through a forwarder, its config from the ConfigMap volume), exactly as the
Kubernetes end-to-end test does. The config claims 198.51.100.20:80 (`bind_to_port: false`)
with a `direct_response` 200; the node's router holds that address with nothing listening,
so an un-enrolled pod's call is refused and any 200 there is weir's. This process plays the
kubelet. For each pod: the API object on the node (annotated `weir.dev/enroll: \"true\"`),
its sandbox (network namespace, kubelet-layout cgroup named after the API's UID, a pause
process), then a probe in the pod (`sim-client until-ok`: a `GET` on a new connection every
2 ms in the steady arrival, 5 ms in the burst, printing the wall-clock time of the first
200), then the status patch the kubelet sends (phase Running, `podIP`, `podIPs`). A pod's
latency is the probe's time of its first 200 minus the time the patch returned from the API
server: it includes the watch delivering the event to the agent, the agent resolving the
pod's cgroup and network namespace, attaching the programs, opening the in-pod listeners,
and one probe gap at most.

- **steady**: {pods} pods one after another, each measured before the next is made.
- **burst**: {pods} more pods with API objects, sandboxes and probes ready first, then all
  status patches sent as fast as the API server takes them ({in_flight} in flight), as after
  a node restart; *all served* is from the first patch sent to the last pod's first 200.
- **un-enrolment**: all {total} pods deleted with grace 0 ({in_flight} deletes in flight),
  until the agent has logged `pod default/<name>: un-enrolled` for each (its log polled
  every 2 ms); then each pod's call to the service address must be refused again.

{report}",
        version = crate::kube::VERSION,
        command = command.join(" "),
        machine = docs::machine_facts(),
        load_before = load_avg[0],
        load_after = load_avg[1],
        weir = docs::git_describe(root),
        profile = args.profile,
        unoptimized = if args.profile == "debug" {
            " (unoptimized: the agent's own work is slower than in a release build)"
        } else {
            ""
        },
        pods = args.pods,
        total = args.pods * 2,
        in_flight = IN_FLIGHT,
    )
}
