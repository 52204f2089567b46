//! Config errors: the file, the path in the document, the line, the reason.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One step of a path in the YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path in the YAML document, displayed as `listeners[0].virtual_hosts[1].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocPath(pub Vec<Segment>);

impl DocPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One problem found in a config document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Path in the document, e.g. `clusters[1].connect_timeout`; empty for the root.
    pub path: String,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document root)"
        } else {
            &self.path
        };
        f.write_str(path)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The YAML is malformed or does not fit the types (unknown field, wrong type, bad value).
    #[error("{origin}: {issue}")]
    Parse { origin: String, issue: Issue },
    /// The document parsed but breaks rules that span fields (one line per issue).
    #[error("{}", render_issues(origin, issues))]
    Invalid { origin: String, issues: Vec<Issue> },
}

impl ConfigError {
    /// Every issue this error carries (empty for read errors).
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Parse { issue, .. } => std::slice::from_ref(issue),
            ConfigError::Invalid { issues, .. } => issues,
        }
    }
}

fn render_issues(origin: &str, issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|issue| format!("{origin}: {issue}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_path_display() {
        let path = DocPath::root()
            .key("listeners")
            .index(0)
            .key("virtual_hosts")
            .index(1)
            .key("routes")
            .index(2)
            .key("route")
            .key("cluster");
        assert_eq!(
            path.to_string(),
            "listeners[0].virtual_hosts[1].routes[2].route.cluster"
        );
        assert_eq!(DocPath::root().to_string(), "");
    }

    #[test]
    fn error_display_matches_contract() {
        let err = ConfigError::Parse {
            origin: "config.yaml".into(),
            issue: Issue {
                path: "clusters[1].connect_timeout".into(),
                line: Some(23),
                message: "invalid duration \"abc\": expected e.g. 250ms, 0.25s, 5s".into(),
            },
        };
        assert_eq!(
            err.to_string(),
            "config.yaml: clusters[1].connect_timeout (line 23): invalid duration \"abc\": expected e.g. 250ms, 0.25s, 5s"
        );
    }

    #[test]
    fn invalid_lists_one_issue_per_line() {
        let issue = |path: &str, line| Issue {
            path: path.into(),
            line,
            message: "bad".into(),
        };
        let err = ConfigError::Invalid {
            origin: "c.yaml".into(),
            issues: vec![issue("a", Some(1)), issue("", None)],
        };
        assert_eq!(
            err.to_string(),
            "c.yaml: a (line 1): bad\nc.yaml: (document root): bad"
        );
        assert_eq!(err.issues().len(), 2);
    }
}
