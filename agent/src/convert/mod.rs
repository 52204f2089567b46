//! `weir convert-envoy`: an Envoy static bootstrap (YAML or JSON, v3 or
//! v2 type URLs) into a weir config (`docs/envoy.md`).
//!
//! The walk reads the Envoy document mapping by mapping, checking off each
//! key it reads; whatever nothing read is refused by name. It goes on after
//! a refusal, so one run lists every field weir cannot carry over, each with
//! its Envoy path, line and reason, and nothing is written. What it carries
//! is built as weir's own config types, serialized, and loaded back with
//! weir's loader before anything is printed.

pub(crate) mod access_log;
mod bootstrap;
mod cluster;
mod common;
mod dns;
mod error;
mod listener;
mod output;
mod refusals;
mod route;
#[cfg(test)]
mod test_support;
mod tls;
mod walk;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use error::ConvertError;

use crate::config::{DocPath, Issue, ProxyConfig, line_of};
use output::LoadBack;
use walk::{Cx, Field};

/// A converted bootstrap: weir's config, its YAML, and what the user
/// should know about it (also in the YAML's header comment).
#[derive(Debug)]
pub struct Conversion {
    pub config: ProxyConfig,
    pub yaml: String,
    pub notes: Vec<Issue>,
}

/// Converts the Envoy bootstrap in the file at `path`.
pub fn convert_file(path: &Path) -> Result<Conversion, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConvertError::Read {
        path: path.to_owned(),
        source,
    })?;
    convert_str(&text, &path.display().to_string())
}

/// Converts an Envoy bootstrap; `origin` names it in messages and in the
/// output's header.
pub fn convert_str(text: &str, origin: &str) -> Result<Conversion, ConvertError> {
    let mut document: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|err| syntax_error(&err, origin))?;
    // YAML merge keys (`<<: *defaults`) are spread as a YAML loader would.
    document
        .apply_merge()
        .map_err(|err| syntax_error(&err, origin))?;
    let mut cx = Cx::default();
    let config = bootstrap::bootstrap(&mut cx, &Field::new(DocPath::root(), &document));
    // The walk reads clusters before listeners; the user reads by line.
    let located = |found: Vec<(DocPath, String)>| -> Vec<Issue> {
        let mut issues: Vec<Issue> = found
            .into_iter()
            .map(|(path, message)| Issue {
                line: line_of(text, &path),
                path: path.to_string(),
                message,
            })
            .collect();
        issues.sort_by_key(|issue| issue.line.unwrap_or(usize::MAX));
        issues
    };
    let refusals = located(std::mem::take(&mut cx.refusals));
    if !refusals.is_empty() {
        return Err(ConvertError::Refused {
            origin: origin.to_owned(),
            refusals,
        });
    }
    let Some(config) = config else {
        return Err(internal(
            origin,
            "a part was not converted, yet nothing was refused",
        ));
    };
    let notes = located(std::mem::take(&mut cx.notes));
    let yaml = output::render(&config, origin, &notes).map_err(|m| internal(origin, &m))?;
    match output::load_back(&yaml, &format!("{origin} (converted)"), &config) {
        Ok(()) => Ok(Conversion {
            config,
            yaml,
            notes,
        }),
        Err(LoadBack::Rejected(issues, whole)) if issues.is_empty() => {
            Err(internal(origin, &whole))
        }
        Err(LoadBack::Rejected(issues, _)) => Err(ConvertError::Rejected {
            origin: origin.to_owned(),
            issues: issues
                .into_iter()
                .map(|issue| from_envoy(issue, &cx.origins, text))
                .collect(),
        }),
        Err(LoadBack::Differs) => Err(internal(
            origin,
            "the converted config loads back as a different config",
        )),
    }
}

/// Who may read a written config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// As the umask allows.
    Any,
    /// The owner alone (mode 0600): the config holds inline private keys.
    Owner,
}

impl Readers {
    pub fn of(config: &ProxyConfig) -> Self {
        if config.holds_inline_keys() {
            Self::Owner
        } else {
            Self::Any
        }
    }
}

/// Writes `yaml` to `path` whole or not at all: into a file beside it,
/// then renamed over it (so the file's mode is the new one's, never widened
/// from a private one by the umask when it holds keys).
pub fn write_output(path: &Path, yaml: &str, readers: Readers) -> Result<(), ConvertError> {
    let write_error = |source| ConvertError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| write_error(std::io::Error::other("not a file name")))?;
    let temp = dir.join(format!(
        ".{}.weir-convert-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A new file, so its mode is the one asked for: a temporary file left
    // by an earlier run would keep its own.
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if readers == Readers::Owner {
        options.mode(0o600);
    }
    let written = options
        .open(&temp)
        .and_then(|mut f| f.write_all(yaml.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(write_error(err));
    }
    Ok(())
}

fn syntax_error(err: &serde_yaml::Error, origin: &str) -> ConvertError {
    let location = err.location();
    let mut message = err.to_string();
    if let Some(loc) = &location {
        message = message.replacen(
            &format!(" at line {} column {}", loc.line(), loc.column()),
            "",
            1,
        );
    }
    ConvertError::Syntax {
        origin: origin.to_owned(),
        line: location.map(|l| l.line()),
        message,
    }
}

fn internal(origin: &str, message: &str) -> ConvertError {
    ConvertError::Internal {
        origin: origin.to_owned(),
        message: message.to_owned(),
    }
}

/// A loader issue, told at the Envoy node the offending weir node came
/// from (the deepest one recorded), with the weir path in the message.
fn from_envoy(issue: Issue, origins: &[(String, DocPath)], text: &str) -> Issue {
    let origin = origins
        .iter()
        .filter(|(weir, _)| {
            issue.path == *weir
                || issue
                    .path
                    .strip_prefix(weir.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
        .max_by_key(|(weir, _)| weir.len());
    match origin {
        Some((_, envoy)) => Issue {
            line: line_of(text, envoy),
            path: envoy.to_string(),
            message: format!("in weir's {}: {}", issue.path, issue.message),
        },
        None => Issue {
            line: None,
            message: format!("in weir's {}: {}", issue.path, issue.message),
            path: String::new(),
        },
    }
}

#[cfg(test)]
mod tests;
