//! `cargo xtask bench neighbours`: what one misbehaving pod costs its
//! neighbour, with weir (one proxy for the node) and with a sidecar per pod
//! (Envoy 1.40, as the seeds run it) as the isolation reference. The
//! measuring runs in `weir-bench-neighbours` (tests crate) on a simulated
//! node; this side installs wrk, iptables and Envoy, builds it in release
//! mode, runs it as root and puts its report into docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use benchkit::neighbours::{Attack, Setup};
use clap::Args;

use super::{docs, parse_seconds};

#[derive(Args, Debug, Clone, PartialEq)]
pub struct NeighboursArgs {
    /// How long B's requests run under each attack, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// A's attacks, comma separated; B alone (`alone`) always runs first,
    /// as the baseline the others are judged against.
    #[arg(long, value_delimiter = ',', default_value = "cpu-direct,cpu-upstream,silent,opaque,slow-reader", value_parser = Attack::parse)]
    pub attacks: Vec<Attack>,
    /// Setups, comma separated: weir, sidecars, no-proxy (the node's floor:
    /// the pods straight to each other's applications).
    #[arg(long, value_delimiter = ',', default_value = "weir,sidecars,no-proxy", value_parser = Setup::parse)]
    pub setups: Vec<Setup>,
    /// Connections of the silent and opaque attacks.
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub connections: u32,
    /// Pod A's `weir.dev/max-cpu` in the weir setup (`250m`); absent: weir's default.
    #[arg(long)]
    pub a_max_cpu: Option<String>,
    /// Pod A's `weir.dev/unclaimed-traffic` in the weir setup: `direct`
    /// sends its opaque connections to the sink (which no listener claims)
    /// around the proxy, the machine's floor for that attack; absent:
    /// weir's default (through the proxy).
    #[arg(long, value_parser = ["direct", "proxy"])]
    pub a_unclaimed_traffic: Option<String>,
    /// Write docs/benchmarks.md even for a shortened run (a full run always does).
    #[arg(long, conflicts_with = "no_docs")]
    pub write_docs: bool,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
}

impl NeighboursArgs {
    /// The full benchmark, whose table belongs in the docs.
    fn is_full_run(&self) -> bool {
        self.duration >= Duration::from_secs(10)
            && self.connections == 6000
            && Attack::ALL.iter().all(|a| self.run_order().contains(a))
            && Setup::ALL.iter().all(|s| self.setups.contains(s))
            && self.a_max_cpu.is_none()
            && self.a_unclaimed_traffic.is_none()
    }

    /// `alone` first, then the attacks asked for, each once.
    fn run_order(&self) -> Vec<Attack> {
        let mut order = vec![Attack::Alone];
        for &a in &self.attacks {
            if !order.contains(&a) {
                order.push(a);
            }
        }
        order
    }
}

pub fn run_neighbours(root: &Path, args: &NeighboursArgs) -> Result<()> {
    let (wrk, iptables) = super::simulated_node_prerequisites(root, "neighbours")?;
    let envoy = if args.setups.contains(&Setup::Sidecars) {
        Some(crate::envoy::ensure_envoy(root)?)
    } else {
        None
    };
    super::build_with_weir(
        root,
        true,
        &[
            "weir-bench-neighbours",
            "sim-client",
            "sim-server",
            "latency-probe",
        ],
    )?;
    let out = super::fresh_report(root, "neighbours")?;
    let names = |items: Vec<&str>| items.join(",");
    let release = root.join("target/release");
    let mut cmd = Command::new(release.join("weir-bench-neighbours"));
    cmd.arg(format!("--duration={}", args.duration.as_secs()))
        .arg(format!(
            "--attacks={}",
            names(args.run_order().iter().map(|a| a.name()).collect())
        ))
        .arg(format!(
            "--setups={}",
            names(args.setups.iter().map(|s| s.name()).collect())
        ))
        .arg(format!("--connections={}", args.connections))
        .args(
            args.a_max_cpu
                .iter()
                .map(|cpu| format!("--a-max-cpu={cpu}")),
        )
        .args(
            args.a_unclaimed_traffic
                .iter()
                .map(|to| format!("--a-unclaimed-traffic={to}")),
        );
    let ([load_before, load_after], report) =
        super::run_on_simulated_nodes(root, &mut cmd, (&wrk, envoy.as_deref()), &out)?;
    if !super::writes_docs(args.no_docs, args.is_full_run(), args.write_docs) {
        return Ok(());
    }
    let versions = super::simulated_node_versions(root, &wrk, &iptables, envoy.as_deref())?;
    let body = section(
        &std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        [&load_before, &load_after],
        &versions,
        &report,
    );
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "neighbours", &body)?;
    println!("\nxtask: wrote the report into {}", file.display());
    Ok(())
}

