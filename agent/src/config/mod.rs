//! The proxy configuration: YAML file -> typed, validated [`ProxyConfig`].
//!
//! `load_file`/`parse_str` read the document with serde (unknown fields are
//! rejected), then [`validate`] checks the rules that span fields. Every error
//! names the file, the path in the document and the line.
//! Format reference: `docs/config.md`; JSON Schema: `config/schema.json`.

mod addr;
mod authz;
mod cluster;
mod duration;
mod egress;
mod error;
mod listener;
mod locate;
mod matcher;
mod names;
mod parse;
mod raw;
mod root;
mod route;
mod schema;
mod tls;
mod validate;

pub use addr::ResolverAddress;
pub use authz::{
    AuthorizationPolicyConfig, AuthzFromConfig, AuthzOperationConfig, AuthzRuleConfig,
    AuthzSourceConfig, AuthzToConfig, pattern_matches,
};
pub use cluster::{
    CircuitBreakersConfig, ClusterConfig, DiscoveryType, DnsCacheConfig, DnsLookupFamily,
    EndpointConfig, LbPolicy, OutlierDetectionConfig, UpstreamHttpConfig,
};
pub use duration::{ConfigDuration, format_duration, parse_duration};
pub use egress::{EgressAllowConfig, EgressConfig, NetPrefix, UnclaimedTraffic};
pub use error::{ConfigError, DocPath, Issue, Segment};
pub use listener::{
    AccessLogConfig, AccessLogFormat, DEFAULT_SERVER_NAME, ListenerConfig, ListenerLimitsConfig,
    ListenerTimeoutsConfig, MAX_ACCESS_LOGS, VirtualHostConfig, default_upgrade_types,
};
pub use matcher::{
    HeaderMatcherConfig, PathMatch, QueryParameterMatcherConfig, RouteMatchConfig, ValueMatch,
};
pub use names::{check_namespace, check_service_account};
pub use parse::{FileChecks, load_file, parse_str, parse_str_with};
pub use root::{AdminConfig, DnsConfig, OutboundTrafficPolicy, ProxyConfig, StatsConfig};
pub use route::{
    ClusterTarget, DirectResponseConfig, ForwardActionConfig, HeaderValueOptionConfig,
    RedirectConfig, RetryBackOffConfig, RetryHostPredicate, RetryOn, RetryPolicyConfig,
    RouteAction, RouteConfig, WeightedClusterConfig,
};
pub use schema::{json_schema, json_schema_string};
pub use tls::{
    AlpnProtocol, Codec, DownstreamTlsConfig, InlineKey, PemField, PemSource, TlsCertificateConfig,
    TlsVersion, UpstreamTlsConfig,
};

// For other YAML documents of the agent (the pods file): the same lines and messages.
pub(crate) use locate::line_of;
pub(crate) use parse::serde_issue;

/// Compiles a `safe_regex` so that it must match the whole input (Envoy semantics).
pub fn compile_full_match(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
}

#[cfg(test)]
mod examples_tests;
