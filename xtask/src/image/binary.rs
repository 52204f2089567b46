//! The `weir` binary that goes into the image: a static release build that
//! carries the eBPF object, so the image needs no loader, no libc and no file
//! beside the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::ebpf;
use crate::run::{command_output, run};

/// Spelled out so cargo applies RUSTFLAGS to the agent only: build scripts and
/// proc macros are built for the host without it and stay dynamic (a static
/// proc macro cannot be loaded by rustc).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The OCI name of [`TARGET`]'s architecture.
pub const OCI_ARCHITECTURE: &str = "amd64";

/// Builds (incrementally) the static `weir` and checks it is static and
/// carries the eBPF object. Returns its path.
pub fn build(root: &Path) -> Result<PathBuf> {
    // The agent's build script embeds whatever object is there (or nothing),
    // so it must be current before cargo looks at it.
    let object = ebpf::build_ebpf(root)?;
    let target_dir = root.join("target/image-build");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--package",
            "weir-agent",
            "--bin",
            "weir",
        ])
        .args(["--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Line tables would double the image for backtraces nobody reads in a
        // cluster; symbols stay, so a panic still names its functions.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        // This one would win over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    println!(
        "xtask: building the static weir (usually 4 to 7 minutes on 2 cores from nothing, less after a change): \
         cargo build --release --target {TARGET}, RUSTFLAGS=-C target-feature=+crt-static, in {}",
        target_dir.display()
    );
    run(&mut cargo).context("building the static weir binary failed")?;

    let binary = target_dir.join(TARGET).join("release/weir");
    ensure_static(&binary)?;
    ensure_embeds(&binary, &object)?;
    Ok(binary)
}

/// `file` says "statically linked" or "static-pie linked" (Rust links
/// `+crt-static` glibc binaries as static PIE), never "interpreter".
fn ensure_static(binary: &Path) -> Result<()> {
    let described = command_output(Command::new("file").arg("-b").arg(binary))?;
    let is_static =
        described.contains("statically linked") || described.contains("static-pie linked");
    if !is_static || described.contains("interpreter") {
        bail!(
            "{} is not a static executable (file says: {}); the image has no libc to load it with",
            binary.display(),
            described.trim()
        );
    }
    Ok(())
}

/// The binary holds the eBPF object byte for byte, so `weir run` in the image
/// loads exactly what `cargo xtask build-ebpf` built.
fn ensure_embeds(binary: &Path, object: &Path) -> Result<()> {
    let object_bytes =
        std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    ensure!(
        !object_bytes.is_empty(),
        "{} is empty; run `cargo xtask build-ebpf`",
        object.display()
    );
    let binary_bytes =
        std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let embedded = binary_bytes
        .windows(object_bytes.len())
        .any(|window| window == object_bytes.as_slice());
    ensure!(
        embedded,
        "{} does not carry the eBPF object {}; remove {} and run `cargo xtask image` again",
        binary.display(),
        object.display(),
        binary.display()
    );
    Ok(())
}

/// The version the binary reports (`weir 0.1.0` gives `0.1.0`): the image's tag.
pub fn version(binary: &Path) -> Result<String> {
    let out = command_output(Command::new(binary).arg("--version"))?;
    match out.trim().split_once(' ') {
        Some(("weir", version)) if !version.is_empty() => Ok(version.to_owned()),
        _ => bail!(
            "`{} --version` printed {:?}, expected `weir <version>`",
            binary.display(),
            out.trim()
        ),
    }
}
