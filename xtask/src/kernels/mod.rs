//! `cargo xtask kernels [SUITE|DEB ...]`: weir's data-path e2e tests on other
//! kernels. Each kernel (a Debian suite's `linux-image-amd64`, or a
//! `linux-image-*.deb`) boots under QEMU with this machine's root shared
//! read-only (`vm.sh`, the project's verified recipe), once per cgroup layout,
//! and runs the already built test binaries inside; a table of kernel x layout
//! x passed/failed/time closes the run.

mod guest;
mod table;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benchkit::progress::Progress;
use clap::Args;

use self::table::{Outcome, Row};

/// The suites the full matrix covers, oldest first: Linux 5.10, 6.1, 6.12.
pub const SUITES: [&str; 3] = ["bullseye", "bookworm", "trixie"];

const VM_SCRIPT: &str = include_str!("vm.sh");
/// One guest under TCG on 2 cores: boot, every e2e test, power off (CI's
/// runs took 4.5 to 6 minutes), for the estimate of the time left.
const PLANNED_GUEST: Duration = Duration::from_secs(5 * 60);

#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// Debian suites (bullseye, bookworm, trixie, ...) or linux-image .deb
    /// files; all of bullseye, bookworm and trixie when none is given.
    pub kernels: Vec<String>,
    /// Cgroup layouts to boot each kernel with, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "v2,hybrid", value_parser = ["v2", "hybrid"])]
    pub layouts: Vec<String>,
    /// Only these e2e test binaries, comma separated (e.g. to chase a
    /// failure on one kernel); all of them when absent.
    #[arg(long, value_delimiter = ',')]
    pub tests: Vec<String>,
    /// Bound on one guest run (boot, every test, power off), in seconds.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(60..=7200))]
    pub timeout: u64,
}

pub fn run(root: &Path, args: &KernelsArgs) -> Result<()> {
    if !crate::install::is_root() {
        bail!("xtask kernels needs root (QEMU's 9p root share, eBPF and namespaces in the guests)");
    }
    crate::ensure_runtime_prerequisites(root)?;
    // qemu and a static busybox boot the guests; kmod, cpio, xz and zstd
    // build their initramfs; the keyring checks the kernels' apt sources.
    crate::install::ensure_apt_packages(&[
        "qemu-system-x86",
        "busybox-static",
        "kmod",
        "cpio",
        "xz-utils",
        "zstd",
        "debian-archive-keyring",
    ])?;
    let kernels: Vec<String> = if args.kernels.is_empty() {
        SUITES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.kernels.clone()
    };
    for kernel in &kernels {
        check_kernel_arg(kernel)?;
    }
    let selected = guest::select(&args.tests)?;
    let tests = guest::build_tests(root, &selected)?;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let script = cache.join("vm.sh");
    if std::fs::read_to_string(&script).ok().as_deref() != Some(VM_SCRIPT) {
        std::fs::write(&script, VM_SCRIPT)
            .with_context(|| format!("writing {}", script.display()))?;
    }
    let logs = root.join("target/kernels");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    // A file, not `sh -c`: vm.sh quotes arguments with bash's %q, which the
    // guest's /bin/sh cannot read back when they span lines.
    let guest_script = logs.join("guest.sh");
    std::fs::write(
        &guest_script,
        guest::script(&tests, &root.join("target/debug/weir")),
    )
    .with_context(|| format!("writing {}", guest_script.display()))?;
    let guest = Guest {
        vm_script: &script,
        logs: &logs,
        script: &guest_script,
        timeout: args.timeout,
        binaries: tests.len(),
    };
    let mut rows = Vec::new();
    let mut progress = Progress::uniform(kernels.len() * args.layouts.len(), PLANNED_GUEST);
    for kernel in &kernels {
        for layout in &args.layouts {
            progress.begin(&format!("{kernel}, cgroup {layout}"));
            let row = run_one(root, &guest, kernel, layout)?;
            println!("{}", table::render(std::slice::from_ref(&row)));
            print!("{}", row.crashed_boots);
            if !row.outcome.is_pass() {
                println!("{}", row.failures);
            }
            rows.push(row);
        }
    }
    println!("\nxtask kernels: weir's e2e tests per kernel and cgroup layout\n");
    println!("{}", table::render(&rows));
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.outcome.is_pass())
        .map(|r| format!("{} {}", r.kernel, r.layout))
        .collect();
    if !failed.is_empty() {
        bail!(
            "e2e tests failed on {} (guest logs in {})",
            failed.join(", "),
            logs.display()
        );
    }
    Ok(())
}

/// A suite name or an existing .deb; anything else is refused by name.
fn check_kernel_arg(kernel: &str) -> Result<()> {
    if kernel.ends_with(".deb") {
        if !Path::new(kernel).is_file() {
            bail!("kernel package {kernel} does not exist");
        }
    } else if kernel.is_empty() || !kernel.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
        bail!("{kernel:?} is neither a Debian suite name (e.g. bullseye) nor a .deb file");
    }
    Ok(())
}

/// Kernels and initramfs images live outside the repository, shared by
/// every checkout on the machine.
fn cache_dir() -> PathBuf {
    std::env::var_os("WEIR_KERNEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/weir-kernels"))
}

/// What every guest of one run shares.
struct Guest<'a> {
    /// vm.sh, in the cache.
    vm_script: &'a Path,
    /// Where each guest's log goes.
    logs: &'a Path,
    /// The command the guest runs.
    script: &'a Path,
    /// Bound on one guest, in seconds.
    timeout: u64,
    /// Test binaries the guest is given.
    binaries: usize,
}

fn run_one(root: &Path, guest: &Guest<'_>, kernel: &str, layout: &str) -> Result<Row> {
    let name = Path::new(kernel)
        .file_name()
        .map_or_else(|| kernel.to_owned(), |n| n.to_string_lossy().into_owned());
    let log_path = guest.logs.join(format!("{name}-{layout}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    println!(
        "xtask kernels: {kernel}, cgroup {layout} (log: {})",
        log_path.display()
    );
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(guest.vm_script)
        .args(["--cgroup", layout, "--timeout", &guest.timeout.to_string()])
        .arg("--console-log")
        .arg(guest.logs.join(format!("{name}-{layout}.console.log")))
        .arg(kernel)
        .arg("--")
        .arg("/bin/sh")
        .arg(guest.script)
        .env("WEIR_KERNEL_CACHE", cache_dir())
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running bash (vm.sh)")?;
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    let outcome = Outcome::from_guest(&text, status.code(), guest.binaries);
    Ok(Row {
        failures: guest::failure_excerpts(&text),
        crashed_boots: guest::crashed_boots(&text),
        kernel: guest::kernel_release(&text).unwrap_or(name),
        layout: layout.to_owned(),
        detected: guest::detected(&text),
        outcome,
        time: Duration::from_secs(elapsed.as_secs()),
    })
}

#[cfg(test)]
mod tests {
    use super::guest::E2E_TESTS;
    use super::*;

    #[test]
    fn kernel_arguments_are_suites_or_packages() {
        assert!(check_kernel_arg("bullseye").is_ok());
        assert!(check_kernel_arg("/nonexistent/linux-image.deb").is_err());
        assert!(check_kernel_arg("bullseye; rm -rf /").is_err());
        assert!(check_kernel_arg("").is_err());
    }

    #[test]
    fn every_guest_test_is_a_test_target() {
        let manifest = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/Cargo.toml"),
        )
        .unwrap();
        for test in E2E_TESTS {
            assert!(
                manifest.contains(&format!("name = \"{test}\"")),
                "{test} is not a [[test]] of tests/Cargo.toml"
            );
        }
    }
}
