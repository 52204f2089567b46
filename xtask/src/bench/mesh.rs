//! `cargo xtask bench mesh`: what the mesh tunnel between nodes costs a
//! request and a new connection, against weir's plain forwarding and
//! Istio-style sidecars with mutual TLS between them. The measuring runs
//! in `weir-bench-mesh` (tests crate) on two linked simulated nodes; this
//! side installs wrk, iptables and Envoy, builds it in release mode, runs
//! it as root and puts its report into docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{docs, parse_seconds};

/// The setups, in the order of the table (the first is the ratios' baseline).
const SETUPS: [&str; 3] = ["weir-plain", "weir-mesh", "sidecars-mtls"];

#[derive(Args, Debug, Clone, PartialEq)]
pub struct MeshArgs {
    /// Length of each run, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Interleaved rounds; each runs every setup once per load.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Requests per second of the set-rate (latency) loads, over 16 connections.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Setups, comma separated: weir-plain, weir-mesh, sidecars-mtls.
    #[arg(long, value_delimiter = ',', default_value = "weir-plain,weir-mesh,sidecars-mtls", value_parser = parse_setup)]
    pub setups: Vec<String>,
    /// Write docs/benchmarks.md even for a shortened run (a full run always does).
    #[arg(long, conflicts_with = "no_docs")]
    pub write_docs: bool,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
}

impl MeshArgs {
    /// The full benchmark, whose table belongs in the docs.
    fn is_full_run(&self) -> bool {
        self.duration >= Duration::from_secs(3)
            && self.rounds >= 2
            && self.rate == 1000
            && self.setups == SETUPS
    }
}

fn parse_setup(text: &str) -> Result<String, String> {
    SETUPS
        .iter()
        .find(|s| **s == text.trim())
        .map(|s| (*s).to_owned())
        .ok_or_else(|| format!("unknown setup {text:?}: expected {}", SETUPS.join(", ")))
}

pub fn run_mesh(root: &Path, args: &MeshArgs) -> Result<()> {
    let (wrk, iptables) = super::simulated_node_prerequisites(root, "mesh")?;
    let envoy = if args.setups.iter().any(|s| s == "sidecars-mtls") {
        Some(crate::envoy::ensure_envoy(root)?)
    } else {
        None
    };
    super::build_with_weir(
        root,
        true,
        &["weir-bench-mesh", "sim-server", "latency-probe"],
    )?;
    let out = super::fresh_report(root, "mesh")?;
    let release = root.join("target/release");
    let mut cmd = Command::new(release.join("weir-bench-mesh"));
    cmd.arg(format!("--duration={}", args.duration.as_secs()))
        .arg(format!("--rounds={}", args.rounds))
        .arg(format!("--rate={}", args.rate))
        .arg(format!("--setups={}", args.setups.join(",")));
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
        args,
        &report,
    );
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "mesh", &body)?;
    println!("\nxtask: wrote the report into {}", file.display());
    Ok(())
}

/// The "Mesh" section of docs/benchmarks.md.
fn section(
    command: &str,
    load_avg: [&str; 2],
    versions: &str,
    args: &MeshArgs,
    report: &str,
) -> String {
    format!(
        "## Mesh tunnel between nodes (plain forwarding, the tunnel, sidecars with mutual TLS)

Command (as root; it builds the eBPF object and installs wrk, iptables and Envoy 1.40 when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {before} before the run and
{after} after it (the cores are shared with other work, which shows most in p99).
{versions}, release build.

Setup: two linked simulated nodes; each setup has its own client pod on node A and server
pod on node B (`sim-server http` on :8080), and the client calls the service address
`198.51.100.20:80`, which nothing serves: the proxies claim it and route it to the server
pod.

- **weir-plain**: a `weir run` per node (default workers), no mesh flags: node A's agent
  claims the address and forwards in plain text from the client pod's namespace to the
  server pod; node B's agent intercepts it there and delivers it inbound to the app.
- **weir-mesh**: the same agents with mesh credentials (`--mesh-trust-domain cluster.local`,
  one mesh root, a node CA each, `--mesh-pod-cidrs` of both nodes): A to B goes through the
  HBONE-style tunnel (TLS 1.3, HTTP/2 `CONNECT`) to the server pod's port 15008.
- **sidecars-mtls** (Istio's sidecar mode): no weir; an Envoy 1.40 in each of the two pods
  (`--concurrency 2`, uid 1337, Istio's iptables rules: OUTPUT to :15001, PREROUTING to
  :15006). The client's originates TLS 1.3 with its SPIFFE certificate
  (`spiffe://cluster.local/ns/default/sa/client`) to the server pod's :8080, checking the
  server's SPIFFE ID; the server's `virtualInbound` requires a client certificate of the same
  root (ECDSA P-256, made per run with rcgen), checks the client's SPIFFE ID, and forwards to
  the app on 127.0.0.1. HTTP/1.1 between the sidecars (Istio's default without an h2
  upgrade), its upstream connections pooled.

Loads, from inside the client pod, {rounds} interleaved rounds (order rotated each round)
after a 1 s warm-up, {secs} s each: `wrk -t1 -c16` at saturation, keep-alive and with
`Connection: close` (a new connection per request); and `latency-probe` at {rate} requests a
second over 16 connections (open loop), keep-alive and with a new connection per request
(timed from `connect()`). The table shows medians over the rounds: req/s and *proxies' CPU
µs/req* from the saturating runs (utime+stime from `/proc/<pid>/stat` of every proxy process
of the setup, both agents or both Envoys, over the run, divided by the requests wrk
completed), p50 and p99 from the set-rate runs; in brackets, the ratio to weir-plain's.
*others*: CPU the rest of the machine used meanwhile (all of `/proc/stat` less the proxies'
and the load tool's), in cores. The second table counts, over all measured runs, node A's
proxy's new connections to the server pod (weir: its cluster's upstream connections; with
the mesh each is a tunnel stream), the TLS connections opened between the nodes
(`weir_mesh_tunnel_connections_total{{direction=\"outbound\"}}`, the client sidecar's
`cluster.server.upstream_cx_total`), and weir's tunnel streams
(`weir_mesh_tunnel_streams_total{{direction=\"outbound\"}}`).

{report}",
        machine = docs::machine_facts(),
        before = load_avg[0],
        after = load_avg[1],
        rounds = args.rounds,
        secs = args.duration.as_secs(),
        rate = args.rate,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(duration: u64, setups: &[&str]) -> MeshArgs {
        MeshArgs {
            duration: Duration::from_secs(duration),
            rounds: 2,
            rate: 1000,
            setups: setups.iter().map(|s| (*s).to_owned()).collect(),
            write_docs: false,
            no_docs: false,
        }
    }

    #[test]
    fn only_a_full_run_writes_the_docs() {
        assert!(args(3, &SETUPS).is_full_run());
        assert!(!args(1, &SETUPS).is_full_run());
        assert!(!args(3, &["weir-plain", "weir-mesh"]).is_full_run());
        assert!(parse_setup("sidecars").is_err());
        assert_eq!(parse_setup(" weir-mesh").unwrap(), "weir-mesh");
    }
}
