//! Why `weir convert-envoy` wrote nothing.

use std::io;
use std::path::PathBuf;

use crate::config::Issue;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The Envoy file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Not a YAML (or JSON) document.
    #[error("{origin}: {}invalid YAML or JSON: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Syntax {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    /// Fields weir cannot carry over, every one found, each with its
    /// Envoy path, line and reason.
    #[error("{}", render_refused(origin, refusals))]
    Refused {
        origin: String,
        refusals: Vec<Issue>,
    },
    /// The converted config broke a rule of weir's loader (an undefined
    /// cluster, a STATIC endpoint given by name ...); each issue names the
    /// Envoy node it came from.
    #[error("{}", render_rejected(origin, issues))]
    Rejected { origin: String, issues: Vec<Issue> },
    /// The converter produced something weir's loader reads differently:
    /// a converter bug, never printed as a config.
    #[error("{origin}: internal error in convert-envoy: {message}")]
    Internal { origin: String, message: String },
    /// The output file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

fn render_refused(origin: &str, refusals: &[Issue]) -> String {
    let mut lines: Vec<String> = refusals
        .iter()
        .map(|issue| format!("{origin}: {issue}"))
        .collect();
    lines.push(format!(
        "{origin}: {} field(s) cannot be carried over to weir; nothing was written",
        refusals.len()
    ));
    lines.join("\n")
}

fn render_rejected(origin: &str, issues: &[Issue]) -> String {
    let mut lines: Vec<String> = issues
        .iter()
        .map(|issue| format!("{origin}: {issue}"))
        .collect();
    lines.push(format!(
        "{origin}: weir's config loader rejects the converted config; nothing was written"
    ));
    lines.join("\n")
}
