//! One authority per request (RFC 9112 §3.2.2, RFC 9113 §8.3.1). The
//! virtual host, a forward proxy cluster's destination and the forwarded
//! `Host` all read the `Host` header once this has run, so they cannot
//! disagree: an absolute-form target's authority replaces `Host`, HTTP/2's
//! `:authority` replaces any `host` (Envoy discards it), and a request whose
//! authority is ambiguous, missing or malformed is refused with 400.

use http::header::HOST;
use http::{HeaderMap, HeaderValue, Uri, Version};

/// Why a request's authority was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("more than one Host header")]
    TwoHosts,
    #[error("HTTP/1.1 request without Host")]
    Missing,
    #[error("malformed authority")]
    Malformed,
}

/// Make `Host` the request's one authority, or say why there is none.
pub fn normalize(uri: &Uri, version: Version, headers: &mut HeaderMap) -> Result<(), Invalid> {
    let mut hosts = headers.get_all(HOST).iter();
    let first = hosts.next();
    let two = hosts.next().is_some();
    if let Some(auth) = uri.authority() {
        // HTTP/1 repeats Host at its peril even beside an absolute target;
        // HTTP/2 has no such rule: `:authority` simply wins.
        if two && version != Version::HTTP_2 {
            return Err(Invalid::TwoHosts);
        }
        if !valid_host(auth.as_str().as_bytes()) {
            return Err(Invalid::Malformed);
        }
        let value = HeaderValue::from_str(auth.as_str()).map_err(|_| Invalid::Malformed)?;
        headers.insert(HOST, value);
        return Ok(());
    }
    if two {
        return Err(Invalid::TwoHosts);
    }
    match first {
        None if version == Version::HTTP_11 || version == Version::HTTP_2 => Err(Invalid::Missing),
        None => Ok(()),
        Some(h) if valid_host(h.as_bytes()) => Ok(()),
        Some(_) => Err(Invalid::Malformed),
    }
}

/// A Host value as Envoy 1.40 takes it (nghttp2's authority check):
/// unreserved and sub-delims characters, `:`, `[`, `]`, `@` and `%`. A
/// path, query or fragment character (`a/b`), a space or a control
/// character makes it malformed. Empty is accepted, as Envoy does.
fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'_' | b'~' // unreserved
                    | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' // sub-delims
                    | b':' | b'[' | b']' | b'@' | b'%'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, version: Version, hosts: &[&str]) -> (Result<(), Invalid>, Vec<String>) {
        let uri: Uri = uri.parse().unwrap();
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(HOST, HeaderValue::from_str(v).unwrap());
        }
        let r = normalize(&uri, version, &mut h);
        let after = h
            .get_all(HOST)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (r, after)
    }

    #[test]
    fn absolute_form_replaces_host() {
        let (r, h) = check(
            "http://allowed.example/x",
            Version::HTTP_11,
            &["127.0.0.1:15000"],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(h, ["allowed.example"]);
    }

    #[test]
    fn h2_authority_wins_over_host() {
        let (r, h) = check(
            "http://allowed.example/x",
            Version::HTTP_2,
            &["127.0.0.1:15000", "other"],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(h, ["allowed.example"]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            check("/", Version::HTTP_11, &["a", "b"]).0,
            Err(Invalid::TwoHosts)
        );
        assert_eq!(
            check("/", Version::HTTP_11, &["a", "a"]).0,
            Err(Invalid::TwoHosts)
        );
        assert_eq!(
            check("http://a/", Version::HTTP_11, &["a", "b"]).0,
            Err(Invalid::TwoHosts)
        );
        assert_eq!(check("/", Version::HTTP_11, &[]).0, Err(Invalid::Missing));
        for bad in ["a/b", "a b", "a?b", "a#b", "a\"b"] {
            assert_eq!(
                check("/", Version::HTTP_11, &[bad]).0,
                Err(Invalid::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn accepted_hosts() {
        // Envoy forwards these unchanged; a forward proxy cluster then
        // finds no such host.
        for good in [
            "a",
            "a.example:8080",
            "127.0.0.1:15000",
            "[::1]:80",
            "",
            "u@a",
            "a:b",
            "a,b",
        ] {
            assert_eq!(check("/", Version::HTTP_11, &[good]).0, Ok(()), "{good:?}");
        }
        // HTTP/1.0 may omit Host.
        assert_eq!(check("/", Version::HTTP_10, &[]).0, Ok(()));
    }
}
