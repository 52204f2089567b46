//! Reading a document: YAML -> typed structs, serde errors -> [`Issue`]s.

use std::path::Path;

use super::error::{ConfigError, DocPath, Issue, Segment};
use super::locate::line_of;
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
    parse_str_with(text, origin, FileChecks::MustExist)
}

/// Whether validation requires the files a config names (certificates,
/// keys, CA bundles) to exist on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChecks {
    /// As `weir proxy` and `weir check-config` need them.
    MustExist,
    /// For a config written on one machine for another (`weir
    /// convert-envoy`): every other rule is still checked.
    Skip,
}

/// [`parse_str`], choosing whether the named files must exist.
pub fn parse_str_with(
    text: &str,
    origin: &str,
    files: FileChecks,
) -> Result<ProxyConfig, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let config: ProxyConfig =
        serde_path_to_error::deserialize(deserializer).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            issue: serde_issue(&err, text),
        })?;
    let issues = validate::validate(&config, text, files);
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
///
/// Its position is that of the YAML event being read when the error arose, which
/// for checks made after a value was read (one-of blocks, addresses) is the
/// enclosing mapping; so the line comes from the document path when the
/// document is well-formed YAML, and from serde_yaml otherwise (syntax errors).
pub(crate) fn serde_issue(
    err: &serde_path_to_error::Error<serde_yaml::Error>,
    text: &str,
) -> Issue {
    let inner = err.inner();
    let location = inner.location();
    let mut message = inner.to_string();
    if let Some(loc) = &location {
        let position = format!(" at line {} column {}", loc.line(), loc.column());
        message = message.replacen(&position, "", 1);
    }
    message = in_users_words(&without_long_values(&message));
    let path = doc_path(err.path());
    let path_text = path.to_string();
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.is_empty()
        && (path_text.starts_with(prefix) || prefix == "?")
    {
        message = rest.to_owned();
    }
    let well_formed = serde_yaml::from_str::<serde_yaml::Value>(text).is_ok();
    let line = line_of(text, &path)
        .filter(|_| well_formed && !path.segments().is_empty())
        .or(location.map(|loc| loc.line()));
    Issue {
        path: path_text,
        line,
        message,
    }
}

/// The longest value a parse error quotes back.
const QUOTED_MAX: usize = 64;

/// serde's messages quote the value they could not use (`string "..."`,
/// `` unknown variant `...` ``), and a value in the wrong place may be a
/// secret (a private key where a mapping belongs), which would then be in
/// `weir check-config`'s output, the reload log and `/status`. Long or
/// multi-line values are named by their length instead.
fn without_long_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = char::from(rest.as_bytes()[open]);
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(len) = closing_quote(after, quote) else {
            out.push_str(&rest[open..]);
            return out;
        };
        let value = &after[..len];
        let multi_line = value.contains('\n') || (quote == '"' && value.contains("\\n"));
        if value.chars().count() > QUOTED_MAX || multi_line {
            out.push_str(&format!(
                "({} characters, not repeated here: it may be a secret)",
                value.chars().count()
            ));
        } else {
            out.push(quote);
            out.push_str(value);
            out.push(quote);
        }
        rest = &after[len + quote.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// serde names what it expected in Rust's terms: the config type behind a
/// field (`expected struct RawForwardAction`), an integer's width
/// (`expected u16`), or, for a mapping where a named value belongs, a YAML
/// tag. A user writing YAML knows none of them; the path before the message
/// already says which field it is.
fn in_users_words(message: &str) -> String {
    let Some(at) = message.rfind("expected ") else {
        return message.to_owned();
    };
    let (head, expected) = message.split_at(at + "expected ".len());
    let (what, tail) = expected.split_at(
        expected
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ' '))
            .unwrap_or(expected.len()),
    );
    let plain = match what.split_once(' ') {
        Some(("struct", _)) => "a mapping".to_owned(),
        Some(("enum", _)) => "one of its named values".to_owned(),
        Some(("a", rest)) if rest.starts_with("YAML tag") => {
            return format!("{head}one of its named values, as a string");
        }
        _ => match what {
            "u8" => integer_range(u8::MAX.into()),
            "u16" => integer_range(u16::MAX.into()),
            "u32" => integer_range(u32::MAX.into()),
            "u64" | "usize" => "a whole number, 0 or more".to_owned(),
            "i32" | "i64" => "a whole number".to_owned(),
            "f32" | "f64" => "a number".to_owned(),
            _ => return message.to_owned(),
        },
    };
    format!("{head}{plain}{tail}")
}

fn integer_range(max: u64) -> String {
    format!("a whole number from 0 to {max}")
}

/// Where `quote` closes `text` (which follows the opening one); a `"`
/// string is Debug-escaped, so `\"` inside it does not close it.
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if quote == '"' && !escaped => escaped = true,
            c if c == quote && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// serde_path_to_error's path as ours, up to the first unknown segment.
fn doc_path(path: &serde_path_to_error::Path) -> DocPath {
    let mut segments = Vec::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => segments.push(Segment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => segments.push(Segment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => {
                segments.push(Segment::Key(variant.clone()))
            }
            serde_path_to_error::Segment::Unknown => break,
        }
    }
    DocPath(segments)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
