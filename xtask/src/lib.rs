//! Project tasks, run as `cargo xtask <task>`. Each task installs what it needs
//! first, idempotently, and says what it installs.
//!
//! A library under the binary so that the docs' commands test can parse every
//! `cargo xtask ...` line of README.md and docs/ with the real [`command`].

mod bench;
mod ebpf;
mod envoy;
mod fuzz;
mod image;
mod install;
mod kernels;
mod kube;
mod run;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Build (once, then cached) the real kube-apiserver the Kubernetes tests run.
    KubeApiserver,
    /// Build the container image (static weir, OCI layout and docker-archive tar) under target/image.
    Image,
    /// Run weir's main job on a local simulated node (needs root).
    Demo {
        /// Behind a real Kubernetes API server: `kubectl apply -k daemonset/`,
        /// pods created and annotated through the API.
        #[arg(long)]
        kubernetes: bool,
    },
    /// Run a benchmark (not a test), e.g. `cargo xtask bench proxy`.
    Bench {
        #[command(subcommand)]
        target: bench::Target,
    },
    /// Run the data-path e2e tests on Debian's 5.10, 6.1 and 6.12 kernels
    /// (or those named) under QEMU, with each cgroup layout (needs root).
    Kernels(kernels::KernelsArgs),
    /// Build the fuzz targets of fuzz/ (installs cargo-fuzz if missing) and
    /// run each on its seed corpus for a bounded time; fails on a crash.
    Fuzz(fuzz::FuzzArgs),
}

/// `cargo xtask`'s command line, for checking what the docs show of it.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses the process's arguments and runs the task they name.
pub fn main() -> Result<()> {
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
            // curl, h2load and openssl drive the TLS and HTTP/2 tests; a headless
            // chromium (and a font for its text) loads the admin's /graph page.
            install::ensure_apt_packages(&[
                "prometheus",
                "nghttp2-client",
                "curl",
                "openssl",
                "chromium",
                "fonts-dejavu-core",
            ])?;
            let apiserver = kube::ensure_kube_apiserver()?;
            // The Envoy parity test runs each seed setup through Envoy too.
            let envoy = envoy::ensure_envoy(&root)?;
            // The image's test runs the image this builds.
            let image_layout = image::build(&root)?;
            run(cargo(&root)
                .args(["test", "--workspace"])
                .args(&args)
                .env(kube::BINARY_ENV, apiserver)
                .env(envoy::BINARY_ENV, envoy)
                .env("WEIR_IMAGE_DIR", &image_layout))
        }
        Task::KubeApiserver => {
            let binary = kube::ensure_kube_apiserver()?;
            println!("{}", binary.display());
            Ok(())
        }
        Task::Image => image::build(&root).map(drop),
        Task::Demo { kubernetes } => {
            ensure_runtime_prerequisites(&root)?;
            let apiserver = if kubernetes {
                Some(kube::ensure_kube_apiserver()?)
            } else {
                None
            };
            // The demo runs the weir binary and the simulated pods' client and
            // server next to itself: build them all first, so the README's
            // first command works on a fresh clone before any test has run.
            run(cargo(&root).args([
                "build",
                "--quiet",
                "--package",
                "weir-agent",
                "--package",
                "weir-tests",
                "--bins",
            ]))?;
            let mut demo = cargo(&root);
            demo.args([
                "run",
                "--quiet",
                "--package",
                "weir-tests",
                "--bin",
                "weir-demo",
            ]);
            if let Some(binary) = apiserver {
                demo.args(["--", "--kubernetes"])
                    .env(kube::BINARY_ENV, binary);
            }
            run(&mut demo)
        }
        Task::Bench { target } => bench::run(&root, target),
        Task::Kernels(args) => kernels::run(&root, &args),
        Task::Fuzz(args) => fuzz::run_fuzz(&root, &args),
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
