//! Every command README.md, docs/ and daemonset/README.md show, checked
//! against the project as it is, so the docs cannot name a subcommand, flag,
//! task or file that is gone.
//!
//! - `weir ...`: parsed by weir's own command line; the cheap local ones
//!   (`check-config`, `config-schema`, `convert-envoy`, `capabilities`) run
//!   for real and must succeed ([`weir`]).
//! - `cargo xtask ...`: parsed by xtask's own command line; other cargo
//!   commands must name packages and targets that exist ([`cargo`]).
//! - `kubectl ...`: what it names must be in `daemonset/` ([`kubectl`]).
//! - Anything else must be in [`NOT_RUNNABLE`] with the reason it cannot
//!   run here: a new kind of command fails until it is classified.
//!
//! Which lines count as commands: [`markdown`].

mod cargo;
mod cli;
mod kubectl;
mod markdown;
mod shell;
mod weir;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::CommandFactory;

use crate::markdown::{DocCommand, Shown};

/// Programs the docs show that cannot run here, and why.
const NOT_RUNNABLE: &[(&str, &str)] = &[
    ("curl", "asks a running agent's admin listener"),
    (
        "skopeo",
        "copies the image to a Docker engine or a registry (the image e2e test runs the image)",
    ),
    (
        "ctr",
        "imports the image into containerd on a node (the image e2e test runs the image)",
    ),
    (
        "kind",
        "loads the image into a kind cluster (the image e2e test runs the image)",
    ),
];

/// How a command fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Run here, and it succeeded.
    Ran(String),
    /// Parsed by the real command line; not run, for this reason.
    Parsed(&'static str),
    /// What it names exists; the rest cannot be checked here.
    Checked(String),
    /// Not runnable here, for this reason.
    NotRunnable(&'static str),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ran(what) => write!(f, "ran: {what}"),
            Verdict::Parsed(why) => write!(f, "parsed, not run: {why}"),
            Verdict::Checked(what) => write!(f, "checked: {what}"),
            Verdict::NotRunnable(why) => write!(f, "not runnable here: {why}"),
        }
    }
}

struct Checker {
    root: PathBuf,
    weir: weir::Weir,
    xtask: clap::Command,
    workspace: cargo::Workspace,
}

impl Checker {
    fn new() -> Result<Checker> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ is in the workspace")
            .to_path_buf();
        Ok(Checker {
            weir: weir::Weir {
                cli: ::weir::cli::args::Cli::command(),
                bin: weir_tests::agent::weir_bin()?,
                root: root.clone(),
            },
            xtask: xtask::command(),
            workspace: cargo::Workspace::read(&root)?,
            root,
        })
    }

    /// Each simple command of `command` with its verdict or its problem.
    fn check(&self, command: &DocCommand) -> Vec<(String, Result<Verdict>)> {
        let placeholders = command.shown == Shown::Inline && has_placeholder(&command.text);
        shell::simple_commands(&command.text)
            .into_iter()
            .map(|words| {
                let words = if command.shown == Shown::Inline {
                    fill_placeholders(words)
                } else {
                    words
                };
                let verdict = self.check_words(&words, command.shown, !placeholders);
                (words.join(" "), verdict)
            })
            .collect()
    }

    fn check_words(&self, words: &[String], shown: Shown, runnable: bool) -> Result<Verdict> {
        let lenient = shown == Shown::Inline;
        let Some((program, args)) = words.split_first() else {
            bail!("an empty command");
        };
        match program.as_str() {
            "weir" => self.weir.check(args, lenient, runnable),
            "cargo" if args.first().is_some_and(|a| a == "xtask") => {
                cargo::xtask(&self.xtask, &args[1..], lenient)
            }
            "cargo" => {
                let (verdict, runs) = cargo::cargo(&self.workspace, args)?;
                match runs {
                    Some(weir_args) => self.weir.check(&weir_args, lenient, runnable),
                    None => Ok(verdict),
                }
            }
            "kubectl" => {
                let (verdict, in_pod) = kubectl::check(&self.root, args)?;
                if let Some(in_pod) = in_pod {
                    // Not run: the pod is on a cluster.
                    self.check_words(&in_pod, shown, false)?;
                }
                Ok(verdict)
            }
            other => match NOT_RUNNABLE.iter().find(|(name, _)| *name == other) {
                Some((_, why)) => Ok(Verdict::NotRunnable(why)),
                None => bail!(
                    "`{other}` is a command this test does not know: run it here, or add it \
                     to NOT_RUNNABLE in {} with the reason it cannot run",
                    file!()
                ),
            },
        }
    }
}

/// Whether prose writes a placeholder for an argument (`FILE`, `[-o OUT]`).
fn has_placeholder(text: &str) -> bool {
    text.contains('[') || text.split_whitespace().any(is_placeholder)
}

