//! `cargo xtask fuzz`: build the libFuzzer targets of fuzz/ (cargo-fuzz,
//! nightly) and run each for a bounded time on its committed seed corpus.
//! Fails naming the target and the input that crashed it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::install;
use crate::run::{command_output, drop_toolchain_env, run};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub seconds: u64,
    /// Targets to run (all of fuzz/ when none is given).
    pub targets: Vec<String>,
}

/// Bound on the fuzzer's memory: an input that makes weir take more is a finding.
const RSS_LIMIT_MB: u32 = 2048;
/// Bound on one input (larger than any head or ClientHello weir reads at once).
const MAX_LEN: u32 = 16 * 1024;
/// One input taking longer than this (seconds) is a finding (a hang).
const INPUT_TIMEOUT_S: u32 = 10;

pub fn run_fuzz(root: &Path, args: &FuzzArgs) -> Result<()> {
    install::ensure_nightly_rust_src()?;
    let cargo_fuzz = install::ensure_cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    let target_dir = root.join("target/fuzz");

    let listed = command_output(nightly_fuzz(&cargo_fuzz, &fuzz_dir).arg("list"))?;
    let known: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let targets: Vec<&str> = if args.targets.is_empty() {
        known.clone()
    } else {
        for t in &args.targets {
            if !known.contains(&t.as_str()) {
                bail!("unknown fuzz target {t:?}; fuzz/ has: {}", known.join(", "));
            }
        }
        args.targets.iter().map(String::as_str).collect()
    };

    // Panics and overflow checks are what safe Rust can get wrong; no
    // sanitizer (weir has no unsafe code on these paths), twice the speed.
    println!(
        "xtask: building fuzz targets (usually 7 to 8 minutes on 2 cores from nothing, less after a change): \
         cargo +nightly fuzz build"
    );
    run(nightly_fuzz(&cargo_fuzz, &fuzz_dir)
        .args(["build", "--sanitizer", "none", "--target-dir"])
        .arg(&target_dir))
    .context("building the fuzz targets failed")?;

    for t in targets {
        run_target(root, &target_dir, t, args.seconds)?;
    }
    Ok(())
}

/// `cargo +nightly fuzz ...` in fuzz/, with cargo-fuzz found where it was installed.
fn nightly_fuzz(cargo_fuzz: &Path, fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir).args(["+nightly", "fuzz"]);
    drop_toolchain_env(&mut cmd);
    if let Some(dir) = cargo_fuzz.parent() {
        cmd.env("PATH", install::path_with_first(dir));
    }
    cmd
}

/// Runs one target; the corpus it grows stays in target/fuzz/corpus (the
/// committed seeds are read only), its log in target/fuzz/logs.
fn run_target(root: &Path, target_dir: &Path, target: &str, seconds: u64) -> Result<()> {
    let binary = target_dir
        .join("x86_64-unknown-linux-gnu/release")
        .join(target);
    let work = target_dir.join("corpus").join(target);
    let artifacts = target_dir.join("artifacts").join(target);
    let logs = target_dir.join("logs");
    let seeds = root.join("fuzz/corpus").join(target);
    let _ = std::fs::remove_dir_all(&artifacts);
    for dir in [&work, &artifacts, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.arg(&work)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1");
    let dict = root.join("fuzz/dict").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    println!(
        "xtask: fuzzing {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let status = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .with_context(|| format!("could not start {}", binary.display()))?;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    for line in text.lines().filter(|l| {
        l.starts_with("stat::number_of_executed_units")
            || l.starts_with("stat::average_exec_per_sec")
            || l.starts_with("stat::peak_rss_mb")
    }) {
        println!("xtask:   {target}: {line}");
    }
    if status.success() {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
    match found(&artifacts) {
        Some(input) => bail!(
            "fuzz target {target} failed ({status}) on {}; reproduce: {} {}; then add the input to fuzz/corpus/{target}/ and a regression test (docs/security.md)",
            input.display(),
            binary.display(),
            input.display()
        ),
        None => bail!(
            "fuzz target {target} failed ({status}) without an artifact; log: {}",
            log_path.display()
        ),
    }
}

/// The crash, OOM, timeout or leak input libFuzzer wrote, if any.
fn found(artifacts: &Path) -> Option<PathBuf> {
    std::fs::read_dir(artifacts)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_file())
}
