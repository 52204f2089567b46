//! STRICT_DNS discovery: every address of every name is an endpoint;
//! names are re-resolved every `dns_refresh_rate`, or when their records
//! expire with `respect_dns_ttl`. Endpoints whose address survives a
//! refresh keep their pool and outlier state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::resolver::Resolver;
use super::{Cluster, new_endpoint};

/// When names are resolved again.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    pub every: Duration,
    pub respect_ttl: bool,
}

/// The shortest wait between two resolutions, whatever a TTL says.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// The resolution loop; ends when the cluster is dropped.
pub async fn run(
    cluster: Weak<Cluster>,
    targets: Vec<(String, u16)>,
    refresh: Refresh,
    resolver: Arc<Resolver>,
) {
    loop {
        let wait = {
            let Some(c) = cluster.upgrade() else { return };
            let ttl = resolve_once(&c, &targets, &resolver).await;
            c.mark_initialized();
            match ttl {
                // Envoy: a TTL of 0 leaves the refresh rate in force.
                Some(ttl) if refresh.respect_ttl && !ttl.is_zero() => ttl,
                _ => refresh.every,
            }
        };
        tokio::time::sleep(wait.max(MIN_REFRESH)).await;
    }
}

/// Resolve every name; on success install the endpoints and return the
/// shortest TTL among the answers.
async fn resolve_once(
    c: &Arc<Cluster>,
    targets: &[(String, u16)],
    resolver: &Resolver,
) -> Option<Duration> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut ttl = Duration::MAX;
    for (name, port) in targets {
        c.metrics.dns.attempt.inc();
        match resolver.lookup(name).await {
            Ok(found) => {
                c.metrics.dns.success.inc();
                ttl = ttl.min(found.ttl);
                addrs.extend(found.addrs.iter().map(|ip| SocketAddr::new(*ip, *port)));
            }
            Err(e) => {
                c.metrics.dns.failure.inc();
                log::warn!(
                    "cluster {}: resolving {name}: {e}; keeping previous endpoints",
                    c.name
                );
                return None;
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    let old = c.endpoints.load();
    let same = old.len() == addrs.len() && old.iter().zip(&addrs).all(|(e, a)| e.addr == *a);
    if same {
        return Some(ttl);
    }
    let mut by_addr: HashMap<SocketAddr, _> = old.iter().map(|e| (e.addr, e.clone())).collect();
    let mut added = 0u64;
    let next: Vec<_> = addrs
        .iter()
        .map(|a| {
            by_addr.remove(a).unwrap_or_else(|| {
                added += 1;
                Arc::new(new_endpoint(*a, &c.params, &c.freed))
            })
        })
        .collect();
    c.metrics.dns.hosts_added.inc_by(added);
    c.metrics.dns.hosts_removed.inc_by(by_addr.len() as u64);
    log::info!("cluster {}: endpoints now {:?}", c.name, addrs);
    c.endpoints.store(Arc::new(next));
    Some(ttl)
}
