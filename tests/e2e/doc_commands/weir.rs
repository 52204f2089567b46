//! `weir ...` as the docs show it: parsed by weir's own command line, so a
//! subcommand or flag that is gone fails; run for real when it is cheap,
//! local and complete, so a file it names must exist and the command must
//! succeed on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Verdict;
use crate::cli::{Parse, parse};
use anyhow::{Context, Result, bail};

/// Subcommands that run here in a moment, on the repository's files alone.
const RUNNABLE: &[&str] = &[
    "check-config",
    "config-schema",
    "convert-envoy",
    "capabilities",
];

/// Subcommands that cannot run here, and why; a new subcommand shown in
/// the docs fails the test until it is in one list or the other.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "run",
        "the node agent needs root, eBPF and a node's pods (the e2e tests run it)",
    ),
    (
        "proxy",
        "a server that runs until stopped (the proxy tests run it)",
    ),
    (
        "status",
        "asks a running agent (the operator_status e2e test runs it)",
    ),
    (
        "uninstall",
        "removes weir's pinned state from the kernel, as root (the uninstall e2e test runs it)",
    ),
];

/// What the docs' `envoy.yaml` stands for: a shipped Envoy bootstrap.
const ENVOY_EXAMPLE: &str = "config/envoy/seed-000-egress.yaml";

pub struct Weir {
    pub cli: clap::Command,
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Weir {
    /// `args` (after `weir`); `lenient` for a mention in prose, which may
    /// leave required arguments out; `runnable` when nothing in it stands
    /// for something else (a placeholder).
    pub fn check(&self, args: &[String], lenient: bool, runnable: bool) -> Result<Verdict> {
        let matches = match parse(&self.cli, "weir", args, lenient)? {
            Parse::Whole(matches) => matches,
            Parse::HelpOrVersion => return self.run(args),
            Parse::LeftOut => return Ok(Verdict::Parsed("a mention, with arguments left out")),
        };
        let sub = matches.subcommand_name().unwrap_or("");
        if RUNNABLE.contains(&sub) {
            return if runnable {
                self.run(args)
            } else {
                Ok(Verdict::Parsed("placeholders stand for its arguments"))
            };
        }
        match NOT_RUN.iter().find(|(name, _)| *name == sub) {
            Some((_, why)) => Ok(Verdict::Parsed(why)),
            None => bail!(
                "`weir {sub}` is neither run here nor said why not: add it to RUNNABLE or NOT_RUN in {}",
                file!()
            ),
        }
    }

    /// Runs the command in a fresh directory that holds the repository's
    /// `config/` and, as `envoy.yaml`, a shipped Envoy bootstrap: what the
    /// docs' commands name, and room for what they write.
    fn run(&self, args: &[String]) -> Result<Verdict> {
        let dir = tempfile::tempdir()?;
        std::os::unix::fs::symlink(self.root.join("config"), dir.path().join("config"))?;
        std::fs::copy(self.root.join(ENVOY_EXAMPLE), dir.path().join("envoy.yaml"))?;
        let out = Command::new(&self.bin)
            .args(args)
            .current_dir(dir.path())
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "ran and failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Verdict::Ran(summary(dir.path(), &out.stdout)))
    }
}

/// What the run left to see: its first line of output, or the files it wrote.
fn summary(dir: &Path, stdout: &[u8]) -> String {
    let written: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name != "config" && name != "envoy.yaml")
        .collect();
    if !written.is_empty() {
        return format!("exit 0, wrote {}", written.join(", "));
    }
    let first = String::from_utf8_lossy(stdout);
    let first = first.lines().next().unwrap_or("").trim();
    let first: String = first.chars().take(60).collect();
    format!("exit 0: {first}")
}
