//! Authorization by workload identity (issue 14 item 4), decided where a
//! connection or request reaches an enrolled pod (the inbound side), from
//! what weir itself authenticated: the source pod the eBPF side named on
//! this node, or the workload a mesh tunnel's peer certificate names. Never
//! from anything a request says. Policies are the config's
//! `authorization_policies` (Istio's AuthorizationPolicy, action ALLOW).

use std::sync::Arc;

use prometheus::{IntCounterVec, Registry};

use super::PodIdentity;
use super::bounded::BoundedValues;
use crate::config::pattern_matches;
use crate::config::{AuthorizationPolicyConfig, AuthzOperationConfig, AuthzSourceConfig};
use crate::proxy::metrics::{MetricsError, counter};

/// Istio's body for a request its RBAC filter denied.
pub const DENIED_BODY: &str = "RBAC: access denied";
/// Principals used as metric labels, at most; beyond them `other`.
pub const MAX_PRINCIPAL_LABELS: usize = 1024;
/// The trust domain of same-node principals when the agent has no mesh
/// (Kubernetes' and Istio's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A source weir authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub namespace: Arc<str>,
    /// `<trust-domain>/ns/<namespace>/sa/<service-account>`, Istio's form.
    pub name: Arc<str>,
}

impl Principal {
    /// As Istio's metrics write it: `spiffe://<trust-domain>/ns/...`.
    pub fn uri(&self) -> String {
        format!("spiffe://{}", self.name)
    }

    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            namespace: Arc::from(namespace),
            name: Arc::from(format!(
                "{trust_domain}/ns/{namespace}/sa/{service_account}"
            )),
        }
    }
}

/// What a connection or request reaches: the pod's port, and for HTTP its
/// method and path (the query left out, as Istio matches paths).
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    pub port: u16,
    pub http: Option<(&'a str, &'a str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No policy selects the pod: everything passes.
    Open,
    Allowed,
    Denied,
}

/// Whether any policy selects `pod`.
pub fn selects(policies: &[AuthorizationPolicyConfig], pod: &PodIdentity) -> bool {
    policies.iter().any(|p| selected(p, pod))
}

fn selected(policy: &AuthorizationPolicyConfig, pod: &PodIdentity) -> bool {
    *policy.namespace == *pod.namespace
        && policy
            .service_account
            .as_deref()
            .is_none_or(|sa| sa == &*pod.service_account)
}

/// The decision for `source` (`None`: not authenticated) reaching `pod`
/// with `op`.
pub fn decide(
    policies: &[AuthorizationPolicyConfig],
    pod: &PodIdentity,
    source: Option<&Principal>,
    op: Operation<'_>,
) -> Decision {
    let mut selecting = policies.iter().filter(|p| selected(p, pod)).peekable();
    if selecting.peek().is_none() {
        return Decision::Open;
    }
    let allowed = selecting.flat_map(|p| &p.rules).any(|rule| {
        (rule.from.is_empty() || rule.from.iter().any(|f| source_matches(&f.source, source)))
            && (rule.to.is_empty() || rule.to.iter().any(|t| operation_matches(&t.operation, op)))
    });
    if allowed {
        Decision::Allowed
    } else {
        Decision::Denied
    }
}

fn any_matches(patterns: &[String], value: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, value))
}

fn source_matches(want: &AuthzSourceConfig, source: Option<&Principal>) -> bool {
    // Listing principals or namespaces asks for an authenticated source.
    let Some(source) = source else {
        return false;
    };
    (want.principals.is_empty() || any_matches(&want.principals, &source.name))
        && (want.namespaces.is_empty() || any_matches(&want.namespaces, &source.namespace))
}

fn operation_matches(want: &AuthzOperationConfig, op: Operation<'_>) -> bool {
    let port = want.ports.is_empty() || want.ports.contains(&op.port);
    let http = match op.http {
        Some((method, path)) => {
            (want.methods.is_empty() || want.methods.iter().any(|m| m == method))
                && (want.paths.is_empty() || any_matches(&want.paths, path))
        }
        // A rule about HTTP requests matches no plain TCP connection.
        None => want.methods.is_empty() && want.paths.is_empty(),
    };
    port && http
}

/// Denials, counted with the source.
pub(super) struct AuthzMetrics {
    denied: IntCounterVec,
    principals: BoundedValues,
}

