//! Route match conditions: path (prefix, exact, regex), headers, methods,
//! query parameters. All conditions of a route must hold.

use http::request::Parts;
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Full match (the pattern is anchored when built).
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    /// Full match (anchored).
    Regex(Regex),
    /// `true`: the value is present; `false`: it is absent.
    Present(bool),
}

#[derive(Debug, Clone)]
pub struct HeaderMatcher {
    pub name: HeaderName,
    pub value: ValueMatch,
    pub invert: bool,
}

pub struct QueryMatcher {
    pub name: String,
    pub value: ValueMatch,
}

pub struct RouteMatch {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub methods: Option<Vec<Method>>,
    pub query: Vec<QueryMatcher>,
}

/// Anchor a pattern so it must match the whole input (Envoy's safe_regex).
pub fn full_match(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl HeaderMatcher {
    /// Envoy's rules: a header sent several times is matched as its values
    /// joined with `,`; an absent header matches only a `present` matcher
    /// (`invert_match` flips that one, not the others: an inverted exact or
    /// regex match still needs the header).
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return match self.value {
                // Absent: `present: false` matches, `present: true` does not; invert flips.
                ValueMatch::Present(want) => want == self.invert,
                _ => false,
            };
        };
        let joined;
        let value = match values.next() {
            None => first.to_str().unwrap_or(""),
            Some(second) => {
                let mut all = vec![first, second];
                all.extend(values);
                joined = all
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(",");
                joined.as_str()
            }
        };
        self.value.matches(Some(value)) != self.invert
    }
}

impl ValueMatch {
    fn matches(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (Self::Present(want), v) => v.is_some() == *want,
            (Self::Exact(e), Some(v)) => e == v,
            (Self::Regex(r), Some(v)) => r.is_match(v),
            (_, None) => false,
        }
    }
}

impl RouteMatch {
    /// Does the request match? Returns the length of the matched path prefix
    /// (for `prefix_rewrite`) when it does.
    pub fn matches(&self, req: &Parts) -> Option<usize> {
        let path = req.uri.path();
        let matched = match &self.path {
            PathMatch::Prefix(p) => {
                let ok = path.len() >= p.len()
                    && if self.case_sensitive {
                        path.as_bytes().starts_with(p.as_bytes())
                    } else {
                        path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                    };
                if !ok {
                    return None;
                }
                p.len()
            }
            PathMatch::Exact(p) => {
                let ok = if self.case_sensitive {
                    path == p
                } else {
                    path.eq_ignore_ascii_case(p)
                };
                if !ok {
                    return None;
                }
                p.len()
            }
            PathMatch::Regex(r) => {
                if !r.is_match(path) {
                    return None;
                }
                0
            }
        };
        if let Some(m) = &self.methods
            && !m.contains(&req.method)
        {
            return None;
        }
        for h in &self.headers {
            if !h.matches(&req.headers) {
                return None;
            }
        }
        if !self.query.is_empty() {
            let q = req.uri.query().unwrap_or("");
            for qm in &self.query {
                if !qm.value.matches(query_param(q, &qm.name)) {
                    return None;
                }
            }
        }
        Some(matched)
    }
}

/// First value of `name` in a raw query string (no percent-decoding).
fn query_param<'a>(q: &'a str, name: &str) -> Option<&'a str> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn m(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            case_sensitive: true,
            headers: vec![],
            methods: None,
            query: vec![],
        }
    }

    #[test]
    fn paths() {
        let p = m(PathMatch::Prefix("/films".into()));
        assert_eq!(p.matches(&parts("GET", "/films/1?x=1", &[])), Some(6));
        assert_eq!(p.matches(&parts("GET", "/Films", &[])), None);
        let mut ci = m(PathMatch::Prefix("/films".into()));
        ci.case_sensitive = false;
        assert_eq!(ci.matches(&parts("GET", "/FILMS/2", &[])), Some(6));
        let e = m(PathMatch::Exact("/ping".into()));
        assert!(e.matches(&parts("GET", "/ping?a=b", &[])).is_some());
        assert!(e.matches(&parts("GET", "/ping/x", &[])).is_none());
        let r = m(PathMatch::Regex(full_match("/v[0-9]+/.*").unwrap()));
        assert!(r.matches(&parts("GET", "/v2/x", &[])).is_some());
        assert!(r.matches(&parts("GET", "/x/v2/x", &[])).is_none());
    }

    #[test]
    fn headers_methods_query() {
        let mut r = m(PathMatch::Prefix("/".into()));
        r.headers.push(HeaderMatcher {
            name: HeaderName::from_static("x-canary"),
            value: ValueMatch::Exact("1".into()),
            invert: false,
        });
        r.headers.push(HeaderMatcher {
            name: HeaderName::from_static("x-block"),
            value: ValueMatch::Present(true),
            invert: true,
        });
        r.methods = Some(vec![Method::GET]);
        r.query.push(QueryMatcher {
            name: "debug".into(),
            value: ValueMatch::Regex(full_match("1|yes").unwrap()),
        });
        assert!(
            r.matches(&parts("GET", "/?debug=yes", &[("x-canary", "1")]))
                .is_some()
        );
        assert!(
            r.matches(&parts("POST", "/?debug=yes", &[("x-canary", "1")]))
                .is_none()
        );
        assert!(
            r.matches(&parts("GET", "/?debug=no", &[("x-canary", "1")]))
                .is_none()
        );
        assert!(
            r.matches(&parts("GET", "/?debug=1", &[("x-canary", "2")]))
                .is_none()
        );
        assert!(
            r.matches(&parts(
                "GET",
                "/?debug=1",
                &[("x-canary", "1"), ("x-block", "")]
            ))
            .is_none()
        );
    }
}
