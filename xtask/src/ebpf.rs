//! `cargo xtask build-ebpf`: the eBPF object, built with nightly for
//! bpfel-unknown-none and placed where the agent's build script embeds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::install;
use crate::run::run;

/// Where the agent's build script looks for the object (see agent/build.rs).
pub fn object_path(root: &Path) -> PathBuf {
    root.join("target/ebpf/weir-ebpf.o")
}

pub fn build_ebpf(root: &Path) -> Result<PathBuf> {
    install::ensure_nightly_rust_src()?;
    install::ensure_bpf_linker()?;

    let target_dir = root.join("target/ebpf-build");
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(root.join("agent-ebpf"))
        .args([
            "+nightly",
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir);
    crate::run::drop_toolchain_env(&mut cargo);
    if let Some(linker_dir) =
        install::bpf_linker_path().and_then(|p| p.parent().map(Path::to_path_buf))
    {
        cargo.env("PATH", install::path_with_first(&linker_dir));
    }
    println!(
        "xtask: building eBPF programs (cargo +nightly build --target bpfel-unknown-none -Z build-std=core --release)"
    );
    run(&mut cargo).context("building the eBPF programs failed")?;

    let built = target_dir.join("bpfel-unknown-none/release/weir-ebpf");
    let dest = object_path(root);
    copy_if_changed(&built, &dest)?;
    println!("xtask: eBPF object at {}", dest.display());
    Ok(dest)
}

/// Copies only when the bytes differ, so an unchanged object does not make cargo
/// rebuild the agent that embeds it.
fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() == Some(new.as_slice()) {
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(to, new).with_context(|| format!("writing {}", to.display()))
}