impl AuthzMetrics {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            denied: counter(
                r,
                "weir_intercept_authz_denied_total",
                "Requests (403) and connections (closed) to enrolled pods denied by authorization_policies, by source principal (unknown: not authenticated) and namespace, destination pod, and protocol (http, tcp).",
                &[
                    "source_principal",
                    "source_namespace",
                    "destination_namespace",
                    "destination_pod",
                    "protocol",
                ],
            )?,
            principals: BoundedValues::new(MAX_PRINCIPAL_LABELS),
        })
    }

    pub(super) fn denied(
        &self,
        source: Option<&Principal>,
        source_namespace: &str,
        pod: &PodIdentity,
        protocol: &str,
    ) {
        let principal = match source {
            Some(p) => self.principals.label(&p.name),
            None => Arc::from(super::identity::UNKNOWN),
        };
        self.denied
            .with_label_values(&[
                &*principal,
                source_namespace,
                &pod.namespace,
                &pod.name,
                protocol,
            ])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthzFromConfig, AuthzRuleConfig, AuthzToConfig};

    fn pod(ns: &str, sa: &str) -> PodIdentity {
        PodIdentity {
            namespace: ns.into(),
            name: "p".into(),
            service_account: sa.into(),
            workload: "w".into(),
        }
    }

    fn policy(sa: Option<&str>, rules: Vec<AuthzRuleConfig>) -> AuthorizationPolicyConfig {
        AuthorizationPolicyConfig {
            name: "p".into(),
            namespace: "shop".into(),
            service_account: sa.map(Into::into),
            rules,
        }
    }

    fn from(principals: &[&str], namespaces: &[&str]) -> Vec<AuthzFromConfig> {
        vec![AuthzFromConfig {
            source: AuthzSourceConfig {
                principals: principals.iter().map(|s| s.to_string()).collect(),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            },
        }]
    }

    fn to(ports: &[u16], methods: &[&str], paths: &[&str]) -> Vec<AuthzToConfig> {
        vec![AuthzToConfig {
            operation: AuthzOperationConfig {
                ports: ports.to_vec(),
                methods: methods.iter().map(|s| s.to_string()).collect(),
                paths: paths.iter().map(|s| s.to_string()).collect(),
            },
        }]
    }

    const TCP: Operation<'static> = Operation {
        port: 8080,
        http: None,
    };

    fn get(path: &str) -> Operation<'_> {
        Operation {
            port: 8080,
            http: Some(("GET", path)),
        }
    }

    #[test]
    fn only_selected_pods_are_restricted() {
        let policies = [policy(Some("backend"), vec![])];
        let frontend = Principal::new("cluster.local", "shop", "frontend");
        assert_eq!(
            decide(&policies, &pod("shop", "web"), Some(&frontend), TCP),
            Decision::Open
        );
        assert_eq!(
            decide(&policies, &pod("other", "backend"), None, TCP),
            Decision::Open
        );
        // Selected, no rule: nothing passes.
        assert_eq!(
            decide(&policies, &pod("shop", "backend"), Some(&frontend), TCP),
            Decision::Denied
        );
        assert!(selects(&[policy(None, vec![])], &pod("shop", "any")));
    }

    #[test]
    fn sources_must_be_authenticated_and_match() {
        let rule = AuthzRuleConfig {
            from: from(&["cluster.local/ns/shop/sa/front*"], &[]),
            to: vec![],
        };
        let policies = [policy(None, vec![rule])];
        let target = pod("shop", "backend");
        let frontend = Principal::new("cluster.local", "shop", "frontend");
        let batch = Principal::new("cluster.local", "shop", "batch");
        assert_eq!(
            decide(&policies, &target, Some(&frontend), TCP),
            Decision::Allowed
        );
        assert_eq!(
            decide(&policies, &target, Some(&batch), TCP),
            Decision::Denied
        );
        assert_eq!(decide(&policies, &target, None, TCP), Decision::Denied);
        let by_namespace = [policy(
            None,
            vec![AuthzRuleConfig {
                from: from(&[], &["shop"]),
                to: vec![],
            }],
        )];
        assert_eq!(
            decide(&by_namespace, &target, Some(&batch), TCP),
            Decision::Allowed
        );
        let elsewhere = Principal::new("cluster.local", "ads", "frontend");
        assert_eq!(
            decide(&by_namespace, &target, Some(&elsewhere), TCP),
            Decision::Denied
        );
    }

    #[test]
    fn operations_match_ports_methods_and_paths_and_http_rules_never_match_tcp() {
        let rule = AuthzRuleConfig {
            from: vec![],
            to: to(&[8080], &["GET"], &["/api/*", "*.css", "/health"]),
        };
        let policies = [policy(None, vec![rule])];
        let target = pod("shop", "backend");
        for path in ["/api/orders", "/site.css", "/health"] {
            assert_eq!(
                decide(&policies, &target, None, get(path)),
                Decision::Allowed,
                "{path}"
            );
        }
        for path in ["/healthz", "/admin", "/api"] {
            assert_eq!(
                decide(&policies, &target, None, get(path)),
                Decision::Denied,
                "{path}"
            );
        }
        let post = Operation {
            port: 8080,
            http: Some(("POST", "/api/orders")),
        };
        assert_eq!(decide(&policies, &target, None, post), Decision::Denied);
        let other_port = Operation {
            port: 9090,
            http: Some(("GET", "/api/orders")),
        };
        assert_eq!(
            decide(&policies, &target, None, other_port),
            Decision::Denied
        );
        assert_eq!(decide(&policies, &target, None, TCP), Decision::Denied);
        // A ports-only rule does match TCP.
        let ports_only = [policy(
            None,
            vec![AuthzRuleConfig {
                from: vec![],
                to: to(&[8080], &[], &[]),
            }],
        )];
        assert_eq!(decide(&ports_only, &target, None, TCP), Decision::Allowed);
    }

    #[test]
    fn principal_labels_are_bounded() {
        let registry = Registry::new();
        let m = AuthzMetrics::new(&registry).unwrap();
        let target = pod("ns", "backend");
        for i in 0..MAX_PRINCIPAL_LABELS + 10 {
            let source = Principal::new("td", "n", &format!("s{i}"));
            m.denied(Some(&source), "n", &target, "http");
        }
        let families = registry.gather();
        let denied = families
            .iter()
            .find(|f| f.name() == "weir_intercept_authz_denied_total")
            .unwrap();
        // The bound's worth of principals, and `other` for the rest.
        assert_eq!(denied.get_metric().len(), MAX_PRINCIPAL_LABELS + 1);
    }
}
