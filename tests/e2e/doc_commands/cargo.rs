//! `cargo ...` as the docs show it. `cargo xtask` is parsed by xtask's own
//! command line (a task, target or flag that is gone fails) and not run: every
//! task builds, installs or measures for minutes, most as root, and CI runs
//! `cargo xtask test` itself. Other cargo commands must name packages,
//! binaries and tests the workspace has; `cargo run --bin weir -- ...` is
//! checked as the `weir ...` it runs.

use std::path::Path;
use std::process::Command;

use crate::Verdict;
use crate::cli::{Parse, parse};
use anyhow::{Context, Result, bail};

/// Cargo subcommands that only build and run the workspace's own targets.
const BUILDING: &[&str] = &["build", "test", "run", "check", "clippy"];

/// Cargo subcommands shown that are not checked, and why.
const NOT_CHECKED: &[(&str, &str)] = &[(
    "install",
    "installs into ~/.cargo (the xtask installers run it when needed)",
)];

/// The workspace's packages and their targets, as `cargo metadata` says.
pub struct Workspace {
    /// (package, target name, target kinds).
    targets: Vec<(String, String, Vec<String>)>,
}

impl Workspace {
    pub fn read(root: &Path) -> Result<Workspace> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ])
            .current_dir(root)
            .output()
            .context("running cargo metadata")?;
        if !out.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut targets = Vec::new();
        for package in doc["packages"].as_array().context("no packages")? {
            let name = package["name"].as_str().unwrap_or_default();
            for target in package["targets"].as_array().into_iter().flatten() {
                let kinds = target["kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| Some(k.as_str()?.to_owned()))
                    .collect();
                let target = target["name"].as_str().unwrap_or_default();
                targets.push((name.to_owned(), target.to_owned(), kinds));
            }
        }
        Ok(Workspace { targets })
    }

    fn has_package(&self, package: &str) -> bool {
        self.targets.iter().any(|(p, _, _)| p == package)
    }

    /// Whether `package` (any, when not named) has a target `name` of `kind`.
    fn has_target(&self, package: Option<&str>, kind: &str, name: &str) -> bool {
        self.targets.iter().any(|(p, t, kinds)| {
            package.is_none_or(|package| package == p)
                && t == name
                && kinds.iter().any(|k| k == kind)
        })
    }
}

/// `cargo xtask ARGS`, parsed; `lenient` for a mention in prose.
pub fn xtask(cli: &clap::Command, args: &[String], lenient: bool) -> Result<Verdict> {
    Ok(match parse(cli, "cargo xtask", args, lenient)? {
        Parse::LeftOut => Verdict::Parsed("a mention, with arguments left out"),
        Parse::Whole(_) | Parse::HelpOrVersion => Verdict::Parsed(
            "builds, installs or measures for minutes, mostly as root (CI runs `cargo xtask test`)",
        ),
    })
}

/// A cargo command other than `cargo xtask`: what it names must exist.
/// Returns the arguments after `--` of a `cargo run` of weir, to be
/// checked as a `weir` command.
pub fn cargo(workspace: &Workspace, args: &[String]) -> Result<(Verdict, Option<Vec<String>>)> {
    let (sub, rest) = args.split_first().context("`cargo` and nothing else")?;
    if let Some((_, why)) = NOT_CHECKED.iter().find(|(name, _)| name == sub) {
        return Ok((Verdict::NotRunnable(why), None));
    }
    if !BUILDING.contains(&sub.as_str()) {
        bail!(
            "`cargo {sub}` is neither checked nor said why not: add it to BUILDING or NOT_CHECKED in {}",
            file!()
        );
    }
    let (own, after) = match rest.iter().position(|a| a == "--") {
        Some(i) => (&rest[..i], Some(rest[i + 1..].to_vec())),
        None => (rest, None),
    };
    let mut package = None;
    let mut named = Vec::new();
    let mut words = own.iter();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (word.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| words.next().cloned());
        match flag {
            "-p" | "--package" => {
                let p = value().context("-p without a package")?;
                if !workspace.has_package(&p) {
                    bail!("the workspace has no package {p:?}");
                }
                package = Some(p);
            }
            "--bin" => named.push(("bin", value().context("--bin without a name")?)),
            "--test" => named.push(("test", value().context("--test without a name")?)),
            _ => {}
        }
    }
    for (kind, name) in &named {
        if !workspace.has_target(package.as_deref(), kind, name) {
            bail!(
                "{} has no {kind} target {name:?}",
                package.as_deref().unwrap_or("the workspace")
            );
        }
    }
    let runs_weir = sub == "run" && named.iter().any(|(k, n)| *k == "bin" && n == "weir");
    let what = if named.is_empty() {
        "the packages it names exist".to_owned()
    } else {
        let named: Vec<String> = named.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!("{} of the workspace", named.join(" and "))
    };
    Ok((
        Verdict::Checked(what),
        if runs_weir {
            after.or(Some(Vec::new()))
        } else {
            None
        },
    ))
}
