//! `cargo xtask bench restart`: what an agent restart costs the pods, a
//! rolling update (successor, then SIGTERM) beside a crash (SIGKILL, then a
//! new agent). The measuring runs in `weir-bench-restart` (tests crate) on a
//! simulated node; this side builds it in release mode, runs it as root and
//! puts its report into docs/benchmarks.md.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::docs;
use crate::run::run;

const FULL_RUNS: u32 = 3;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct RestartArgs {
    /// Restarts of each kind.
    #[arg(long, default_value_t = FULL_RUNS, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// Do not write docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
}

pub fn run_restart(root: &Path, args: &RestartArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench restart needs root (network namespaces, cgroups, eBPF)");
    }
    crate::ensure_runtime_prerequisites(root)?;
    super::build_with_weir(
        root,
        true,
        &["weir-bench-restart", "sim-client", "sim-server"],
    )?;
    let out = super::fresh_report(root, "restart")?;
    let load_before = docs::load_average();
    let release = root.join("target/release");
    run(Command::new(release.join("weir-bench-restart"))
        .args(["--runs", &args.runs.to_string()])
        .arg("--out")
        .arg(&out)
        .env("WEIR_TEST_PREBUILT_WEIR", release.join("weir")))?;
    let load_after = docs::load_average();
    let report =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    if args.no_docs {
        return Ok(());
    }
    let command: Vec<String> = std::env::args().skip(1).collect();
    let body = format!(
        "## Restarts (what the pods see)

Command (as root; it builds the eBPF object when missing):

```
cargo xtask {command}
```

Machine: {machine}; load average (1, 5, 15 min) {load_before} before the run and
{load_after} after it. weir {weir}, release build.

Setup: a simulated node with three enrolled pods: `client`, `locked` (fail-closed) and
`server`, whose application answers `server from <peer>`, so a request weir delivered
(from 127.0.0.6) is told from one that went direct. During each restart, every 10 ms: a
client on one keep-alive connection (a new one only after `connection: close` or an
error), a client opening a connection per request, the fail-closed pod opening one per
request; and one request the application answers after 500 ms, sent 100 ms before the
event. **Rolling update**: a second `weir run` with the same arguments starts beside the
first and takes the pods over, then the first gets SIGTERM (the DaemonSet's `maxSurge: 1`
rollout). **Crash**: SIGKILL, then a new agent; its listeners are back when the fail-closed
pod's probe (a new connection every 1 ms) is first answered. **Crash, reset**: the same
with the client pod annotated `weir.dev/bypassed-connections: \"reset\"`. Each run ends
after a second with the new agent alone.

{report}
In a crash's gap a fail-open pod's new connections go direct. Under the default
(`ALLOW_ANY`, no annotation) a keep-alive connection made in the gap stays direct for its
whole life, and the new agent counts it (`weir_intercept_bypassed_connections_total`);
with `reset` the new agent cuts it once it serves the pod again (one failed request) and
the client's next connection goes through weir.
",
        command = command.join(" "),
        machine = docs::machine_facts(),
        weir = docs::git_describe(root),
    );
    let file = root.join("docs/benchmarks.md");
    docs::write_section(&file, "restart", &body)?;
    println!("\nxtask: wrote the report into {}", file.display());
    Ok(())
}
