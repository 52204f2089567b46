//! Running `ip` and friends, failing with the command line and its stderr.

use std::process::Command;

use anyhow::{Context, Result, bail};

pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting `{program} {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
