//! `x-weir-*` request headers are weir's own: it sets `x-weir-source` on
//! the requests it forwards for an enrolled pod and nothing else. One a
//! client sent is removed on every listener (bound, intercepted outbound,
//! inbound), before routing and before any hook sets weir's own.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The prefix of the headers only weir may set.
pub const PREFIX: &str = "x-weir-";

static X_WEIR_SOURCE: HeaderName = HeaderName::from_static("x-weir-source");

/// Remove every `x-weir-*` header; returns the `x-weir-source` one, which
/// only the inbound side may go on to believe (from weir's own sockets).
pub fn strip(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // The common case (none) costs one pass over the names, no allocation.
    if !headers.keys().any(|k| k.as_str().starts_with(PREFIX)) {
        return None;
    }
    let source = headers.remove(&X_WEIR_SOURCE);
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_weir_header_and_keeps_others() {
        let mut h = HeaderMap::new();
        h.insert("x-weir-source", HeaderValue::from_static("a"));
        h.append("x-weir-source", HeaderValue::from_static("b"));
        h.insert("x-weir-anything", HeaderValue::from_static("c"));
        h.insert("x-weirdo", HeaderValue::from_static("kept"));
        assert_eq!(strip(&mut h), Some(HeaderValue::from_static("a")));
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-weirdo"], "kept");
        assert_eq!(strip(&mut h), None);
    }
}
