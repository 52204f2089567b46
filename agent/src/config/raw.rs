//! The YAML shapes of the one-of blocks, converted to and from the typed enums.
//!
//! serde cannot combine `flatten` with `deny_unknown_fields`, so each block with
//! an "exactly one of" choice is read into a flat struct of options here and
//! turned into a Rust enum, so the engine never sees an invalid combination.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;
use super::matcher::{
    HeaderMatcherConfig, PathMatch, QueryParameterMatcherConfig, RouteMatchConfig, ValueMatch,
};
use super::route::{
    ClusterTarget, DirectResponseConfig, ForwardActionConfig, HeaderValueOptionConfig,
    RedirectConfig, RetryPolicyConfig, RouteAction, RouteConfig, WeightedClusterConfig, defaults,
};

/// Picks the one present option, or explains which are missing or clashing.
fn exactly_one<T>(options: Vec<(&str, Option<T>)>) -> Result<T, String> {
    let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
    let mut present: Vec<(&str, T)> = options
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect();
    match present.len() {
        1 => Ok(present.remove(0).1),
        0 => Err(format!(
            "exactly one of {} is required, found none",
            names.join(", ")
        )),
        _ => {
            let found: Vec<&str> = present.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "exactly one of {} is allowed, found {}",
                names.join(", "),
                found.join(" and ")
            ))
        }
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_true() -> bool {
    true
}

/// YAML form of a route `match`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RouteMatchConfig")]
#[schemars(extend("oneOf" = [{"required": ["prefix"]}, {"required": ["path"]}, {"required": ["safe_regex"]}]))]
pub(super) struct RawRouteMatch {
    /// The path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    /// The path equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    /// The regex matches the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    safe_regex: Option<String>,
    /// Default true.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    case_sensitive: bool,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<HeaderMatcherConfig>,
    /// Empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    methods: Vec<String>,
    /// All must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    query_parameters: Vec<QueryParameterMatcherConfig>,
}

impl TryFrom<RawRouteMatch> for RouteMatchConfig {
    type Error = String;

    fn try_from(raw: RawRouteMatch) -> Result<Self, String> {
        let path_match = exactly_one(vec![
            ("prefix", raw.prefix.map(PathMatch::Prefix)),
            ("path", raw.path.map(PathMatch::Path)),
            ("safe_regex", raw.safe_regex.map(PathMatch::SafeRegex)),
        ])?;
        Ok(Self {
            path_match,
            case_sensitive: raw.case_sensitive,
            headers: raw.headers,
            methods: raw.methods,
            query_parameters: raw.query_parameters,
        })
    }
}

impl From<RouteMatchConfig> for RawRouteMatch {
    fn from(m: RouteMatchConfig) -> Self {
        let (mut prefix, mut path, mut safe_regex) = (None, None, None);
        match m.path_match {
            PathMatch::Prefix(p) => prefix = Some(p),
            PathMatch::Path(p) => path = Some(p),
            PathMatch::SafeRegex(r) => safe_regex = Some(r),
        }
        Self {
            prefix,
            path,
            safe_regex,
            case_sensitive: m.case_sensitive,
            headers: m.headers,
            methods: m.methods,
            query_parameters: m.query_parameters,
        }
    }
}

fn value_match(
    exact: Option<String>,
    safe_regex: Option<String>,
    present: Option<bool>,
) -> Result<ValueMatch, String> {
    exactly_one(vec![
        ("exact", exact.map(ValueMatch::Exact)),
        ("safe_regex", safe_regex.map(ValueMatch::SafeRegex)),
        ("present", present.map(ValueMatch::Present)),
    ])
}

fn split_value_match(v: ValueMatch) -> (Option<String>, Option<String>, Option<bool>) {
    match v {
        ValueMatch::Exact(s) => (Some(s), None, None),
        ValueMatch::SafeRegex(s) => (None, Some(s), None),
        ValueMatch::Present(b) => (None, None, Some(b)),
    }
}

