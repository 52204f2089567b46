//! DYNAMIC_FORWARD_PROXY: a cluster without configured endpoints. Each
//! request goes to its own Host (`host[:port]`, port 80 by default), resolved
//! through a cache (Envoy's dynamic forward proxy cluster, filter and DNS
//! cache): a host is resolved on first use and again when its entry is older
//! than `dns_refresh_rate` (with `respect_dns_ttl`: than its records' TTL);
//! a failed refresh keeps the last address; hosts
//! unused for `host_ttl` leave the cache; at most `max_hosts` are cached.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::resolver::Resolver;
use super::{Cluster, new_endpoint};
use crate::proxy::cluster::endpoint::Endpoint;

/// Port of a Host without one (cleartext HTTP).
pub const DEFAULT_PORT: u16 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsCacheParams {
    pub refresh: Duration,
    /// Refresh a host when its records expire (Envoy's `respect_dns_ttl`).
    pub respect_ttl: bool,
    pub max_hosts: usize,
    pub host_ttl: Duration,
}

/// Why a request's host has no endpoint (Envoy's local replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsCacheError {
    #[error("DNS resolution failure")]
    Resolution,
    #[error("DNS cache overflow")]
    Overflow,
}

struct Host {
    endpoint: Arc<Endpoint>,
    resolved: Instant,
    /// How long the address holds before it is resolved again.
    fresh_for: Duration,
    used: Instant,
}

pub struct DnsCache {
    params: DnsCacheParams,
    resolver: Arc<Resolver>,
    hosts: Mutex<HashMap<String, Host>>,
}

impl DnsCache {
    pub fn new(params: DnsCacheParams, resolver: Arc<Resolver>) -> Self {
        Self {
            params,
            resolver,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint for a request's authority, resolving it when needed.
    pub async fn endpoint(
        &self,
        cluster: &Cluster,
        authority: &str,
    ) -> Result<Arc<Endpoint>, DnsCacheError> {
        let (host, port) = split_authority(authority).ok_or(DnsCacheError::Resolution)?;
        let key = format!("{host}:{port}");
        let now = Instant::now();
        if let Ok(mut hosts) = self.hosts.lock()
            && let Some(h) = hosts.get_mut(&key)
            && now.duration_since(h.resolved) < h.fresh_for
        {
            h.used = now;
            return Ok(Arc::clone(&h.endpoint));
        }
        let resolved = self.resolve(cluster, &host, port).await;
        let fresh_for = match resolved {
            Some((_, ttl)) if self.params.respect_ttl && !ttl.is_zero() => ttl,
            _ => self.params.refresh,
        };
        let resolved = resolved.map(|(addr, _)| addr);
        let mut hosts = self.hosts.lock().map_err(|_| DnsCacheError::Resolution)?;
        let ttl = self.params.host_ttl;
        let before = hosts.len();
        hosts.retain(|_, h| now.duration_since(h.used) < ttl);
        cluster
            .metrics
            .dns
            .hosts_removed
            .inc_by((before - hosts.len()) as u64);
        let full = hosts.len() >= self.params.max_hosts;
        let endpoint = match (hosts.get_mut(&key), resolved) {
            (Some(h), Some(addr)) => {
                if h.endpoint.addr != addr {
                    h.endpoint = Arc::new(new_endpoint(addr, &cluster.params, &cluster.freed));
                }
                h.resolved = now;
                h.fresh_for = fresh_for;
                h.used = now;
                Arc::clone(&h.endpoint)
            }
            // A failed refresh keeps the last address.
            (Some(h), None) => {
                h.resolved = now;
                h.fresh_for = fresh_for;
                h.used = now;
                Arc::clone(&h.endpoint)
            }
            (None, None) => return Err(DnsCacheError::Resolution),
            (None, Some(_)) if full => {
                return Err(DnsCacheError::Overflow);
            }
            (None, Some(addr)) => {
                let endpoint = Arc::new(new_endpoint(addr, &cluster.params, &cluster.freed));
                hosts.insert(
                    key,
                    Host {
                        endpoint: Arc::clone(&endpoint),
                        resolved: now,
                        fresh_for,
                        used: now,
                    },
                );
                cluster.metrics.dns.hosts_added.inc();
                endpoint
            }
        };
        // The cluster's endpoint list (admin `/clusters`, idle pool sweeps).
        let all: Vec<Arc<Endpoint>> = hosts.values().map(|h| Arc::clone(&h.endpoint)).collect();
        cluster.endpoints.store(Arc::new(all));
        Ok(endpoint)
    }

    /// The first address of `host` in the cluster's family and its TTL;
    /// IP literals need no DNS.
    async fn resolve(
        &self,
        cluster: &Cluster,
        host: &str,
        port: u16,
    ) -> Option<(SocketAddr, Duration)> {
        if host.parse::<IpAddr>().is_ok() {
            // A literal is no query: only the family is checked.
            let found = self.resolver.lookup(host).await.ok()?;
            return Some((SocketAddr::new(found.addrs[0], port), found.ttl));
        }
        let dns = &cluster.metrics.dns;
        dns.attempt.inc();
        match self.resolver.lookup(host).await {
            Ok(found) => {
                dns.success.inc();
                Some((SocketAddr::new(found.addrs[0], port), found.ttl))
            }
            Err(e) => {
                dns.failure.inc();
                log::debug!("cluster {}: resolving {host}: {e}", cluster.name);
                None
            }
        }
    }
}

/// `host[:port]` (IPv6 in brackets) as a lowercase host and a port.
fn split_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        (ip, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, DEFAULT_PORT),
        }
    };
    (!host.is_empty() && port != 0).then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let s = |a: &str| split_authority(a);
        assert_eq!(s("Service-B:8080"), Some(("service-b".into(), 8080)));
        assert_eq!(s("service-b"), Some(("service-b".into(), 80)));
        assert_eq!(s("[::1]:9000"), Some(("::1".into(), 9000)));
        assert_eq!(s("[::1]"), Some(("::1".into(), 80)));
        assert_eq!(s("host:0"), None);
        assert_eq!(s("host:x"), None);
        assert_eq!(s(""), None);
    }
}
