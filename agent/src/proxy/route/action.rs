//! What a matched route does: forward to a cluster split, reply directly, or redirect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::proxy::cluster::Cluster;
use crate::proxy::retry::RetryPolicy;
use crate::proxy::split::Split;

pub enum Action {
    Forward(Box<Forward>),
    Direct { status: StatusCode, body: Bytes },
    Redirect(Redirect),
}

pub struct Forward {
    pub split: Split<Cluster>,
    /// `None` = no timeout (config `0s`).
    pub timeout: Option<Duration>,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite: Option<HeaderValue>,
    pub retry: Option<RetryPolicy>,
    /// `x-envoy-expected-rq-timeout-ms` for the upstream ([`Forward::expected_timeout_ms`]).
    pub expected_timeout: Option<HeaderValue>,
}

impl Forward {
    /// What Envoy tells the upstream it expects to wait: the per-try timeout
    /// when it is set and shorter than the route timeout (or there is none),
    /// else the route timeout; nothing when neither is set.
    pub fn expected_timeout_ms(
        timeout: Option<Duration>,
        retry: Option<&RetryPolicy>,
    ) -> Option<u64> {
        let per_try = retry.and_then(|r| r.per_try_timeout);
        let expected = match (timeout, per_try) {
            (Some(t), Some(p)) => Some(t.min(p)),
            (t, p) => t.or(p),
        }?;
        Some(expected.as_millis() as u64)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.split.targets().into_iter()
    }
}

pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub status: StatusCode,
}

impl Redirect {
    /// The `location` for a request to `host` (may carry `:port`) and
    /// `path_and_query`, whose first `matched` path bytes matched the route prefix.
    pub fn location(&self, host: &str, path_and_query: &str, matched: usize) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("http");
        let (orig_host, orig_port) = split_host_port(host);
        let h = self.host.as_deref().unwrap_or(orig_host);
        let port = match (self.port, &self.host, &self.scheme) {
            (Some(p), _, _) => Some(p.to_string()),
            (None, None, None) => orig_port.map(str::to_string),
            _ => None,
        };
        let path = match (&self.path, &self.prefix_rewrite) {
            (Some(p), _) => p.clone(),
            (None, Some(pre)) => format!("{pre}{}", path_and_query.get(matched..).unwrap_or("")),
            (None, None) => path_and_query.to_string(),
        };
        match port {
            Some(p) => format!("{scheme}://{h}:{p}{path}"),
            None => format!("{scheme}://{h}{path}"),
        }
    }
}

/// Split `host[:port]` (IPv6 literals in brackets are kept whole).
pub fn split_host_port(host: &str) -> (&str, Option<&str>) {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            (&host[..i], Some(&host[i + 1..]))
        }
        _ => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_timeout_is_the_shorter_of_route_and_per_try() {
        let ms = Duration::from_millis;
        let retry = |per_try: Option<Duration>| RetryPolicy {
            on: 0,
            status_codes: Vec::new(),
            headers: Vec::new(),
            avoid_previous_hosts: None,
            num_retries: 1,
            per_try_timeout: per_try,
            base_interval: ms(25),
            max_interval: ms(250),
        };
        assert_eq!(
            Forward::expected_timeout_ms(Some(ms(15000)), None),
            Some(15000)
        );
        assert_eq!(
            Forward::expected_timeout_ms(Some(ms(500)), Some(&retry(Some(ms(200))))),
            Some(200)
        );
        assert_eq!(
            Forward::expected_timeout_ms(Some(ms(500)), Some(&retry(Some(ms(900))))),
            Some(500)
        );
        assert_eq!(
            Forward::expected_timeout_ms(None, Some(&retry(Some(ms(300))))),
            Some(300)
        );
        assert_eq!(Forward::expected_timeout_ms(None, Some(&retry(None))), None);
    }

    #[test]
    fn redirect_locations() {
        let r = Redirect {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: None,
            prefix_rewrite: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        assert_eq!(r.location("a.com:8080", "/x?y=1", 0), "https://a.com/x?y=1");
        let r = Redirect {
            scheme: None,
            host: Some("b.com".into()),
            port: Some(8443),
            path: None,
            prefix_rewrite: Some("/new/".into()),
            status: StatusCode::FOUND,
        };
        assert_eq!(r.location("a.com", "/old/x", 5), "http://b.com:8443/new/x");
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