/// The YAML form of a matcher on one named value (a header, a query
/// parameter): `name`, exactly one of `exact`, `safe_regex` and `present`,
/// then the kind's own fields. A macro because serde cannot `flatten` the
/// shared fields into a `deny_unknown_fields` struct, and the schema keeps
/// each kind's own name and wording.
macro_rules! raw_value_matcher {
    (
        $(#[$doc:meta])*
        $raw:ident => $typed:ident as $schema:literal,
        name: $name_doc:literal,
        present: $present_doc:literal,
        $( $(#[$extra_meta:meta])* $extra:ident: $extra_ty:ty, )*
    ) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[schemars(rename = $schema)]
        #[schemars(extend("oneOf" = [{"required": ["exact"]}, {"required": ["safe_regex"]}, {"required": ["present"]}]))]
        pub(super) struct $raw {
            #[doc = $name_doc]
            name: String,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            exact: Option<String>,
            /// The regex matches the whole value.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            safe_regex: Option<String>,
            #[doc = $present_doc]
            #[serde(default, skip_serializing_if = "Option::is_none")]
            present: Option<bool>,
            $( $(#[$extra_meta])* $extra: $extra_ty, )*
        }

        impl TryFrom<$raw> for $typed {
            type Error = String;

            fn try_from(raw: $raw) -> Result<Self, String> {
                Ok(Self {
                    value_match: value_match(raw.exact, raw.safe_regex, raw.present)?,
                    name: raw.name,
                    $( $extra: raw.$extra, )*
                })
            }
        }

        impl From<$typed> for $raw {
            fn from(m: $typed) -> Self {
                let (exact, safe_regex, present) = split_value_match(m.value_match);
                Self {
                    name: m.name,
                    exact,
                    safe_regex,
                    present,
                    $( $extra: m.$extra, )*
                }
            }
        }
    };
}

raw_value_matcher! {
    /// YAML form of a header matcher.
    RawHeaderMatcher => HeaderMatcherConfig as "HeaderMatcherConfig",
    name: " Header name (case-insensitive).",
    present: " true: the header is present; false: it is absent.",
    /// Negates the result.
    #[serde(default, skip_serializing_if = "is_false")]
    invert_match: bool,
}

raw_value_matcher! {
    /// YAML form of a query parameter matcher.
    RawQueryParameterMatcher => QueryParameterMatcherConfig as "QueryParameterMatcherConfig",
    name: " Parameter name (case-sensitive).",
    present: " true: the parameter is present; false: it is absent.",
}

/// YAML form of a route entry.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RouteConfig")]
#[schemars(extend("oneOf" = [{"required": ["route"]}, {"required": ["direct_response"]}, {"required": ["redirect"]}]))]
pub(super) struct RawRoute {
    /// For logs and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(rename = "match")]
    matcher: RouteMatchConfig,
    /// Forward upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<ForwardActionConfig>,
    /// Answer locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    direct_response: Option<DirectResponseConfig>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect: Option<RedirectConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    request_headers_to_add: Vec<HeaderValueOptionConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    request_headers_to_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    response_headers_to_add: Vec<HeaderValueOptionConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    response_headers_to_remove: Vec<String>,
}

impl TryFrom<RawRoute> for RouteConfig {
    type Error = String;

    fn try_from(raw: RawRoute) -> Result<Self, String> {
        let action = exactly_one(vec![
            ("route", raw.route.map(RouteAction::Route)),
            (
                "direct_response",
                raw.direct_response.map(RouteAction::DirectResponse),
            ),
            ("redirect", raw.redirect.map(RouteAction::Redirect)),
        ])?;
        Ok(Self {
            name: raw.name,
            matcher: raw.matcher,
            action,
            request_headers_to_add: raw.request_headers_to_add,
            request_headers_to_remove: raw.request_headers_to_remove,
            response_headers_to_add: raw.response_headers_to_add,
            response_headers_to_remove: raw.response_headers_to_remove,
        })
    }
}

impl From<RouteConfig> for RawRoute {
    fn from(r: RouteConfig) -> Self {
        let (mut route, mut direct_response, mut redirect) = (None, None, None);
        match r.action {
            RouteAction::Route(f) => route = Some(f),
            RouteAction::DirectResponse(d) => direct_response = Some(d),
            RouteAction::Redirect(x) => redirect = Some(x),
        }
        Self {
            name: r.name,
            matcher: r.matcher,
            route,
            direct_response,
            redirect,
            request_headers_to_add: r.request_headers_to_add,
            request_headers_to_remove: r.request_headers_to_remove,
            response_headers_to_add: r.response_headers_to_add,
            response_headers_to_remove: r.response_headers_to_remove,
        }
    }
}

/// YAML form of the `route` block.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ForwardActionConfig")]
#[schemars(extend("oneOf" = [{"required": ["cluster"]}, {"required": ["weighted_clusters"]}]))]
pub(super) struct RawForwardAction {
    /// A cluster name from `clusters`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// Split by weight; at least one entry, weights sum to > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weighted_clusters: Option<Vec<WeightedClusterConfig>>,
    /// Default 15s; `0s` disables.
    #[serde(default = "defaults::route_timeout")]
    timeout: ConfigDuration,
    /// Replaces the matched prefix (only with a `prefix` match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix_rewrite: Option<String>,
    /// Sets the Host header sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_rewrite_literal: Option<String>,
    /// Absent: no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_policy: Option<RetryPolicyConfig>,
}

impl TryFrom<RawForwardAction> for ForwardActionConfig {
    type Error = String;

    fn try_from(raw: RawForwardAction) -> Result<Self, String> {
        let target = exactly_one(vec![
            ("cluster", raw.cluster.map(ClusterTarget::Single)),
            (
                "weighted_clusters",
                raw.weighted_clusters.map(ClusterTarget::Weighted),
            ),
        ])?;
        Ok(Self {
            target,
            timeout: raw.timeout,
            prefix_rewrite: raw.prefix_rewrite,
            host_rewrite_literal: raw.host_rewrite_literal,
            retry_policy: raw.retry_policy,
        })
    }
}

impl From<ForwardActionConfig> for RawForwardAction {
    fn from(f: ForwardActionConfig) -> Self {
        let (cluster, weighted_clusters) = match f.target {
            ClusterTarget::Single(c) => (Some(c), None),
            ClusterTarget::Weighted(w) => (None, Some(w)),
        };
        Self {
            cluster,
            weighted_clusters,
            timeout: f.timeout,
            prefix_rewrite: f.prefix_rewrite,
            host_rewrite_literal: f.host_rewrite_literal,
            retry_policy: f.retry_policy,
        }
    }
}
