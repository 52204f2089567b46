//! The whole document: admin, stats, listeners, clusters.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::ClusterConfig;
use super::duration::ConfigDuration;
use super::listener::ListenerConfig;

/// The proxy configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Admin endpoint (`/config_dump`, `/stats/prometheus`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    /// Read-only metrics listener (`/stats/prometheus`, `/ready`), for
    /// scraping from the network while the admin stays on loopback; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsConfig>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    /// What intercepted outbound traffic to a destination no listener claims
    /// gets (Istio's `outboundTrafficPolicy.mode`).
    #[serde(default)]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Enrolled pods' connections no listener claims, decided in the kernel
    /// at `connect()`: straight out without the proxy hop (`ALLOW_ANY`), or
    /// refused with EPERM unless allowed (`REGISTRY_ONLY`).
    #[serde(
        default,
        skip_serializing_if = "super::egress::EgressConfig::is_default"
    )]
    pub egress: super::egress::EgressConfig,
    /// How long an intercepted connection may stay silent before it is
    /// taken as opaque TCP (server-first protocols: MySQL, SMTP); Istio's
    /// `protocolDetectionTimeout`. `0s`: wait for the client's first bytes
    /// without limit.
    #[serde(default = "default_protocol_detection_timeout")]
    pub protocol_detection_timeout: ConfigDuration,
    /// How long an intercepted connection spliced as TLS or opaque TCP may
    /// pass no byte either way before weir closes both sides (Envoy's
    /// `tcp_proxy` `idle_timeout`, Istio's `connectionPool.tcp.idleTimeout`).
    /// `0s`: no limit.
    #[serde(default = "default_opaque_idle_timeout")]
    pub opaque_idle_timeout: ConfigDuration,
    /// How STRICT_DNS clusters and forward-proxy caches resolve names
    /// (Envoy's bootstrap `typed_dns_resolver_config`, c-ares).
    #[serde(default)]
    pub dns: DnsConfig,
    /// Who may reach which enrolled pods, by workload identity (Istio's
    /// `AuthorizationPolicy`, action ALLOW); `docs/mesh.md`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_policies: Vec<super::authz::AuthorizationPolicyConfig>,
}

/// Name resolution for every cluster; a cluster's `dns_resolvers` replace
/// `resolvers` for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers (`ip` or `ip:port`), asked over UDP, then TCP when a
    /// reply is truncated or UDP fails; empty: those of `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<super::addr::ResolverAddress>,
    /// How long one query waits for an answer.
    #[serde(default = "default_dns_timeout")]
    pub timeout: ConfigDuration,
    /// Tries per server before a name fails.
    #[serde(default = "default_dns_attempts")]
    pub attempts: u8,
    /// Appended to names with fewer than `ndots` dots; absent: those of
    /// `/etc/resolv.conf` (a pod's `<ns>.svc.cluster.local` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_domains: Option<Vec<String>>,
    /// Absent: `/etc/resolv.conf`'s `options ndots:` (1 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ndots: Option<u8>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            resolvers: Vec::new(),
            timeout: default_dns_timeout(),
            attempts: default_dns_attempts(),
            search_domains: None,
            ndots: None,
        }
    }
}

/// c-ares' defaults, as Envoy runs it.
fn default_dns_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}

fn default_dns_attempts() -> u8 {
    2
}

/// Istio's former default: a server-first protocol's greeting waits at most
/// this once per connection.
fn default_protocol_detection_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(100)
}

/// Envoy's and Istio's default for TCP proxying: one hour.
fn default_opaque_idle_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}

/// Istio's outbound traffic policy modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OutboundTrafficPolicy {
    /// Unknown destinations are passed through to their original address.
    #[default]
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
    /// Unknown destinations are refused: HTTP gets 502, other protocols are closed.
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
}

/// The admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port`, or a port alone (`15000`) to bind loopback; absent:
    /// `127.0.0.1:15000`. Port 0 lets the kernel pick.
    #[serde(
        default = "default_admin_address",
        deserialize_with = "super::addr::deserialize_admin"
    )]
    pub address: SocketAddr,
}

fn default_admin_address() -> SocketAddr {
    super::addr::ADMIN_DEFAULT
}

/// The stats listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// `ip:port`; port 0 lets the kernel pick.
    #[serde(deserialize_with = "super::addr::deserialize")]
    pub address: SocketAddr,
}

impl ProxyConfig {
    /// Number of routes over all listeners and virtual hosts.
    pub fn route_count(&self) -> usize {
        self.listeners
            .iter()
            .flat_map(|l| &l.virtual_hosts)
            .map(|vh| vh.routes.len())
            .sum()
    }

    /// Whether a listener or cluster holds a private key inline (so a file
    /// written with this config is for its owner's eyes only).
    pub fn holds_inline_keys(&self) -> bool {
        let listeners = self.listeners.iter().filter_map(|l| l.tls.as_ref());
        let clusters = self.clusters.iter().filter_map(|c| c.tls.as_ref());
        listeners
            .flat_map(|t| &t.certificates)
            .any(|c| c.private_key.is_some())
            || clusters.into_iter().any(|t| t.client_key.is_some())
    }
}

impl ProxyConfig {
    /// One line for `weir check-config` and the startup log.
    pub fn summary(&self) -> String {
        format!(
            "{} listener(s), {} route(s), {} cluster(s)",
            self.listeners.len(),
            self.route_count(),
            self.clusters.len()
        )
    }
}
