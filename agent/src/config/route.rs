//! Routes: a match and what to do with the request.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;
use super::matcher::{HeaderMatcherConfig, RouteMatchConfig};
use super::raw::{RawForwardAction, RawRoute};

/// One entry of `virtual_hosts[].routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawRoute", into = "RawRoute")]
pub struct RouteConfig {
    /// For logs and metrics.
    pub name: Option<String>,
    /// YAML key `match`.
    pub matcher: RouteMatchConfig,
    /// YAML: exactly one of `route`, `direct_response`, `redirect`.
    pub action: RouteAction,
    pub request_headers_to_add: Vec<HeaderValueOptionConfig>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOptionConfig>,
    pub response_headers_to_remove: Vec<String>,
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Forward upstream (YAML `route`).
    Route(ForwardActionConfig),
    /// Answer locally (YAML `direct_response`).
    DirectResponse(DirectResponseConfig),
    /// Answer with a redirect (YAML `redirect`).
    Redirect(RedirectConfig),
}

/// The YAML `route` block: forward to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawForwardAction", into = "RawForwardAction")]
pub struct ForwardActionConfig {
    /// YAML: exactly one of `cluster`, `weighted_clusters`.
    pub target: ClusterTarget,
    /// Whole upstream exchange; default 15s; `0s` disables.
    pub timeout: ConfigDuration,
    /// Replaces the matched prefix (only with a `prefix` match).
    pub prefix_rewrite: Option<String>,
    /// Sets the Host header sent upstream.
    pub host_rewrite_literal: Option<String>,
    /// Absent: no retries.
    pub retry_policy: Option<RetryPolicyConfig>,
}

/// Which cluster(s) a forward goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterTarget {
    /// YAML `cluster: name`.
    Single(String),
    /// YAML `weighted_clusters`; non-empty, weights sum to > 0 (validated).
    Weighted(Vec<WeightedClusterConfig>),
}

impl ClusterTarget {
    /// Every cluster name this target can pick.
    pub fn cluster_names(&self) -> Vec<&str> {
        match self {
            ClusterTarget::Single(name) => vec![name.as_str()],
            ClusterTarget::Weighted(list) => list.iter().map(|w| w.name.as_str()).collect(),
        }
    }
}

/// One weighted choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusterConfig {
    /// A cluster name from `clusters`.
    pub name: String,
    /// Relative weight; 0 never picks this cluster.
    pub weight: u32,
}

/// Retries (Envoy semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyConfig {
    /// Conditions that trigger a retry; at least one. A list, or Envoy's
    /// comma-separated string (`"connect-failure,refused-stream,503"` is not
    /// a condition: codes go in `retriable_status_codes`).
    #[serde(deserialize_with = "retry_on_list")]
    #[schemars(with = "Vec<RetryOn>")]
    pub retry_on: Vec<RetryOn>,
    /// With `retriable-status-codes`: the upstream status codes retried
    /// (Envoy's `retriable_status_codes`; Istio's default: 503).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// With `retriable-headers`: a response carrying a header that matches
    /// any of these is retried (Envoy's `retriable_headers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retriable_headers: Vec<HeaderMatcherConfig>,
    /// How a retry picks its endpoint. `previous_hosts`: not one an earlier
    /// try of this request went to (Envoy's
    /// `envoy.retry_host_predicates.previous_hosts`, which Istio sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_host_predicate: Vec<RetryHostPredicate>,
    /// How many times a retry may pick again when the predicate refuses the
    /// endpoint picked; then it goes to the last one picked. Default 1, as
    /// Envoy's; Istio sets 5. At most 100.
    #[serde(default = "defaults::host_selection_retry_max_attempts")]
    pub host_selection_retry_max_attempts: u32,
    /// Default 1.
    #[serde(default = "defaults::num_retries")]
    pub num_retries: u32,
    /// Timeout of each try; absent: only the route timeout applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<ConfigDuration>,
    #[serde(default)]
    pub retry_back_off: RetryBackOffConfig,
}

