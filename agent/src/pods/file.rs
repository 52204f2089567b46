//! Reading the pods file: YAML -> validated [`PodSpec`]s, with errors that name
//! the file, the path in the document and the line.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{Issue, line_of, serde_issue};

use super::spec::{PodSpec, PodsDocument};
use super::validate::{validate, validate_namespaces};

/// Why a pods file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PodsFileError {
    /// The file could not be read.
    #[error("{}: cannot read pods file: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The YAML is malformed or does not fit the format.
    #[error("{origin}: {issue}")]
    Parse { origin: String, issue: Issue },
    /// The document parsed but breaks rules across pods (one line per issue).
    #[error("{}", render_issues(origin, issues))]
    Invalid { origin: String, issues: Vec<Issue> },
}

impl PodsFileError {
    /// Every issue this error carries (empty for read errors).
    pub fn issues(&self) -> &[Issue] {
        match self {
            PodsFileError::Read { .. } => &[],
            PodsFileError::Parse { issue, .. } => std::slice::from_ref(issue),
            PodsFileError::Invalid { issues, .. } => issues,
        }
    }
}

fn render_issues(origin: &str, issues: &[Issue]) -> String {
    let lines: Vec<String> = issues
        .iter()
        .map(|issue| format!("{origin}: {issue}"))
        .collect();
    lines.join("\n")
}

/// Reads, parses and validates the pods file at `path`.
pub fn load_pods_file(path: &Path) -> Result<Vec<PodSpec>, PodsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PodsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_pods_str(&text, &path.display().to_string())
}

/// Parses and validates a pods document; `origin` names the file in errors.
pub fn parse_pods_str(text: &str, origin: &str) -> Result<Vec<PodSpec>, PodsFileError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let document: PodsDocument =
        serde_path_to_error::deserialize(deserializer).map_err(|err| PodsFileError::Parse {
            origin: origin.to_owned(),
            issue: serde_issue(&err, text),
        })?;
    let issues: Vec<Issue> = validate_namespaces(&document.namespaces)
        .into_iter()
        .chain(validate(&document.pods))
        .map(|(path, message)| Issue {
            line: line_of(text, &path),
            path: path.to_string(),
            message,
        })
        .collect();
    if issues.is_empty() {
        let mut pods = document.pods;
        for namespace in &document.namespaces {
            for pod in pods.iter_mut().filter(|p| p.namespace == namespace.name) {
                pod.inherit(&namespace.annotations);
            }
        }
        Ok(pods)
    } else {
        Err(PodsFileError::Invalid {
            origin: origin.to_owned(),
            issues,
        })
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