fn is_placeholder(word: &str) -> bool {
    let word = word.trim_end_matches("...");
    word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The words with brackets of optional parts removed and placeholders
/// given values: a number for `N`, a name for the rest.
fn fill_placeholders(words: Vec<String>) -> Vec<String> {
    words
        .into_iter()
        .map(|w| w.trim_matches(['[', ']']).to_owned())
        .filter(|w| !w.is_empty())
        .map(|w| match w.trim_end_matches("...") {
            "N" => "1".to_owned(),
            p if is_placeholder(p) => "placeholder".to_owned(),
            _ => w,
        })
        .collect()
}

/// The pages a newcomer reads, in their order.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut pages = vec![root.join("README.md")];
    pages.extend(docs);
    pages.push(root.join("daemonset/README.md"));
    pages
}

#[test]
fn every_command_the_docs_show_parses_and_the_cheap_ones_run() -> Result<()> {
    let checker = Checker::new()?;
    let mut problems = Vec::new();
    let (mut shown, mut ran) = (0, 0);
    for page in pages(&checker.root) {
        let name = page.strip_prefix(&checker.root)?.display().to_string();
        let text = std::fs::read_to_string(&page)?;
        for command in markdown::commands(&text) {
            for (words, verdict) in checker.check(&command) {
                shown += 1;
                let place = format!("{name}:{}", command.line);
                match verdict {
                    Ok(verdict) => {
                        ran += usize::from(matches!(verdict, Verdict::Ran(_)));
                        println!("{place}: `{words}`: {verdict}");
                    }
                    Err(problem) => {
                        println!("{place}: `{words}`: PROBLEM: {problem:#}");
                        problems.push(format!("{place}: `{words}`: {problem:#}"));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {shown} commands in the docs are stale:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The extraction found the docs' commands, and the cheap ones ran.
    assert!(shown >= 50, "only {shown} commands found in the docs");
    assert!(ran >= 5, "only {ran} commands ran");
    Ok(())
}

/// The checker applied to one line of a code block, or of prose.
fn problem_in(checker: &Checker, text: &str, shown: Shown) -> Option<String> {
    let command = DocCommand {
        line: 1,
        text: text.to_owned(),
        shown,
    };
    checker
        .check(&command)
        .into_iter()
        .find_map(|(_, verdict)| verdict.err().map(|e| format!("{e:#}")))
}

#[test]
fn stale_commands_fail() -> Result<()> {
    let checker = Checker::new()?;
    for (text, why) in [
        (
            "weir check-config --strict config/seed-001-films.yaml",
            "unexpected argument",
        ),
        ("weir frobnicate", "unrecognized subcommand"),
        ("weir check-config config/no-such.yaml", "ran and failed"),
        ("weir run --pods pods.yaml", "--config"),
        (
            "cargo xtask bench proxy --no-such-flag",
            "unexpected argument",
        ),
        ("cargo xtask bench warp", "unrecognized subcommand"),
        ("cargo xtask fuzz --seconds 0", "invalid value"),
        (
            "cargo test -p weir-tests --test no_such_test",
            "no test target",
        ),
        ("cargo build -p weir-nothing", "no package"),
        (
            "cargo run -p weir-agent --bin weir -- frobnicate",
            "unrecognized subcommand",
        ),
        (
            "kubectl apply -k daemonset/nowhere/",
            "no kustomization.yaml",
        ),
        (
            "kubectl -n kube-system delete daemonset weir",
            "no namespace",
        ),
        (
            "kubectl -n weir-system rollout status ds/weir-old",
            "no DaemonSet",
        ),
        (
            "kubectl -n weir-system exec ds/weir -- weir stauts",
            "unrecognized subcommand",
        ),
        ("frobnicate --all", "does not know"),
    ] {
        let problem = problem_in(&checker, text, Shown::Block);
        assert!(
            problem.as_deref().is_some_and(|p| p.contains(why)),
            "`{text}`: expected a problem with {why:?}, got {problem:?}"
        );
    }
    // Prose may leave required arguments out or stand for them, not name
    // what does not exist.
    for text in [
        "weir run",
        "weir convert-envoy FILE [-o OUT]",
        "cargo xtask bench",
    ] {
        assert_eq!(problem_in(&checker, text, Shown::Inline), None, "`{text}`");
    }
    for text in ["weir run --no-such-flag", "cargo xtask fuzz [--minutes N]"] {
        assert!(
            problem_in(&checker, text, Shown::Inline).is_some(),
            "`{text}`"
        );
    }
    Ok(())
}

#[test]
fn placeholders_are_filled_and_brackets_dropped() {
    let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        fill_placeholders(words("cargo xtask fuzz [--seconds N] [TARGET...]")),
        words("cargo xtask fuzz --seconds 1 placeholder")
    );
    assert!(has_placeholder("weir check-config FILE"));
    assert!(!has_placeholder("weir run --config /etc/weir/config.yaml"));
}
