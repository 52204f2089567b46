//! Rules that span fields, checked after the document fits the types.

use super::error::Issue;
use super::root::ProxyConfig;

/// Every rule violation in `config`; `text` is the document, to find lines.
pub(super) fn validate(config: &ProxyConfig, text: &str) -> Vec<Issue> {
    let _ = (config, text);
    Vec::new()
}
