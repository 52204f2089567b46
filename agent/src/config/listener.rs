//! Listeners and the virtual hosts they serve.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::ConfigDuration;
use super::route::{HeaderValueOptionConfig, RouteConfig};

/// One HTTP listener (`listeners[]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique; the `listener` metric label.
    pub name: String,
    /// `ip:port`, unique among listeners.
    #[serde(deserialize_with = "super::addr::deserialize")]
    pub address: SocketAddr,
    /// Envoy's `bind_to_port`. `false`: not bound; the listener only serves
    /// intercepted outbound connections whose original destination is its
    /// `address` (or its port, when the address is `0.0.0.0` / `[::]`).
    #[serde(default = "defaults::bind_to_port")]
    pub bind_to_port: bool,
    /// Only with `bind_to_port: false` (Envoy's `filter_chain_match.server_names`):
    /// the listener takes only TLS connections whose ClientHello names one
    /// of these (`host` or `*.suffix`); other TLS and all plain text (HTTP
    /// included) to its destination fall to `outbound_traffic_policy`, as
    /// with Istio's per-SNI filter chains. Empty: every connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    #[serde(default)]
    pub timeouts: ListenerTimeoutsConfig,
    #[serde(default)]
    pub limits: ListenerLimitsConfig,
    /// Terminate TLS on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::tls::DownstreamTlsConfig>,
    /// HTTP codec: `auto` (default), `http1` or `http2`.
    #[serde(default)]
    pub codec: super::tls::Codec,
    /// HTTP/1.1 upgrades tunnelled to the upstream, by `Upgrade` token
    /// (Envoy's HCM `upgrade_configs[].upgrade_type`, e.g. `websocket`);
    /// others are refused with 403 as Envoy does. Default: none on bound
    /// listeners (Envoy's default), `[websocket]` on `bind_to_port: false`
    /// listeners (Istio's sidecars allow WebSocket on every port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_types: Option<Vec<String>>,
    /// The `server` response header (Envoy's HCM `server_name`); default
    /// `envoy`, Envoy's, so clients and checks written against Envoy see
    /// the same response.
    #[serde(default = "defaults::server_name")]
    pub server_name: String,
    /// Envoy's HCM `access_log`: files each served request is logged to,
    /// one line per request (at most [`MAX_ACCESS_LOGS`]). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_log: Vec<AccessLogConfig>,
    /// Matched against the Host header; at least one.
    pub virtual_hosts: Vec<VirtualHostConfig>,
}

/// At most this many access logs per listener: each has a writer thread.
pub const MAX_ACCESS_LOGS: usize = 4;

/// One access log of a listener (`access_log[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// The file lines are appended to (created if missing; its directory
    /// must exist), or `/dev/stdout`, `/dev/stderr`.
    pub path: std::path::PathBuf,
    /// `text` (Envoy's default format, the default) or `json` (Istio's
    /// default JSON keys).
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// Envoy's default format string.
    #[default]
    Text,
    /// One JSON object per line, Istio's default keys.
    Json,
}

impl ListenerConfig {
    /// The upgrade types in force: as configured, else the default for
    /// the listener's kind (see `upgrade_types`).
    pub fn effective_upgrade_types(&self) -> Vec<String> {
        match &self.upgrade_types {
            Some(types) => types.clone(),
            None => default_upgrade_types(self.bind_to_port),
        }
    }
}

/// The upgrade types of a listener that sets none (see `upgrade_types`).
pub fn default_upgrade_types(bind_to_port: bool) -> Vec<String> {
    if bind_to_port {
        Vec::new()
    } else {
        vec!["websocket".to_owned()]
    }
}

/// The `server` response header of a listener that sets none.
pub const DEFAULT_SERVER_NAME: &str = "envoy";

/// Downstream timeouts; `0s` disables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTimeoutsConfig {
    /// Connection idle timeout.
    #[serde(default = "defaults::idle")]
    pub idle: ConfigDuration,
    /// The whole request head must arrive within this (slowloris guard).
    #[serde(default = "defaults::request_headers")]
    pub request_headers: ConfigDuration,
    /// The whole request including its body; `0s` = disabled.
    #[serde(default)]
    pub request: ConfigDuration,
}

impl Default for ListenerTimeoutsConfig {
    fn default() -> Self {
        Self {
            idle: defaults::idle(),
            request_headers: defaults::request_headers(),
            request: ConfigDuration::default(),
        }
    }
}

/// Request head limits (over either one the proxy answers 431) and the
/// connections one client address may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimitsConfig {
    /// 1..=8192 KiB.
    #[serde(default = "defaults::max_request_headers_kb")]
    pub max_request_headers_kb: u32,
    /// At least 1.
    #[serde(default = "defaults::max_headers_count")]
    pub max_headers_count: u32,
    /// Connections one client address may have open on a bound listener
    /// at once; beyond it new ones are reset. At least 1.
    #[serde(default = "defaults::max_connections_per_client")]
    pub max_connections_per_client: u32,
}

impl Default for ListenerLimitsConfig {
    fn default() -> Self {
        Self {
            max_request_headers_kb: defaults::max_request_headers_kb(),
            max_headers_count: defaults::max_headers_count(),
            max_connections_per_client: defaults::max_connections_per_client(),
        }
    }
}

/// A set of domains and the routes that serve them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualHostConfig {
    pub name: String,
    /// Exact host (optionally `host:port`), `*.suffix`, or `*` (catch-all).
    /// The Host header is matched without its `:port` when no exact `host:port` entry matches.
    pub domains: Vec<String>,
    /// Added to requests before the route-level additions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_headers_to_add: Vec<HeaderValueOptionConfig>,
    /// Ordered; the first match wins.
    pub routes: Vec<RouteConfig>,
}

/// Default values beside the types that use them.
pub mod defaults {
    use super::ConfigDuration;

    pub fn bind_to_port() -> bool {
        true
    }
    pub fn server_name() -> String {
        super::DEFAULT_SERVER_NAME.to_owned()
    }
    pub fn idle() -> ConfigDuration {
        ConfigDuration::from_secs(3600)
    }
    pub fn request_headers() -> ConfigDuration {
        ConfigDuration::from_secs(10)
    }
    pub fn max_request_headers_kb() -> u32 {
        60
    }
    pub fn max_headers_count() -> u32 {
        100
    }
    /// As many as an enrolled pod may have open per direction.
    pub fn max_connections_per_client() -> u32 {
        4096
    }
}
