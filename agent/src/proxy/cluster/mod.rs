//! Runtime clusters: endpoints (static, STRICT_DNS, or per request host for
//! DYNAMIC_FORWARD_PROXY), balancing, circuit
//! breaking and outlier ejection. Built from config by `proxy::build`; a
//! cluster whose config is unchanged survives reloads with its pools and health.

pub mod breaker;
pub mod dns;
pub mod endpoint;
pub mod forward_proxy;
pub mod outlier;
pub mod resolver;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use self::breaker::Breaker;
use self::endpoint::Endpoint;
use self::forward_proxy::{DnsCache, DnsCacheParams};
use self::outlier::{Outcome, OutlierPolicy};
pub use self::resolver::Family;
use self::resolver::Resolver;
use super::balance::{Balancer, Policy};
use super::metrics::ClusterMetrics;
use super::upstream::connect::Transport;
use super::upstream::pool::Pool;

/// How often a cluster looks for idle connections past their timeout and
/// for per-source pools to drop, at the longest.
pub const SOURCE_POOL_SWEEP: Duration = Duration::from_secs(30);

/// Envoy's default `healthy_panic_threshold` (percent of endpoints healthy).
pub const HEALTHY_PANIC_THRESHOLD_PERCENT: usize = 50;

#[derive(Debug, Clone)]
pub enum Discovery {
    Static(Vec<SocketAddr>),
    StrictDns {
        targets: Vec<(String, u16)>,
        refresh: Duration,
        /// Resolve again when the records expire (Envoy's `respect_dns_ttl`).
        respect_ttl: bool,
        resolver: Arc<Resolver>,
    },
    DynamicForwardProxy(DnsCacheParams, Arc<Resolver>),
}

/// Everything a cluster needs, already resolved from config.
#[derive(Debug, Clone)]
pub struct ClusterParams {
    pub name: String,
    pub discovery: Discovery,
    pub connect_timeout: Duration,
    pub policy: Policy,
    /// max_connections, max_pending_requests, max_requests, max_retries
    pub limits: [u32; 4],
    pub outlier: Option<OutlierPolicy>,
    pub idle_timeout: Duration,
    pub max_requests_per_connection: u32,
    /// TLS origination and HTTP/2.
    pub transport: Transport,
}

pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    pub balancer: Balancer,
    pub connect_timeout: Duration,
    pub breaker: Arc<Breaker>,
    pub outlier: Option<OutlierPolicy>,
    pub metrics: ClusterMetrics,
    pub params: ClusterParams,
    /// Notified when an upstream connection is released or closes.
    pub freed: Arc<Notify>,
    /// DYNAMIC_FORWARD_PROXY: endpoints by request host.
    pub dns_cache: Option<DnsCache>,
    initialized: AtomicBool,
    dns_task: std::sync::Mutex<Option<AbortHandle>>,
    sweep_task: std::sync::Mutex<Option<AbortHandle>>,
}

impl Cluster {
    /// Build the cluster; STRICT_DNS clusters start resolving at once
    /// (must be called inside the runtime).
    pub fn new(params: ClusterParams, metrics: ClusterMetrics) -> Arc<Self> {
        let [cx, pending, rq, retries] = params.limits;
        let freed = Arc::new(Notify::new());
        let initial = match &params.discovery {
            Discovery::Static(addrs) => addrs
                .iter()
                .map(|a| Arc::new(new_endpoint(*a, &params, &freed)))
                .collect(),
            Discovery::StrictDns { .. } | Discovery::DynamicForwardProxy(..) => Vec::new(),
        };
        let dns_cache = match &params.discovery {
            Discovery::DynamicForwardProxy(p, resolver) => {
                Some(DnsCache::new(*p, Arc::clone(resolver)))
            }
            _ => None,
        };
        let c = Arc::new(Self {
            name: params.name.as_str().into(),
            endpoints: ArcSwap::from_pointee(initial),
            balancer: Balancer::new(params.policy),
            connect_timeout: params.connect_timeout,
            breaker: Arc::new(Breaker::new(cx, pending, rq, retries)),
            outlier: params.outlier.clone(),
            metrics,
            // A forward proxy resolves per request: nothing to wait for.
            initialized: AtomicBool::new(!matches!(params.discovery, Discovery::StrictDns { .. })),
            dns_cache,
            dns_task: std::sync::Mutex::new(None),
            sweep_task: std::sync::Mutex::new(None),
            params,
            freed,
        });
        if let Discovery::StrictDns {
            targets,
            refresh,
            respect_ttl,
            resolver,
        } = &c.params.discovery
        {
            let h = tokio::spawn(dns::run(
                Arc::downgrade(&c),
                targets.clone(),
                dns::Refresh {
                    every: *refresh,
                    respect_ttl: *respect_ttl,
                },
                Arc::clone(resolver),
            ));
            if let Ok(mut slot) = c.dns_task.lock() {
                *slot = Some(h.abort_handle());
            }
        }
        c.spawn_sweeper();
        c
    }

