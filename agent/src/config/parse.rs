//! Reading a document: YAML -> typed structs, serde errors -> [`Issue`]s.

use std::path::Path;

use super::error::{ConfigError, Issue};
use super::root::ProxyConfig;
use super::validate;

/// Reads, parses and validates the config file at `path`.
pub fn load_file(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Parses and validates a config document; `origin` names the file in errors.
pub fn parse_str(text: &str, origin: &str) -> Result<ProxyConfig, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let config: ProxyConfig =
        serde_path_to_error::deserialize(deserializer).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            issue: serde_issue(&err),
        })?;
    let issues = validate::validate(&config, text);
    if issues.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            issues,
        })
    }
}

/// serde_yaml renders `<path>: <message> at line L column C`, where its path may be
/// the parent of ours (unknown fields, one-of errors); keep the parts apart.
fn serde_issue(err: &serde_path_to_error::Error<serde_yaml::Error>) -> Issue {
    let inner = err.inner();
    let location = inner.location();
    let mut message = inner.to_string();
    if let Some(loc) = &location {
        let position = format!(" at line {} column {}", loc.line(), loc.column());
        message = message.replacen(&position, "", 1);
    }
    let path = err.path().to_string();
    // Syntax errors leave an unknown `?` segment; "." is serde's root.
    let path = path.trim_end_matches(['?', '.']).to_owned();
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.is_empty()
        && path.starts_with(prefix)
    {
        message = rest.to_owned();
    }
    Issue {
        path,
        line: location.map(|loc| loc.line()),
        message,
    }
}
