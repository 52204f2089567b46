//! SPIFFE IDs of Kubernetes workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing is strict on purpose: an ID is compared as a value (trust domain
//! equality, cache keys), so every accepted string must have exactly one
//! spelling. No percent-encoding, no query or fragment, no empty or extra
//! segments, no uppercase.

use std::fmt;

/// The SPIFFE spec's limit on a trust domain name.
const TRUST_DOMAIN_MAX: usize = 255;
/// Kubernetes: a namespace is a DNS-1123 label.
const NAMESPACE_MAX: usize = 63;
/// Kubernetes: a service account name is a DNS-1123 subdomain.
const SERVICE_ACCOUNT_MAX: usize = 253;

const SCHEME: &str = "spiffe://";

/// Why a string is not a SPIFFE ID weir accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("`{0}` does not start with `spiffe://`")]
    Scheme(String),
    #[error("trust domain `{domain}`: {reason}")]
    TrustDomain {
        domain: String,
        reason: &'static str,
    },
    #[error("`{0}`: the path must be exactly /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error("namespace `{name}`: {reason}")]
    Namespace { name: String, reason: &'static str },
    #[error("service account `{name}`: {reason}")]
    ServiceAccount { name: String, reason: &'static str },
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`, 1 to 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(domain: &str) -> Result<Self, SpiffeError> {
        let fail = |reason| SpiffeError::TrustDomain {
            domain: domain.to_owned(),
            reason,
        };
        if domain.is_empty() {
            return Err(fail("empty"));
        }
        if domain.len() > TRUST_DOMAIN_MAX {
            return Err(fail("longer than 255 bytes"));
        }
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
        if !domain.bytes().all(allowed) {
            return Err(fail(
                "only lowercase letters, digits, `.`, `-` and `_` are allowed",
            ));
        }
        Ok(Self(domain.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workload's identity: who it runs as, in which trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: TrustDomain,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    /// Builds an ID from its parts, each validated as [`SpiffeId::parse`] would.
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        check_label(namespace, NAMESPACE_MAX).map_err(|reason| SpiffeError::Namespace {
            name: namespace.to_owned(),
            reason,
        })?;
        check_subdomain(service_account, SERVICE_ACCOUNT_MAX).map_err(|reason| {
            SpiffeError::ServiceAccount {
                name: service_account.to_owned(),
                reason,
            }
        })?;
        Ok(Self {
            trust_domain,
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    pub fn parse(s: &str) -> Result<Self, SpiffeError> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeError::Scheme(s.to_owned()))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        // `?`, `#` and `%` fail the character checks of whichever part holds
        // them; `@` and `:` (userinfo, port) fail the trust domain's.
        let trust_domain = TrustDomain::new(domain)?;
        let mut segments = path.split('/');
        let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(SpiffeError::Path(s.to_owned()));
        };
        Self::new(trust_domain, ns, sa)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// DNS-1123 label: lowercase alphanumerics and `-`, starting and ending alphanumeric.
fn check_label(name: &str, max: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > max {
        return Err("too long");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !bytes.iter().all(|&b| alnum(b) || b == b'-') {
        return Err("only lowercase letters, digits and `-` are allowed");
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// DNS-1123 subdomain: labels joined by `.`, at most `max` bytes in all.
fn check_subdomain(name: &str, max: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > max {
        return Err("too long");
    }
    name.split('.')
        .try_for_each(|label| check_label(label, NAMESPACE_MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            "spiffe://cluster.local/ns/default/sa/default",
            "spiffe://my_domain-1.example/ns/kube-system/sa/coredns.v2",
            "spiffe://a/ns/0/sa/9",
        ] {
            let id = SpiffeId::parse(s).unwrap();
            assert_eq!(id.to_string(), s);
            assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
        let id = SpiffeId::parse("spiffe://td/ns/prod/sa/web").unwrap();
        assert_eq!(id.trust_domain.as_str(), "td");
        assert_eq!(id.namespace, "prod");
        assert_eq!(id.service_account, "web");
    }

    #[test]
    fn rejects() {
        let long_ns = format!("spiffe://td/ns/{}/sa/a", "n".repeat(64));
        let long_sa = format!("spiffe://td/ns/a/sa/{}", "s.".repeat(127) + "s");
        let long_td = format!("spiffe://{}/ns/a/sa/a", "t".repeat(256));
        type Expected = fn(&SpiffeError) -> bool;
        let cases: &[(&str, Expected)] = &[
            ("http://td/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::Scheme(_))
            }),
            ("SPIFFE://td/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::Scheme(_))
            }),
            ("spiffe://Cluster.local/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::TrustDomain { .. })
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(e, SpiffeError::TrustDomain { .. })
            }),
            ("spiffe://td:443/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::TrustDomain { .. })
            }),
            ("spiffe://user@td/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::TrustDomain { .. })
            }),
            ("spiffe://td", |e| matches!(e, SpiffeError::Path(_))),
            ("spiffe://td/ns/a", |e| matches!(e, SpiffeError::Path(_))),
            ("spiffe://td/ns/a/sa", |e| matches!(e, SpiffeError::Path(_))),
            ("spiffe://td/ns/a/sa/b/c", |e| {
                matches!(e, SpiffeError::Path(_))
            }),
            ("spiffe://td/ns/a/sa/b/", |e| {
                matches!(e, SpiffeError::Path(_))
            }),
            ("spiffe://td/x/a/sa/b", |e| {
                matches!(e, SpiffeError::Path(_))
            }),
            ("spiffe://td//ns/a/sa/b", |e| {
                matches!(e, SpiffeError::Path(_))
            }),
            ("spiffe://td/ns//sa/b", |e| {
                matches!(e, SpiffeError::Namespace { .. })
            }),
            ("spiffe://td/ns/a/sa/", |e| {
                matches!(e, SpiffeError::ServiceAccount { .. })
            }),
            ("spiffe://td/ns/Prod/sa/b", |e| {
                matches!(e, SpiffeError::Namespace { .. })
            }),
            ("spiffe://td/ns/a.b/sa/b", |e| {
                matches!(e, SpiffeError::Namespace { .. })
            }),
            ("spiffe://td/ns/-a/sa/b", |e| {
                matches!(e, SpiffeError::Namespace { .. })
            }),
            ("spiffe://td/ns/a/sa/b..c", |e| {
                matches!(e, SpiffeError::ServiceAccount { .. })
            }),
            (&long_ns, |e| matches!(e, SpiffeError::Namespace { .. })),
            (&long_sa, |e| {
                matches!(e, SpiffeError::ServiceAccount { .. })
            }),
            (&long_td, |e| matches!(e, SpiffeError::TrustDomain { .. })),
            ("spiffe://td/ns/a/sa/b?x=1", |e| {
                matches!(e, SpiffeError::ServiceAccount { .. })
            }),
            ("spiffe://td/ns/a/sa/b#frag", |e| {
                matches!(e, SpiffeError::ServiceAccount { .. })
            }),
            ("spiffe://td?q/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::TrustDomain { .. })
            }),
            ("spiffe://td/ns/a%62/sa/b", |e| {
                matches!(e, SpiffeError::Namespace { .. })
            }),
            ("spiffe://t%64/ns/a/sa/b", |e| {
                matches!(e, SpiffeError::TrustDomain { .. })
            }),
        ];
        for (s, expected) in cases {
            match SpiffeId::parse(s) {
                Ok(id) => panic!("{s} accepted as {id}"),
                Err(e) => assert!(expected(&e), "{s}: unexpected error {e:?}"),
            }
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let ns = "n".repeat(63);
        let sa =
            "s".repeat(63) + "." + &"s".repeat(63) + "." + &"s".repeat(63) + "." + &"s".repeat(61);
        assert_eq!(sa.len(), 253);
        let td = "t".repeat(255);
        let s = format!("spiffe://{td}/ns/{ns}/sa/{sa}");
        assert_eq!(SpiffeId::parse(&s).unwrap().to_string(), s);
    }

    #[test]
    fn trust_domain_newtype_validates() {
        assert!(TrustDomain::new("cluster.local").is_ok());
        assert!(TrustDomain::new("").is_err());
        assert!(TrustDomain::new("Cluster.local").is_err());
        assert!(TrustDomain::new("a/b").is_err());
    }
}
