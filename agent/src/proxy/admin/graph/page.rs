//! The `/graph` page: one self-contained HTML document, its style and script
//! inline, allowed by their SHA-256 in a content security policy that lets
//! the page fetch nothing but `/graph.json` from its own origin. Every value
//! it shows comes from pods' names and config names: the script writes
//! them with `textContent` and `setAttribute`, never as markup.

use std::sync::LazyLock;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

const STYLE: &str = include_str!("graph.css");
const SCRIPT: &str = include_str!("graph.js");

struct Page {
    html: Bytes,
    csp: HeaderValue,
}

/// `'sha256-<base64>'` of `text`, a CSP source that allows exactly it.
fn hash_source(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    format!("'sha256-{b64}'")
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<meta name=\"referrer\" content=\"no-referrer\">\n",
        "<title>weir: traffic graph</title>\n<style>",
        STYLE,
        "</style>\n</head>\n<body>\n<header><h1>weir traffic graph</h1>",
        "<p id=\"status\">loading /graph.json</p></header>\n",
        "<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" ",
        "aria-label=\"traffic graph\" width=\"400\" height=\"120\"></svg>\n",
        "<p id=\"legend\">Edges: requests per second, share answered 5xx, p99 latency ",
        "(from the edge's own histogram, else the listener's or the cluster's, ",
        "interpolated within its bucket). ",
        "Until a second sample, totals since the agent started. Source: this agent's own ",
        "metrics, <code>/graph.json</code>.</p>\n<script>",
        SCRIPT,
        "</script>\n</body>\n</html>\n",
    ]
    .concat();
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_source(SCRIPT),
        hash_source(STYLE)
    );
    Page {
        html: Bytes::from(html),
        csp: HeaderValue::from_str(&csp).expect("base64 and ASCII only"),
    }
});

/// The `/graph` response.
pub fn page() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(PAGE.html.clone()));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONTENT_SECURITY_POLICY, PAGE.csp.clone());
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let r = page();
        let h = r.headers();
        assert_eq!(h[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[CACHE_CONTROL], "no-store");
        let csp = h[CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let html = std::str::from_utf8(&PAGE.html).unwrap();
        // The hashed text is what the page holds between the tags.
        for (open, close, text) in [
            ("<script>", "</script>", SCRIPT),
            ("<style>", "</style>", STYLE),
        ] {
            let start = html.find(open).unwrap() + open.len();
            let end = html[start..].find(close).unwrap() + start;
            assert_eq!(&html[start..end], text);
            assert!(csp.contains(&hash_source(text)), "{csp}");
            assert_eq!(html.matches(open).count(), 1);
        }
        // Names from pods and the config are written as text, never as markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "{sink} in the script");
        }
        // A known vector: SHA-256 of "" in base64.
        assert_eq!(
            hash_source(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
        // Nothing is fetched from anywhere but the page's own origin.
        let stripped = html.replace("http://www.w3.org/2000/svg", "");
        for external in ["http://", "https://"] {
            assert!(!stripped.contains(external), "{external} in the page");
        }
    }
}
