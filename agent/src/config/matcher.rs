//! What a route matches: path, headers, methods, query parameters.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::raw::{RawHeaderMatcher, RawQueryParameterMatcher, RawRouteMatch};

/// The `match` block of a route; every present condition must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawRouteMatch", into = "RawRouteMatch")]
pub struct RouteMatchConfig {
    /// YAML: exactly one of `prefix`, `path`, `safe_regex`.
    pub path_match: PathMatch,
    /// Applies to the path match; default true.
    pub case_sensitive: bool,
    /// All must match.
    pub headers: Vec<HeaderMatcherConfig>,
    /// Empty: any method. Otherwise the request method must be one of these.
    pub methods: Vec<String>,
    /// All must match.
    pub query_parameters: Vec<QueryParameterMatcherConfig>,
}

/// How the request path (without the query string) is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The path starts with this (YAML `prefix`).
    Prefix(String),
    /// The path equals this (YAML `path`).
    Path(String),
    /// The regex matches the whole path (YAML `safe_regex`); see [`super::compile_full_match`].
    SafeRegex(String),
}

/// One header condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawHeaderMatcher", into = "RawHeaderMatcher")]
pub struct HeaderMatcherConfig {
    /// Header name (case-insensitive).
    pub name: String,
    /// YAML: exactly one of `exact`, `safe_regex`, `present`.
    pub value_match: ValueMatch,
    /// Negates the result.
    pub invert_match: bool,
}

/// One query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    try_from = "RawQueryParameterMatcher",
    into = "RawQueryParameterMatcher"
)]
pub struct QueryParameterMatcherConfig {
    /// Parameter name (case-sensitive).
    pub name: String,
    /// YAML: exactly one of `exact`, `safe_regex`, `present`.
    pub value_match: ValueMatch,
}

/// How a header or query parameter value is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueMatch {
    /// The value equals this.
    Exact(String),
    /// The regex matches the whole value.
    SafeRegex(String),
    /// `true`: the header/parameter is present (any value); `false`: it is absent.
    Present(bool),
}
