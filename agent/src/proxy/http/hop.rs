//! Headers a proxy owns: hop-by-hop headers are not forwarded (RFC 9110
//! section 7.6.1), and the `x-envoy-*` headers weir sets as Envoy does.

use std::sync::OnceLock;

use http::HeaderMap;
use http::header::{CONNECTION, HeaderValue, TE, UPGRADE};

pub(crate) static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub(crate) static UPSTREAM_SERVICE_TIME: http::HeaderName =
    http::HeaderName::from_static("x-envoy-upstream-service-time");
static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");

/// Header values for 0..1000 ms, built once from one leaked string, so the
/// common case costs no allocation per request.
pub(crate) fn millis_header(ms: u64) -> HeaderValue {
    const N: usize = 1000;
    static TABLE: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let text: &'static str = (0..N).map(|i| i.to_string()).collect::<String>().leak();
        let mut out = Vec::with_capacity(N);
        let mut at = 0;
        for i in 0..N {
            let len = i.to_string().len();
            out.push(HeaderValue::from_static(&text[at..at + len]));
            at += len;
        }
        out
    });
    match table.get(ms as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(ms),
    }
}

/// Hop-by-hop headers are not forwarded, except `te: trailers` (gRPC) and,
/// on an upgrade, `connection` and `upgrade`. Headers the `Connection`
/// header names are hop-by-hop too (RFC 9110 §7.6.1).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, upgrading: bool) {
    h.remove(&KEEP_ALIVE);
    h.remove(&PROXY_CONNECTION);
    strip_connection_options(h, upgrading);
    if !upgrading {
        h.remove(CONNECTION);
        h.remove(UPGRADE);
    }
    if let Some(te) = h.get(&TE)
        && te != "trailers"
    {
        h.remove(&TE);
    }
}

/// Remove the headers `Connection` names (`close`, `keep-alive` and, on
/// an upgrade, `upgrade` are options, not header names to drop here).
/// `Host` stays whatever it says: it is the request's one authority, which
/// HTTP/1.1 requires (fuzzing found `Connection: host` forwarding none).
pub(crate) fn strip_connection_options(h: &mut HeaderMap, upgrading: bool) {
    let mut named: Vec<http::HeaderName> = Vec::new();
    for value in h.get_all(CONNECTION) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for token in text.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("host")
                || (upgrading && token.eq_ignore_ascii_case("upgrade"))
            {
                continue;
            }
            if let Ok(name) = http::HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        h.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_header_values() {
        assert_eq!(millis_header(0), "0");
        assert_eq!(millis_header(7), "7");
        assert_eq!(millis_header(42), "42");
        assert_eq!(millis_header(999), "999");
        assert_eq!(millis_header(1000), "1000");
        assert_eq!(millis_header(123_456), "123456");
    }
}
