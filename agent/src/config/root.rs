//! The whole document: admin, listeners, clusters.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::ClusterConfig;
use super::listener::ListenerConfig;

/// The proxy configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Admin endpoint (`/config_dump`, `/stats/prometheus`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
}

/// The admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
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
