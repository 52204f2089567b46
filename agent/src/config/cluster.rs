//! Upstream clusters: where routes send traffic, and how.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;

/// A named group of upstream endpoints (`clusters[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique; the `cluster` metric label.
    pub name: String,
    /// How endpoints are discovered (YAML key `type`).
    #[serde(rename = "type", default)]
    pub discovery_type: DiscoveryType,
    /// TCP connect timeout to an endpoint.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: ConfigDuration,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// How often names are resolved again. Absent: 5s for STRICT_DNS, 60s
    /// for DYNAMIC_FORWARD_PROXY (Envoy's defaults: a cluster's
    /// `dns_refresh_rate`, a DNS cache's `dns_refresh_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh_rate: Option<ConfigDuration>,
    #[serde(default)]
    pub dns_lookup_family: DnsLookupFamily,
    /// DNS servers for this cluster (`ip` or `ip:port`), replacing the
    /// top-level `dns.resolvers` (Envoy's cluster `dns_resolvers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_resolvers: Vec<super::addr::ResolverAddress>,
    /// Resolve again when the records' TTL runs out instead of every
    /// `dns_refresh_rate` (Envoy's `respect_dns_ttl`).
    #[serde(default)]
    pub respect_dns_ttl: bool,
    /// At least one (STATIC, STRICT_DNS); none for DYNAMIC_FORWARD_PROXY.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// DYNAMIC_FORWARD_PROXY: the cache of resolved request hosts.
    #[serde(default)]
    pub dns_cache: DnsCacheConfig,
    #[serde(default)]
    pub circuit_breakers: CircuitBreakersConfig,
    /// Absent: no endpoint is ever ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionConfig>,
    #[serde(default)]
    pub upstream_http: UpstreamHttpConfig,
    /// Originate TLS to the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::tls::UpstreamTlsConfig>,
    /// Speak HTTP/2 to the endpoints (one multiplexed connection each).
    #[serde(default)]
    pub http2: bool,
}

impl ClusterConfig {
    /// How often the cluster's names are resolved again: `dns_refresh_rate`,
    /// else Envoy's default for the type: a STRICT_DNS cluster's
    /// `dns_refresh_rate` (5 s), or for DYNAMIC_FORWARD_PROXY the DNS cache's
    /// (`dns_cache_config.dns_refresh_rate`, 60 s).
    pub fn refresh_rate(&self) -> ConfigDuration {
        self.dns_refresh_rate
            .unwrap_or_else(|| match self.discovery_type {
                DiscoveryType::DynamicForwardProxy => defaults::dns_cache_refresh_rate(),
                DiscoveryType::Static | DiscoveryType::StrictDns => defaults::dns_refresh_rate(),
            })
    }
}

/// Service discovery type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscoveryType {
    /// Endpoints are IP literals.
    #[default]
    Static,
    /// Endpoints are DNS names; every resolved address is an endpoint.
    StrictDns,
    /// No endpoints: each request goes to its own Host (`host[:port]`, port
    /// 80 by default), resolved through a DNS cache (Envoy's dynamic
    /// forward proxy cluster and filter).
    DynamicForwardProxy,
}

/// Envoy's `dns_cache_config`, for DYNAMIC_FORWARD_PROXY clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsCacheConfig {
    /// Envoy's cache `name`, used only in its stat names
    /// (`dns_cache.<name>.dns_query_attempt`); default: the cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Most hosts cached at once; a request for one more gets 503.
    #[serde(default = "defaults::max_1024")]
    pub max_hosts: u32,
    /// A host unused this long leaves the cache.
    #[serde(default = "defaults::host_ttl")]
    pub host_ttl: ConfigDuration,
}

impl Default for DnsCacheConfig {
    fn default() -> Self {
        Self {
            name: None,
            max_hosts: defaults::max_1024(),
            host_ttl: defaults::host_ttl(),
        }
    }
}

/// Load-balancing policy among healthy endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

/// Address families used when resolving STRICT_DNS names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DnsLookupFamily {
    #[default]
    Auto,
    V4Only,
    V6Only,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// STATIC: an IP literal; STRICT_DNS: a DNS name (or IP literal).
    pub address: String,
    /// Non-zero TCP port.
    pub port: u16,
}

/// Limits per cluster (Envoy defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakersConfig {
    #[serde(default = "defaults::max_1024")]
    pub max_connections: u32,
    #[serde(default = "defaults::max_1024")]
    pub max_pending_requests: u32,
    #[serde(default = "defaults::max_1024")]
    pub max_requests: u32,
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
}

impl Default for CircuitBreakersConfig {
    fn default() -> Self {
        Self {
            max_connections: defaults::max_1024(),
            max_pending_requests: defaults::max_1024(),
            max_requests: defaults::max_1024(),
            max_retries: defaults::max_retries(),
        }
    }
}

/// Passive health checking: eject endpoints that keep failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetectionConfig {
    /// Consecutive 5xx responses before ejection.
    #[serde(default = "defaults::consecutive")]
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 or connect failures before ejection.
    #[serde(default = "defaults::consecutive")]
    pub consecutive_gateway_failure: u32,
    /// How often ejections are reconsidered.
    #[serde(default = "defaults::outlier_interval")]
    pub interval: ConfigDuration,
    /// An ejection lasts this times the number of times the endpoint was ejected.
    #[serde(default = "defaults::base_ejection_time")]
    pub base_ejection_time: ConfigDuration,
    /// At most this percentage (0..=100) of the endpoints is ejected at once.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetectionConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: defaults::consecutive(),
            consecutive_gateway_failure: defaults::consecutive(),
            interval: defaults::outlier_interval(),
            base_ejection_time: defaults::base_ejection_time(),
            max_ejection_percent: defaults::max_ejection_percent(),
        }
    }
}

/// HTTP connection pool to the upstream endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHttpConfig {
    /// A pooled keep-alive connection idle this long is closed.
    #[serde(default = "defaults::upstream_idle")]
    pub idle_timeout: ConfigDuration,
    /// 0 = unlimited.
    #[serde(default)]
    pub max_requests_per_connection: u32,
}

impl Default for UpstreamHttpConfig {
    fn default() -> Self {
        Self {
            idle_timeout: defaults::upstream_idle(),
            max_requests_per_connection: 0,
        }
    }
}

/// Default values, named so the schema and the docs can point at them.
pub mod defaults {
    use super::ConfigDuration;

    pub fn connect_timeout() -> ConfigDuration {
        ConfigDuration::from_secs(5)
    }
    pub fn dns_refresh_rate() -> ConfigDuration {
        ConfigDuration::from_secs(5)
    }
    pub fn dns_cache_refresh_rate() -> ConfigDuration {
        ConfigDuration::from_secs(60)
    }
    pub fn host_ttl() -> ConfigDuration {
        ConfigDuration::from_secs(300)
    }
    pub fn max_1024() -> u32 {
        1024
    }
    pub fn max_retries() -> u32 {
        3
    }
    pub fn consecutive() -> u32 {
        5
    }
    pub fn outlier_interval() -> ConfigDuration {
        ConfigDuration::from_secs(10)
    }
    pub fn base_ejection_time() -> ConfigDuration {
        ConfigDuration::from_secs(30)
    }
    pub fn max_ejection_percent() -> u32 {
        10
    }
    pub fn upstream_idle() -> ConfigDuration {
        ConfigDuration::from_secs(3600)
    }
}