/// Envoy's retry conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RetryOn {
    /// Any 5xx response, or a connect failure / reset.
    #[serde(rename = "5xx")]
    FiveXx,
    /// 502, 503, 504, or a connect failure.
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The upstream reset the connection or did not answer.
    #[serde(rename = "reset")]
    Reset,
    /// 409.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// A status code listed in `retriable_status_codes`.
    #[serde(rename = "retriable-status-codes")]
    RetriableStatusCodes,
    /// A response header matching one of `retriable_headers`.
    #[serde(rename = "retriable-headers")]
    RetriableHeaders,
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM): it never
    /// saw the request.
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// gRPC status in the response headers (a trailers-only response):
    /// 1 CANCELLED.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// gRPC 4 DEADLINE_EXCEEDED.
    #[serde(rename = "deadline-exceeded")]
    DeadlineExceeded,
    /// gRPC 8 RESOURCE_EXHAUSTED.
    #[serde(rename = "resource-exhausted")]
    ResourceExhausted,
    /// gRPC 13 INTERNAL.
    #[serde(rename = "internal")]
    Internal,
    /// gRPC 14 UNAVAILABLE.
    #[serde(rename = "unavailable")]
    Unavailable,
}

/// Envoy's retry host predicates weir has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RetryHostPredicate {
    /// Avoid the endpoints earlier tries of the request went to.
    #[serde(
        rename = "previous_hosts",
        alias = "envoy.retry_host_predicates.previous_hosts"
    )]
    PreviousHosts,
}

/// `retry_on` as a YAML list, or as Envoy writes it: one comma-separated
/// string. A list is read element by element, so an error names its index.
fn retry_on_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<RetryOn>, D::Error> {
    use serde::de::{Error, IntoDeserializer, SeqAccess, Visitor};
    struct Conditions;
    impl<'de> Visitor<'de> for Conditions {
        type Value = Vec<RetryOn>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of retry conditions, or one comma-separated string")
        }
        fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
            text.split(',')
                .map(|item| {
                    RetryOn::deserialize(item.trim().into_deserializer())
                        .map_err(|e: serde::de::value::Error| E::custom(e))
                })
                .collect()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<RetryOn>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Conditions)
}

/// Exponential back-off between retries, with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBackOffConfig {
    /// Default 25ms; must be > 0.
    #[serde(default = "defaults::base_interval")]
    pub base_interval: ConfigDuration,
    /// Default 10 x base_interval (Envoy's); must be >= base_interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<ConfigDuration>,
}

impl RetryBackOffConfig {
    /// `max_interval`, or Envoy's default of ten times `base_interval`.
    pub fn effective_max_interval(&self) -> std::time::Duration {
        self.max_interval
            .map_or_else(|| self.base_interval.saturating_mul(10), |m| *m)
    }
}

impl Default for RetryBackOffConfig {
    fn default() -> Self {
        Self {
            base_interval: defaults::base_interval(),
            max_interval: None,
        }
    }
}

/// The YAML `direct_response` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseConfig {
    /// 200..=599.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The YAML `redirect` block; unset parts keep the request's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_redirect: Option<u16>,
    /// Replaces the whole path; not with `prefix_rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_redirect: Option<String>,
    /// Replaces the matched prefix (only with a `prefix` match); not with `path_redirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default = "defaults::redirect_code")]
    pub response_code: u16,
}

/// A header to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOptionConfig {
    pub name: String,
    pub value: String,
    /// true (default): add another value; false: replace existing values.
    #[serde(default = "defaults::append")]
    pub append: bool,
}

/// Default values beside the types that use them.
pub mod defaults {
    use super::ConfigDuration;

    pub fn route_timeout() -> ConfigDuration {
        ConfigDuration::from_secs(15)
    }
    pub fn num_retries() -> u32 {
        1
    }
    pub fn host_selection_retry_max_attempts() -> u32 {
        1
    }
    pub fn base_interval() -> ConfigDuration {
        ConfigDuration::from_millis(25)
    }
    pub fn redirect_code() -> u16 {
        301
    }
    pub fn append() -> bool {
        true
    }
}