    /// Close pooled connections idle longer than `upstream_http.idle_timeout`,
    /// and drop the per-source pools of sources gone or unused (every 30 s
    /// at most, also without an idle timeout).
    fn spawn_sweeper(self: &Arc<Self>) {
        let idle = self.params.idle_timeout;
        let every = if idle.is_zero() {
            SOURCE_POOL_SWEEP
        } else {
            (idle / 2).clamp(Duration::from_millis(100), SOURCE_POOL_SWEEP)
        };
        let weak = Arc::downgrade(self);
        let h = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(c) = weak.upgrade() else { return };
                for e in c.endpoints.load().iter() {
                    e.sweep();
                }
            }
        });
        if let Ok(mut slot) = self.sweep_task.lock() {
            *slot = Some(h.abort_handle());
        }
    }

    /// True once the first endpoint resolution has finished (success or not).
    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    pub(crate) fn mark_initialized(&self) {
        self.initialized.store(true, Ordering::Release);
    }

    /// Pick a healthy endpoint with the cluster's balancer. Below Envoy's
    /// default healthy panic threshold (fewer than half the endpoints
    /// healthy) health is disregarded and every endpoint takes traffic, as
    /// in Envoy: a small cluster whose endpoints were all ejected still
    /// serves. `None` only when the cluster has no endpoints.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let eps = self.endpoints.load();
        let now = outlier::now_ms();
        let healthy = |e: &Endpoint| !e.outlier.is_ejected(now);
        let n_healthy = eps.iter().filter(|e| healthy(e)).count();
        if n_healthy * 100 < eps.len() * HEALTHY_PANIC_THRESHOLD_PERCENT {
            self.metrics.lb_healthy_panic.inc();
            return self.balancer.pick(&eps, |_| true).cloned();
        }
        self.balancer.pick(&eps, healthy).cloned()
    }

    /// Feed a try's outcome to outlier detection.
    pub fn record(&self, ep: &Endpoint, outcome: Outcome) {
        let Some(policy) = &self.outlier else { return };
        if !ep.outlier.record(policy, outcome) {
            return;
        }
        let now = outlier::now_ms();
        let eps = self.endpoints.load();
        let ejected = eps.iter().filter(|e| e.outlier.is_ejected(now)).count();
        let allowed =
            ejected == 0 || (ejected + 1) * 100 <= eps.len() * policy.max_ejection_percent as usize;
        if allowed && ep.outlier.eject(policy, now) {
            self.metrics.ejections.inc();
            log::warn!(
                "cluster {}: ejected endpoint {} (ejection #{})",
                self.name,
                ep.addr,
                ep.outlier.times_ejected()
            );
        }
    }
}

pub(crate) fn new_endpoint(addr: SocketAddr, p: &ClusterParams, freed: &Arc<Notify>) -> Endpoint {
    let pool = Pool::new(
        p.idle_timeout,
        p.max_requests_per_connection,
        p.limits[0] as usize,
        freed.clone(),
    );
    Endpoint::new(addr, pool)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in [&self.dns_task, &self.sweep_task] {
            if let Ok(mut slot) = task.lock()
                && let Some(h) = slot.take()
            {
                h.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::Metrics;

    fn cluster(discovery: Discovery) -> (Arc<Cluster>, Metrics) {
        let metrics = Metrics::new().unwrap();
        let params = ClusterParams {
            name: "c".into(),
            discovery,
            connect_timeout: Duration::from_secs(1),
            policy: Policy::RoundRobin,
            limits: [1024, 1024, 1024, 3],
            outlier: None,
            idle_timeout: Duration::ZERO,
            max_requests_per_connection: 0,
            transport: Transport::default(),
        };
        (Cluster::new(params, metrics.cluster("c")), metrics)
    }

    fn eject(ep: &Endpoint) {
        let policy = OutlierPolicy {
            consecutive_5xx: 1,
            consecutive_gateway_failure: 1,
            base_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 100,
        };
        assert!(ep.outlier.eject(&policy, outlier::now_ms()));
    }

    #[tokio::test]
    async fn below_half_healthy_every_endpoint_takes_traffic() {
        let addrs: Vec<SocketAddr> = vec![
            "192.0.2.1:80".parse().unwrap(),
            "192.0.2.2:80".parse().unwrap(),
        ];
        let (c, _m) = cluster(Discovery::Static(addrs.clone()));
        let eps = c.endpoints.load_full();
        // Half healthy is not below the threshold: only the healthy one.
        eject(&eps[0]);
        for _ in 0..4 {
            assert_eq!(c.pick().unwrap().addr, addrs[1]);
        }
        assert_eq!(c.metrics.lb_healthy_panic.get(), 0);
        // None healthy: panic, both take traffic again.
        eject(&eps[1]);
        let picked: std::collections::HashSet<SocketAddr> =
            (0..4).map(|_| c.pick().unwrap().addr).collect();
        assert_eq!(picked.len(), 2);
        assert_eq!(c.metrics.lb_healthy_panic.get(), 4);
    }

    #[tokio::test]
    async fn no_endpoints_no_pick() {
        // Its own (unreachable) server: nothing read from the host.
        let resolver = Resolver::new(&resolver::ResolverSettings {
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            timeout: Duration::from_secs(1),
            attempts: 1,
            search: Some(Vec::new()),
            ndots: None,
            family: Family::Auto,
        })
        .unwrap();
        let (c, _m) = cluster(Discovery::DynamicForwardProxy(
            DnsCacheParams {
                refresh: Duration::from_secs(5),
                respect_ttl: false,
                max_hosts: 1,
                host_ttl: Duration::from_secs(60),
            },
            Arc::new(resolver),
        ));
        assert!(c.pick().is_none());
    }
}