/// The "Neighbours" section of docs/benchmarks.md.
fn section(command: &str, load_avg: [&str; 2], versions: &str, report: &str) -> String {
    format!(
        "## Neighbours (one pod misbehaving, its neighbour's requests)

Command (as root; it builds the eBPF object and installs wrk, iptables and Envoy 1.40 when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {before} before the run and
{after} after it (the cores are shared with other work, which shows most in p99).
{versions}, release build.

Setup: a simulated node with the same five pods for each setup: `a` (the attacker), `b`
(its neighbour), `server` (B's service, `198.51.100.20:80`), `other` (A's service,
`198.51.100.21:80`, whose `/direct` the proxy answers itself with a `direct_response`),
both running `sim-server http` on :8080, and `sink` (`sim-server echo` on :9000, outside
the mesh). Nothing listens at the service addresses: the proxies claim them.

- **weir**: one `weir run` for the node (its default workers: one per core, 2 here) with
  `a`, `b`, `server` and `other` enrolled and default annotations (`weir.dev/max-connections`
  4096, `weir.dev/max-connection-rate` 50,000/s, `weir.dev/max-requests` 1024,
  `weir.dev/max-cpu` an eighth of the workers, at least 250m: 250m here; the node's
  descriptors from RLIMIT_NOFILE, 20,000 here).
- **sidecars** (the isolation reference: each pod its own proxy, as the seeds and Istio run
  it): an Envoy 1.40 in each of those four pods' network namespaces, `--concurrency 2`
  (Istio's default for sidecars, so each sidecar has as many workers as weir has for the
  node), as uid 1337 behind Istio's rules: `iptables -t nat -A OUTPUT -p tcp ! -d
  127.0.0.0/8 -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001` and `-A
  PREROUTING -p tcp -j REDIRECT --to-ports 15006`. Its config has Istio's shape:
  `virtualOutbound` on :15001 (`use_original_dst`) hands each connection to the listener of
  its original destination (one per service, `bind_to_port: false`, the same routes as
  weir's), anything else to `PassthroughCluster` (`ORIGINAL_DST`); `virtualInbound` on
  :15006 sends :8080 to the application on 127.0.0.1; every cluster has Istio's circuit
  breakers (no limit); Envoy's own timeouts are left at their defaults.
- **no-proxy** (the node's floor): no proxy and no interception; B's requests go straight
  to `server`'s application (`http://<server>:8080/`), A's floods, silent connections and
  download straight to `other`'s (which answers `/direct` itself), its opaque connections
  to the sink as in the other setups. What two cores, the pods' veth pairs and the
  applications give B under the same attack, with A unhindered by any proxy; a proxy's
  row is read against it.

B: `latency-probe` in pod B, `GET http://198.51.100.20/` at 100 requests a second on one
keep-alive connection (open loop; a request slower than 2 s is an error), for the
duration of each attack, and alone for as long just before it (*B p99 alone, just
before*: the baseline the attack is judged against, so that how busy the shared machine
is at the time falls on both). A, in pod A, one attack at a time, B's requests beginning
once the attack is in effect (every connection open, the download begun; wrk at once):

- **cpu-direct**: `wrk -t1 -c16` on `http://198.51.100.21/direct` (the proxy answers).
- **cpu-upstream**: `wrk -t1 -c16` on `http://198.51.100.21/` (through the proxy to `other`).
- **silent**: `sim-client idle`: that many connections to 198.51.100.21:80 (an HTTP
  destination the proxy claims) that never send a byte, held until the attack ends.
- **opaque**: the same to the sink's :9000 (not HTTP); every 10th sends a line each second.
  B begins once A's connections are all at the sink (its count of established
  connections held still for 300 ms; *A's load* says how long after A had opened them),
  so the row measures A holding and talking, in any setup: through weir a connection
  reaches the sink only after 100 ms of silence (protocol detection) and A's share of
  weir paces its opening, and the sink spawns a thread per connection.
- **slow-reader**: `GET /bytes/100000000` from `other` through the proxy, read at 1 MiB/s.

During each attack: every proxy process's descriptors (`/proc/<pid>/fd`) and VmRSS every
100 ms (peaks), its CPU time over the attack (in cores: CPU seconds / wall seconds), the
readiness probe every 500 ms (weir's admin `/ready`; B's sidecar's `/ready`), and with weir
a pod added to the pods file and enrolled (*enrolment during*: from the file's change to
its first request weir answered) and `weir_intercept_connections_refused_total` for pods a
and b. After it: how long until the proxies' descriptors and RSS (all proxies together)
are back within 2x of their values before the attack (polled every 50 ms, at most 60 s).
A row passes when B had no failed request, B's p99 is within 2x of its p99 alone just
before, every readiness probe was answered, the new pod was served, none of B's
connections was refused and the footprint was back within 60 s (the issue's acceptance).
With sidecars, the proxy cells read B's sidecar, A's, and all four; without a proxy they
are empty, and the verdict says whether the node alone meets the acceptance.

{report}",
        machine = docs::machine_facts(),
        before = load_avg[0],
        after = load_avg[1],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(duration: u64, attacks: &[Attack]) -> NeighboursArgs {
        NeighboursArgs {
            duration: Duration::from_secs(duration),
            attacks: attacks.to_vec(),
            setups: Setup::ALL.to_vec(),
            connections: 6000,
            a_max_cpu: None,
            a_unclaimed_traffic: None,
            write_docs: false,
            no_docs: false,
        }
    }

    #[test]
    fn alone_runs_first_and_once() {
        let a = args(10, &[Attack::Silent, Attack::Alone, Attack::Silent]);
        assert_eq!(a.run_order(), vec![Attack::Alone, Attack::Silent]);
    }

    #[test]
    fn only_a_full_run_writes_the_docs() {
        let every = &Attack::ALL[1..];
        assert!(args(10, every).is_full_run());
        assert!(!args(5, every).is_full_run());
        assert!(!args(10, &[Attack::Silent]).is_full_run());
        let mut weir_only = args(10, every);
        weir_only.setups = vec![Setup::Weir];
        assert!(!weir_only.is_full_run());
        let mut capped = args(10, every);
        capped.a_max_cpu = Some("250m".to_owned());
        assert!(!capped.is_full_run(), "the docs show weir's defaults");
        let mut around = args(10, every);
        around.a_unclaimed_traffic = Some("direct".to_owned());
        assert!(!around.is_full_run(), "the docs show weir's defaults");
    }
}
