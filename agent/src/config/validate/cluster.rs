//! Cluster rules: endpoints, timeouts, limits.

use std::net::IpAddr;

use super::super::cluster::{ClusterConfig, DiscoveryType};
use super::super::error::DocPath;
use super::Checker;
use super::syntax::is_dns_name;

impl Checker<'_> {
    pub(super) fn cluster(&mut self, path: &DocPath, cluster: &ClusterConfig) {
        if cluster.connect_timeout.is_zero() {
            self.report(path.key("connect_timeout"), "connect_timeout must be > 0");
        }
        let dns = matches!(
            cluster.discovery_type,
            DiscoveryType::StrictDns | DiscoveryType::DynamicForwardProxy
        );
        if dns && cluster.dns_refresh_rate.is_some_and(|rate| rate.is_zero()) {
            self.report(path.key("dns_refresh_rate"), "dns_refresh_rate must be > 0");
        }
        let endpoints = path.key("endpoints");
        let forward_proxy = cluster.discovery_type == DiscoveryType::DynamicForwardProxy;
        if forward_proxy {
            if !cluster.endpoints.is_empty() {
                self.report(
                    endpoints.clone(),
                    "a DYNAMIC_FORWARD_PROXY cluster has no endpoints: each request goes to its Host",
                );
            }
            if cluster.tls.is_some() {
                self.report(
                    path.key("tls"),
                    "tls is not supported on a DYNAMIC_FORWARD_PROXY cluster yet",
                );
            }
            if cluster.dns_cache.max_hosts == 0 {
                self.report(
                    path.key("dns_cache").key("max_hosts"),
                    "max_hosts must be at least 1",
                );
            }
            if cluster.dns_cache.host_ttl.is_zero() {
                self.report(
                    path.key("dns_cache").key("host_ttl"),
                    "host_ttl must be > 0",
                );
            }
        } else if cluster.endpoints.is_empty() {
            self.report(
                endpoints.clone(),
                "endpoints must list at least one endpoint",
            );
        }
        for (i, endpoint) in cluster.endpoints.iter().enumerate() {
            let ep_path = endpoints.index(i);
            let address = &endpoint.address;
            let is_ip = address.parse::<IpAddr>().is_ok();
            match cluster.discovery_type {
                DiscoveryType::Static if !is_ip => self.report(
                    ep_path.key("address"),
                    format!(
                        "STATIC cluster endpoints must be IP literals, got {address:?} \
                         (use type: STRICT_DNS for DNS names)"
                    ),
                ),
                DiscoveryType::StrictDns if !is_ip && !is_dns_name(address) => self.report(
                    ep_path.key("address"),
                    format!("invalid endpoint address {address:?}: expected a DNS name or IP"),
                ),
                _ => {}
            }
            if endpoint.port == 0 {
                self.report(ep_path.key("port"), "port must not be 0");
            }
        }
        if let Some(tls) = &cluster.tls {
            self.upstream_tls(&path.key("tls"), tls);
        }
        let breakers = path.key("circuit_breakers");
        for (field, value) in [
            ("max_connections", cluster.circuit_breakers.max_connections),
            ("max_requests", cluster.circuit_breakers.max_requests),
        ] {
            if value == 0 {
                self.report(breakers.key(field), format!("{field} must be at least 1"));
            }
        }
        if let Some(outlier) = &cluster.outlier_detection {
            let od = path.key("outlier_detection");
            if outlier.max_ejection_percent > 100 {
                self.report(
                    od.key("max_ejection_percent"),
                    format!(
                        "max_ejection_percent {} is over 100",
                        outlier.max_ejection_percent
                    ),
                );
            }
            for (field, value) in [
                ("consecutive_5xx", outlier.consecutive_5xx),
                (
                    "consecutive_gateway_failure",
                    outlier.consecutive_gateway_failure,
                ),
            ] {
                if value == 0 {
                    self.report(od.key(field), format!("{field} must be at least 1"));
                }
            }
            for (field, value) in [
                ("interval", outlier.interval),
                ("base_ejection_time", outlier.base_ejection_time),
            ] {
                if value.is_zero() {
                    self.report(od.key(field), format!("{field} must be > 0"));
                }
            }
        }
    }
}
