//! Route tables: virtual hosts matched by authority (exact, `*suffix`,
//! `prefix*`, `*`, as Envoy orders them), then ordered routes, first match wins.

pub mod action;
pub mod headers;
pub mod matcher;

use std::collections::HashMap;

use http::request::Parts;

use self::action::Action;
use self::headers::HeaderOps;
use self::matcher::RouteMatch;

pub struct Route {
    pub name: Option<String>,
    pub matcher: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    pub request_headers: HeaderOps,
}

#[derive(Default)]
pub struct RouteTable {
    exact: HashMap<Box<str>, usize>,
    /// ("suffix" of `*suffix`, vhost), longest first.
    suffixes: Vec<(Box<str>, usize)>,
    /// ("prefix" of `prefix*`, vhost), longest first.
    prefixes: Vec<(Box<str>, usize)>,
    wildcard: Option<usize>,
    vhosts: Vec<VirtualHost>,
}

impl RouteTable {
    /// `domains[i]` are the domains of `vhosts[i]`; earlier entries win on duplicates.
    pub fn new(vhosts: Vec<(VirtualHost, Vec<String>)>) -> Self {
        let mut t = Self::default();
        for (i, (vh, domains)) in vhosts.into_iter().enumerate() {
            for d in domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    t.wildcard.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    t.suffixes.push((s.into(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    t.prefixes.push((p.into(), i));
                } else {
                    t.exact.entry(d.into()).or_insert(i);
                }
            }
            t.vhosts.push(vh);
        }
        t.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        t.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        t
    }

    pub fn vhosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }

    /// Virtual host for an authority, as Envoy picks it: the exact domain,
    /// the longest `*suffix`, the longest `prefix*`, then `*`. The authority is compared whole,
    /// port included (Envoy without `strip_matching_host_port`, checked
    /// against 1.40): `films.local:8080` does not match `films.local`.
    pub fn find_vhost(&self, authority: &str) -> Option<&VirtualHost> {
        let lowered;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let idx = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(&**s))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(&**p))
                    .map(|(_, i)| *i)
            })
            .or(self.wildcard)?;
        self.vhosts.get(idx)
    }
}

impl VirtualHost {
    /// First matching route and its matched prefix length.
    pub fn find_route(&self, req: &Parts) -> Option<(&Route, usize)> {
        self.routes
            .iter()
            .find_map(|r| r.matcher.matches(req).map(|n| (r, n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            routes: vec![],
            request_headers: HeaderOps::default(),
        }
    }

    #[test]
    fn vhost_selection() {
        let t = RouteTable::new(vec![
            (
                vh("exact"),
                vec!["films.local".into(), "api.local:8080".into()],
            ),
            (vh("suffix"), vec!["*.local".into()]),
            (vh("longer"), vec!["*.b.local".into()]),
            (vh("dash"), vec!["*-api.example".into()]),
            (vh("prefix"), vec!["films.*".into()]),
            (vh("any"), vec!["*".into()]),
        ]);
        let f = |h: &str| t.find_vhost(h).map(|v| v.name.clone()).unwrap();
        assert_eq!(f("films.local"), "exact");
        assert_eq!(f("FILMS.local"), "exact");
        // The port is part of the authority, as in Envoy.
        assert_eq!(f("films.local:9000"), "prefix");
        assert_eq!(f("api.local:8080"), "exact");
        assert_eq!(f("api.local:9090"), "any");
        assert_eq!(f("api.local"), "suffix");
        assert_eq!(f("v2-api.example"), "dash");
        // Suffix wildcards before prefix wildcards, as Envoy.
        assert_eq!(f("films.local"), "exact");
        assert_eq!(f("films.b.local"), "longer");
        assert_eq!(f("films.example:8080"), "prefix");
        assert_eq!(
            f("films."),
            "any",
            "a wildcard matches at least one character"
        );
        assert_eq!(f("x.b.local"), "longer");
        assert_eq!(f("other"), "any");
        let none = RouteTable::new(vec![(vh("exact"), vec!["a".into()])]);
        assert!(none.find_vhost("b").is_none());
    }
}
