//! Authorization by workload identity (issue 14 item 4): Istio's
//! `AuthorizationPolicy` with action ALLOW, as its users write it, with the
//! workload selector made of what weir knows of a pod (its namespace and
//! service account; weir reads no pod labels). Enforced where a
//! connection reaches an enrolled pod (`intercept::authz`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may reach a set of enrolled pods. A pod selected by at least one
/// policy accepts only what one of their rules allows; a pod no policy
/// selects accepts everything (Istio's ALLOW semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicyConfig {
    /// Unique among the policies; for logs.
    pub name: String,
    /// The pods it applies to: enrolled pods of this namespace...
    pub namespace: String,
    /// ...running as this service account (every pod of the namespace when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// What is allowed; a request or connection no rule matches is denied
    /// (HTTP: 403 `RBAC: access denied`; other TCP: closed). No rule at
    /// all denies everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthzRuleConfig>,
}

/// Matches when one of `from` matches (or `from` is empty) and one of `to`
/// matches (or `to` is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzRuleConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzFromConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AuthzToConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzFromConfig {
    pub source: AuthzSourceConfig,
}

/// An authenticated source: every listed field must match. A source
/// weir cannot authenticate (a client outside the mesh, another node
/// without the mesh tunnel) has no principal and no namespace, so it
/// matches no source that lists either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzSourceConfig {
    /// Istio principals, `<trust-domain>/ns/<namespace>/sa/<service-account>`:
    /// exact, `*` (any authenticated source), `prefix*` or `*suffix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Source namespaces, matched the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzToConfig {
    pub operation: AuthzOperationConfig,
}

/// What is reached: every listed field must match. `paths` and `methods`
/// are HTTP's: a rule that lists them matches no plain TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzOperationConfig {
    /// The pod's ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Request paths (without the query): exact, `*`, `prefix*` or `*suffix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Request methods, exact (`GET`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// Whether `pattern` (Istio's string match: exact, `*`, `prefix*`,
/// `*suffix`) matches `value`.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

/// Why `pattern` is not one [`pattern_matches`] understands, if it is not.
pub fn pattern_problem(pattern: &str) -> Option<&'static str> {
    if pattern.is_empty() {
        return Some("is empty");
    }
    let inner = pattern
        .strip_prefix('*')
        .or_else(|| pattern.strip_suffix('*'))
        .unwrap_or(pattern);
    inner
        .contains('*')
        .then_some("may hold `*` only alone, first or last (exact, `*`, `prefix*`, `*suffix`)")
}
