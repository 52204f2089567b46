//! Project tasks, run as `cargo xtask <task>`. Each task installs what it needs
//! first, idempotently, and says what it installs.

mod bench;
mod ebpf;
mod install;
mod kernels;
mod run;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::run::run;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain if missing and build the eBPF object.
    BuildEbpf,
    /// Build the eBPF object and the whole workspace.
    Build,
    /// Build everything and run all tests, the privileged eBPF ones included (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run weir's main job on a local simulated node (needs root).
    Demo,
    /// Run a benchmark (not a test), e.g. `cargo xtask bench proxy`.
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
    /// Run the data-path e2e tests on Debian's 5.10, 6.1 and 6.12 kernels
    /// (or those named) under QEMU, with each cgroup layout (needs root).
    Kernels(kernels::KernelsArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::BuildEbpf => ebpf::build_ebpf(&root).map(drop),
        Task::Build => {
            ebpf::build_ebpf(&root)?;
            run(cargo(&root).args(["build", "--workspace", "--all-targets"]))
        }
        Task::Test { args } => {
            ensure_runtime_prerequisites(&root)?;
            // promtool and a real Prometheus server check the metrics exposition;
            // curl, h2load and openssl drive the TLS and HTTP/2 tests.
            install::ensure_apt_packages(&["prometheus", "nghttp2-client", "curl", "openssl"])?;
            run(cargo(&root).args(["test", "--workspace"]).args(&args))
        }
        Task::Demo => {
            ensure_runtime_prerequisites(&root)?;
            run(cargo(&root).args([
                "run",
                "--quiet",
                "--package",
                "weir-tests",
                "--bin",
                "weir-demo",
            ]))
        }
        Task::Bench { target } => bench::run(&root, target),
        Task::Kernels(args) => kernels::run(&root, &args),
    }
}

/// What running weir or its tests needs on this machine.
fn ensure_runtime_prerequisites(root: &Path) -> Result<()> {
    ebpf::build_ebpf(root)?;
    install::ensure_apt_packages(&["iproute2", "util-linux", "iptables", "nftables"])?;
    install::ensure_bpffs()
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
