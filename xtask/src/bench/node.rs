//! `cargo xtask bench node`: what one agent costs on a node of 100, 250 and
//! 500 enrolled pods, and how soon it serves them when they all arrive at
//! once. The measuring runs in `weir-bench-node` (tests crate) on a
//! simulated node with a pods file; this side builds it in release mode,
//! runs it as root and puts its report into docs/benchmarks.md.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::docs;
use crate::run::run;

/// The issue's sizes.
const FULL_RUN_SIZES: [u32; 3] = [100, 250, 500];

#[derive(Args, Debug, Clone, PartialEq)]
pub struct NodeArgs {
    /// Node sizes (pods enrolled at once), comma separated; each on a node of
    /// its own (at most 1,000: the large pod network holds 1,020 pods).
    #[arg(long, value_delimiter = ',', default_value = "100,250,500",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sizes: Vec<u32>,
    /// Write docs/benchmarks.md even for a shortened run (a full run always does).
    #[arg(long, conflicts_with = "no_docs")]
    pub write_docs: bool,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
}

pub fn run_node(root: &Path, args: &NodeArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench node needs root (network namespaces, cgroups, eBPF)");
    }
    crate::ensure_runtime_prerequisites(root)?;
    super::build_with_weir(root, true, &["weir-bench-node", "sim-client"])?;
    let out = super::fresh_report(root, "node")?;
    let sizes: Vec<String> = args.sizes.iter().map(u32::to_string).collect();
    let load_before = docs::load_average();
    let release = root.join("target/release");
    run(Command::new(release.join("weir-bench-node"))
        .arg(format!("--sizes={}", sizes.join(",")))
        .arg("--out")
        .arg(&out)
        .env("WEIR_TEST_PREBUILT_WEIR", release.join("weir")))?;
    let load_after = docs::load_average();
    println!("xtask: load average before {load_before}, after {load_after} (1, 5, 15 min)");
    let report =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let full_run = args.sizes == FULL_RUN_SIZES;
    if !super::writes_docs(args.no_docs, full_run, args.write_docs) {
        return Ok(());
    }
    let body = section(root, [&load_before, &load_after], &report);
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "node", &body)?;
    println!("\nxtask: wrote the report into {}", file.display());
    Ok(())
}

/// The "A node of many pods" section: command, machine, setup, the report.
fn section(root: &Path, load_avg: [&str; 2], report: &str) -> String {
    let command: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "## A node of many pods (enrolment burst, footprint, un-enrolment)

Command (as root; it builds the eBPF object when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {load_before} before the run and
{load_after} after it (the cores are shared with other work). weir {weir}, release build.

Setup, for each size N on a simulated node of its own: the node's large pod network
(198.18.0.0/22 from RFC 2544's benchmarking range, 2001:db8:3::/64), N + 20 pod sandboxes
made first (network namespace, veth into the node's bridge, kubelet-layout cgroup, a pause
process), then `weir run --pods FILE` started with an empty pods file. Its config claims
198.51.100.20:80 (`bind_to_port: false`) with a `direct_response` 200; the node's router
holds that address with nothing listening, so an un-enrolled pod's call is refused and any
200 there is weir's. The agent reads the pods file every 250 ms (`PODS_POLL`), so a pod's
latency from the file's write includes up to 250 ms of that polling; the Kubernetes source
is a watch instead (its latency: the \"Enrolment latency\" section above).

- **burst**: all N pods written into the file at once (atomically, by a rename), as after a
  node restart. Probing all 500 pods at once would itself load the machine, so a sample is
  probed: the first 100 pods of the file, then 100 evenly spaced among the rest, the last
  included (all of them at N = 100). Each probe (`sim-client until-ok`, a `GET` on a new
  connection every 10 ms) runs from before the write and prints the wall-clock time of its
  first 200. *All enrolled* is read from the agent's log (polled every 2 ms).
- **warm-up**, before anything is measured: one more pod enrolled, served once and
  un-enrolled, so that the code a pod's enrolment and first request run is paged in. That is
  0.9 MiB of the binary's text (`/proc/<pid>/smaps`: the binary's mapping grew by it with
  the first pods), once per agent, which at N = 100 would otherwise read as 9 KiB a pod.
- **footprint**, with no pod and then with the N enrolled, no traffic, each read after 5 s
  without traffic (the CPU window): VmRSS, the BPF maps it holds (`memlock:` of each map's
  `/proc/<pid>/fdinfo`, each map once), its descriptors by kind (`readlink
  /proc/<pid>/fd/*`), and its CPU (`utime + stime`) over the 5 s. RSS is also read right
  after the burst's probes were served (*right after the burst*): the difference is memory
  malloc held free from the probes' connections until the trimmer (`proxy/memory.rs`, every
  5 s beyond 512 KiB free) gave it back.
- **steady**: 20 more pods added to the file one at a time, each probed (every 2 ms) and
  served before the next, one every 337 ms: a pace prime to the 250 ms poll, so the writes
  fall at every phase of it (written as soon as the one before is served, each would land
  just after the tick that served it and wait almost a whole poll).
- **un-enrolment**: the file emptied; until the agent has logged each of the N + 20
  un-enrolled; then its descriptors and the files below its pin root (waited for up to 5 s
  to settle) against the no-pod baseline, and every probed pod's call refused again.

{report}
What each enrolled pod holds, from the code (`agent/src/enroll/pod.rs`, `agent/src/inpod/`,
`agent/src/datapath/`; docs/architecture.md, \"What a pod costs the agent\"), to read the
descriptor table by: **4 sockets**, its four in-pod listeners (egress and inbound, IPv4 and
IPv6), one descriptor each, shared by its accept loop and the handle that shuts the listener
down at once when the pod is un-enrolled; **1 net namespace** handle, through which the socket
factory makes sockets in the pod (and bypassed connections are reset); **no `bpf_link`**: its
eight links (`cgroup/connect4`, `connect6`, `sendmsg4`, `sendmsg6`, `recvmsg4`, `recvmsg6` and `sockops` on the pod's cgroup,
`sk_lookup` on its network namespace) are pinned below the pin root, and the pin alone keeps
each attached; **no thread**: one socket factory thread, in the no-pod baseline, serves every
pod, entering the pod's namespace per request. The maps are sized when the programs load, so they do not grow per pod.",
        command = command.join(" "),
        machine = docs::machine_facts(),
        load_before = load_avg[0],
        load_after = load_avg[1],
        weir = docs::git_describe(root),
    )
}
