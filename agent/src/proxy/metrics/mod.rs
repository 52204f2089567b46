//! Proxy metrics, Envoy meanings with Prometheus names (see `docs/metrics.md`).
//!
//! Each subsystem registers its families in the shared registry
//! (`downstream`, `upstream`, `dns`, config reloads here; interception
//! its own, through [`Metrics::registry`]). The request path
//! never calls `with_label_values`: each listener and cluster resolves its
//! handles once into [`ListenerMetrics`] / [`ClusterMetrics`] when the
//! runtime state is built.

mod dns;
mod downstream;
pub mod envoy;
mod family;
pub mod tls;
mod upstream;

use prometheus::{Encoder, IntCounter, IntCounterVec, Registry, TextEncoder};

pub use self::dns::DnsMetrics;
pub use self::downstream::{GrpcMetrics, ListenerMetrics, PROTOCOLS};
pub use self::family::{
    CLASSES, DURATION_BUCKETS_SECONDS, GaugeGuard, MetricsError, class_index, counter,
    duration_histogram, float_counter,
};
pub use self::tls::{HandshakeFailure, TlsMetrics};
pub use self::upstream::ClusterMetrics;

/// Every metric family of the proxy, by subsystem, in one registry.
pub struct Metrics {
    registry: Registry,
    downstream: downstream::Families,
    upstream: upstream::Families,
    dns: dns::Families,
    tls: tls::Families,
    reloads: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        // The process's CPU seconds, RSS and descriptors (`process_*`), as
        // every Prometheus client exports them: what a node scrape charts.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let reloads = counter(
            &registry,
            "weir_config_reloads_total",
            "Config reloads by outcome (lds/cds update_success, update_rejected).",
            &["outcome"],
        )?;
        // Both series exist from the start (at 0), so a dashboard or alert
        // on them has a series before the first reload.
        for outcome in ["success", "failure"] {
            reloads.with_label_values(&[outcome]);
        }
        Ok(Self {
            downstream: downstream::Families::new(&registry)?,
            upstream: upstream::Families::new(&registry)?,
            dns: dns::Families::new(&registry)?,
            tls: tls::Families::new(&registry)?,
            reloads,
            registry,
        })
    }

    /// The shared registry, for subsystems outside the engine (interception)
    /// to register their own families in, so one scrape shows them all.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every family.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_families(&self.gather())
    }

    /// Prometheus text exposition of `families`, gathered once by the caller.
    pub fn encode_families(&self, families: &[prometheus::proto::MetricFamily]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(families, &mut buf);
        buf
    }

    /// Every family's current values.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    pub fn listener(&self, name: &str) -> ListenerMetrics {
        self.downstream.listener(name)
    }

    /// `weir_access_log_dropped_total` of a listener that logs.
    pub fn access_log_dropped(&self, listener: &str) -> IntCounter {
        self.downstream.access_log_dropped(listener)
    }

    pub fn cluster(&self, name: &str) -> ClusterMetrics {
        self.upstream.cluster(name, self.dns.cluster(name))
    }

    pub fn tls_listener(&self, name: &str) -> TlsMetrics {
        self.tls.listener(name)
    }

    pub fn tls_cluster(&self, name: &str) -> TlsMetrics {
        self.tls.cluster(name)
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_index(200), 1);
        assert_eq!(class_index(404), 3);
        assert_eq!(class_index(503), 4);
        assert_eq!(class_index(101), 0);
    }

    #[test]
    fn encodes_families() {
        let m = Metrics::new().unwrap();
        m.listener("l").response(200);
        m.cluster("c").dns.attempt.inc();
        m.reload(false);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(
            "weir_http_downstream_requests_total{listener=\"l\",response_code_class=\"2xx\"} 1"
        ));
        assert!(text.contains("weir_dns_query_attempts_total{cluster=\"c\"} 1"));
        assert!(text.contains("weir_config_reloads_total{outcome=\"failure\"} 1"));
    }
}
