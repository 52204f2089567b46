//! Syntax of the strings the proxy puts on the wire: header names and values,
//! methods, host names, domains.

use std::net::IpAddr;

/// RFC 9110 `tchar`: what a header name or a method may contain.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header name: a non-empty token (so no `:` pseudo-headers, spaces or controls).
pub(super) fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name must not be empty".to_owned());
    }
    match name.bytes().find(|b| !is_tchar(*b)) {
        Some(b) => Err(format!(
            "invalid header name {name:?}: character {:?} is not allowed in an HTTP header name",
            char::from(b)
        )),
        None => Ok(()),
    }
}

/// A header value: visible characters, spaces and tabs; no CR, LF or NUL.
pub(super) fn check_header_value(value: &str) -> Result<(), String> {
    let bad = value
        .bytes()
        .find(|&b| b != b'\t' && (b < 0x20 || b == 0x7f));
    match bad {
        Some(b) => Err(format!(
            "invalid header value {value:?}: control character {b:#04x} is not allowed"
        )),
        None => Ok(()),
    }
}

/// An HTTP method: a non-empty token.
pub(super) fn check_method(method: &str) -> Result<(), String> {
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(format!("invalid HTTP method {method:?}"));
    }
    Ok(())
}

/// A DNS name (letters, digits, `-`, `_`, dot-separated labels of 1..=63, total <= 253).
pub(super) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A host as written in a Host header: a DNS name or an IP (IPv6 in brackets),
/// optionally followed by `:port`.
pub(super) fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = split_host_port(host);
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p != 0)
    {
        return Err(format!("invalid port {port:?}"));
    }
    let valid = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => name.parse::<IpAddr>().is_ok() || is_dns_name(name),
    };
    if valid {
        Ok(())
    } else {
        Err("expected a host name or IP address, optionally with :port".to_owned())
    }
}

fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.rsplit_once("]:") {
            Some((name, port)) => (&host[..name.len() + 1], Some(port)),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

/// A TLS server name as certificates and `server_names` take it: a DNS
/// name or `*.suffix`.
pub(super) fn check_server_name(name: &str) -> Result<(), String> {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    if bare.is_empty() || bare.contains('*') || bare.contains(':') {
        return Err(format!(
            "invalid server name {name:?}: expected a DNS name or *.suffix"
        ));
    }
    Ok(())
}

/// A virtual host domain: `*`, `*.suffix`, or an exact host (optionally `host:port`).
pub(super) fn check_domain(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("a domain must not be empty".to_owned());
    }
    if domain == "*" {
        return Ok(());
    }
    // Envoy's wildcards: one `*`, at the start (`*.foo.com`, `*-bar.foo.com`)
    // or at the end (`foo.*`, `foo-*`), matching at least one character.
    let rest = domain
        .strip_prefix('*')
        .or_else(|| domain.strip_suffix('*'));
    if let Some(rest) = rest {
        let chars_ok = rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_[]".contains(c));
        if rest.is_empty() || !chars_ok {
            return Err(format!(
                "invalid wildcard domain {domain:?}: one \"*\" at the start or the end of host characters"
            ));
        }
        return Ok(());
    }
    if domain.contains('*') {
        return Err("a \"*\" wildcard goes at the start or the end of a domain".to_owned());
    }
    check_host(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names() {
        assert_eq!(check_header_name("x-from"), Ok(()));
        assert_eq!(check_header_name("X-Request-ID"), Ok(()));
        assert_eq!(
            check_header_name("x from"),
            Err("invalid header name \"x from\": character ' ' is not allowed in an HTTP header name".to_owned())
        );
        assert!(check_header_name(":authority").is_err());
        assert!(check_header_name("").is_err());
    }

    #[test]
    fn header_values() {
        assert_eq!(check_header_value("a b\tc"), Ok(()));
        assert_eq!(
            check_header_value("a\r\nb"),
            Err(
                "invalid header value \"a\\r\\nb\": control character 0x0d is not allowed"
                    .to_owned()
            )
        );
    }

    #[test]
    fn methods() {
        assert_eq!(check_method("GET"), Ok(()));
        assert_eq!(
            check_method("G T"),
            Err("invalid HTTP method \"G T\"".to_owned())
        );
        assert!(check_method("").is_err());
    }

    #[test]
    fn hosts_and_domains() {
        for ok in [
            "*",
            "*.films.local",
            "films.local",
            "films.local:8080",
            "10.0.0.1",
            "[::1]:80",
            "localhost.",
        ] {
            assert_eq!(check_domain(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_domain(""),
            Err("a domain must not be empty".to_owned())
        );
        // Envoy's wildcards: one, at the start or the end.
        for ok in ["films.*", "films-*", "*-api.example.com", "*.example.com"] {
            assert_eq!(check_domain(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_domain("fi*lms"),
            Err("a \"*\" wildcard goes at the start or the end of a domain".to_owned())
        );
        assert!(check_domain("*.*.x").is_err());
        assert!(check_domain("**").is_err());
        assert_eq!(check_domain("a:0"), Err("invalid port \"0\"".to_owned()));
        assert_eq!(
            check_domain("bad host"),
            Err("expected a host name or IP address, optionally with :port".to_owned())
        );
        assert!(!is_dns_name("-a.b"));
        assert!(!is_dns_name(&"a".repeat(64)));
        assert!(is_dns_name("film-service.default.svc.cluster.local"));
    }
}
