//! Idempotent installation of what the project needs on a fresh machine.
//!
//! Every `ensure_*` first checks, prints nothing when all is present, and otherwise
//! says what it installs and with which command. When something cannot be installed
//! the error names the prerequisite and the command that would fix it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::run::{command_output, run};

/// LLVM major version bpf-linker 0.13 is built against (Debian serves llvm-22).
pub const LLVM_MAJOR: u32 = 22;
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Another apt run (unattended upgrades, a parallel job) holding the dpkg lock
/// is waited for instead of failing the install.
const APT_WAIT_FOR_LOCK: [&str; 2] = ["-o", "DPkg::Lock::Timeout=600"];

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Installs the Debian packages not yet installed, running `apt-get update` once first.
pub fn ensure_apt_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| !apt_package_installed(pkg))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let fix = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run as root: {fix}",
            missing.join(", ")
        );
    }
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        println!("xtask: apt-get update (to install {})", missing.join(" "));
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .args(APT_WAIT_FOR_LOCK))
        .with_context(|| format!("apt-get update failed; then run: {fix}"))?;
    }
    println!(
        "xtask: installing {} (first run only; apt usually takes under a minute): {fix}",
        missing.join(" ")
    );
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(APT_WAIT_FOR_LOCK)
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("could not install {}; to fix: {fix}", missing.join(", ")))
}

fn apt_package_installed(package: &str) -> bool {
    command_output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .map(|status| status.contains("install ok installed"))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The nightly toolchain with `rust-src`, which `-Z build-std=core` needs.
pub fn ensure_nightly_rust_src() -> Result<()> {
    let installed = command_output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("rustup is needed to build the eBPF programs (nightly toolchain)")?;
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        return Ok(());
    }
    println!(
        "xtask: installing rust-src for nightly, which building the eBPF programs needs \
         (first run only; usually under a minute): rustup component add rust-src --toolchain nightly"
    );
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context(
            "could not add rust-src; to fix: rustup component add rust-src --toolchain nightly",
        )
}

pub fn llvm_bin_dir() -> PathBuf {
    PathBuf::from(format!("/usr/lib/llvm-{LLVM_MAJOR}/bin"))
}

/// `bpf-linker` at the pinned version, built against Debian's LLVM.
pub fn ensure_bpf_linker() -> Result<()> {
    if let Some(version) = installed_bpf_linker_version() {
        if version == BPF_LINKER_VERSION {
            return Ok(());
        }
        println!("xtask: bpf-linker {version} found, {BPF_LINKER_VERSION} wanted");
    }
    ensure_apt_packages(&[
        &format!("llvm-{LLVM_MAJOR}-dev"),
        &format!("libpolly-{LLVM_MAJOR}-dev"),
    ])?;
    let fix = format!(
        "PATH=/usr/lib/llvm-{LLVM_MAJOR}/bin:$PATH cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-{LLVM_MAJOR}"
    );
    println!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION}, the eBPF programs' linker, built against \
         LLVM {LLVM_MAJOR} (first run only; usually about a minute on 2 cores): {fix}"
    );
    run(cargo_install()
        .args(["bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ])
        .env("PATH", path_with_first(&llvm_bin_dir())))
    .with_context(|| format!("could not install bpf-linker; to fix: {fix}"))?;
    match installed_bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => Ok(()),
        other => bail!(
            "bpf-linker was installed but `bpf-linker --version` reports {other:?}; is ~/.cargo/bin on PATH?"
        ),
    }
}

fn installed_bpf_linker_version() -> Option<String> {
    let out = command_output(Command::new(bpf_linker_path()?).arg("--version")).ok()?;
    // "bpf-linker 0.13.0"
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// `WEIR_TOOLS_ROOT`: install tools there (`cargo install --root`) and look
/// nowhere else, so CI can prove the install works from nothing without
/// touching the machine's own tools.
fn tools_root() -> Option<PathBuf> {
    std::env::var_os("WEIR_TOOLS_ROOT").map(PathBuf::from)
}

/// Where `cargo install` puts bpf-linker, or the one on PATH.
pub fn bpf_linker_path() -> Option<PathBuf> {
    installed_tool("bpf-linker")
}

/// Where `cargo install` puts `name` (the tools root when set, else
/// `$CARGO_HOME/bin`), or the one on PATH.
fn installed_tool(name: &str) -> Option<PathBuf> {
    if let Some(root) = tools_root() {
        let installed = root.join("bin").join(name);
        return installed.exists().then_some(installed);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let installed = cargo_home.join("bin").join(name);
    if installed.exists() {
        return Some(installed);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
}

/// `cargo install` into the tools root when one is set.
fn cargo_install() -> Command {
    let mut install = Command::new("cargo");
    install.arg("install");
    if let Some(root) = tools_root() {
        install.arg("--root").arg(root);
    }
    install
}

/// cargo-fuzz at the pinned version (libFuzzer targets in fuzz/).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo-fuzz`, installed if missing or another version; returns its path.
pub fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let version = |path: &Path| {
        command_output(Command::new(path).arg("--version"))
            .ok()
            .and_then(|out| out.split_whitespace().nth(1).map(str::to_owned))
    };
    if let Some(path) = installed_tool("cargo-fuzz") {
        match version(&path) {
            Some(v) if v == CARGO_FUZZ_VERSION => return Ok(path),
            v => println!("xtask: cargo-fuzz {v:?} found, {CARGO_FUZZ_VERSION} wanted"),
        }
    }
    let fix = format!("cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked");
    println!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (first run only; usually about a minute on 2 cores): {fix}"
    );
    run(cargo_install().args(["cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked"]))
        .with_context(|| format!("could not install cargo-fuzz; to fix: {fix}"))?;
    match installed_tool("cargo-fuzz") {
        Some(path) if version(&path).as_deref() == Some(CARGO_FUZZ_VERSION) => Ok(path),
        _ => bail!(
            "cargo-fuzz was installed but not found at {CARGO_FUZZ_VERSION}; is ~/.cargo/bin on PATH?"
        ),
    }
}

/// PATH with `dir` in front, so tools of that directory win.
pub fn path_with_first(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// bpffs at /sys/fs/bpf, where weir pins its maps and links.
pub fn ensure_bpffs() -> Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts.lines().any(|l| {
        l.split_whitespace().nth(2) == Some("bpf")
            && l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
    }) {
        return Ok(());
    }
    println!("xtask: mounting bpffs (mount -t bpf bpf /sys/fs/bpf)");
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("could not mount bpffs; to fix, as root: mount -t bpf bpf /sys/fs/bpf")
}
