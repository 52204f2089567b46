//! STRICT_DNS discovery: every address of every name is an endpoint;
//! names are re-resolved every `dns_refresh_rate`. Endpoints whose address
//! survives a refresh keep their pool and outlier state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Cluster, Family, new_endpoint};

/// The resolution loop; ends when the cluster is dropped.
pub async fn run(
    cluster: Weak<Cluster>,
    targets: Vec<(String, u16)>,
    refresh: Duration,
    family: Family,
) {
    let refresh = refresh.max(Duration::from_millis(100));
    loop {
        {
            let Some(c) = cluster.upgrade() else { return };
            resolve_once(&c, &targets, family).await;
            c.mark_initialized();
        }
        tokio::time::sleep(refresh).await;
    }
}

async fn resolve_once(c: &Arc<Cluster>, targets: &[(String, u16)], family: Family) {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (name, port) in targets {
        c.metrics.dns.attempt.inc();
        match tokio::net::lookup_host((name.as_str(), *port)).await {
            Ok(it) => {
                c.metrics.dns.success.inc();
                addrs.extend(it.filter(|a| family.admits(a)));
            }
            Err(e) => {
                c.metrics.dns.failure.inc();
                log::warn!(
                    "cluster {}: resolving {name}: {e}; keeping previous endpoints",
                    c.name
                );
                return;
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    let old = c.endpoints.load();
    let same = old.len() == addrs.len() && old.iter().zip(&addrs).all(|(e, a)| e.addr == *a);
    if same {
        return;
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
}
