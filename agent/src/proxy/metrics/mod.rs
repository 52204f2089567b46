//! Proxy metrics, Envoy meanings with Prometheus names (see `docs/metrics.md`).
//!
//! Each subsystem registers its families in the shared registry
//! (`downstream`, `upstream`, `dns`, config reloads here). The request path
//! never calls `with_label_values`: each listener and cluster resolves its
//! handles once into [`ListenerMetrics`] / [`ClusterMetrics`] when the
//! runtime state is built.

mod dns;
mod downstream;
pub mod envoy;
pub mod tls;
mod upstream;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use self::dns::DnsMetrics;
pub use self::downstream::{GrpcMetrics, ListenerMetrics, PROTOCOLS};
pub use self::tls::{HandshakeFailure, TlsMetrics};
pub use self::upstream::ClusterMetrics;

/// Upper bounds (seconds) of the request duration histograms: Envoy's
/// default histogram buckets (0.5 ms .. 1 h), converted from ms to seconds.
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// HTTP status classes, the `response_code_class` label values.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric family: {0}")]
    Register(#[from] prometheus::Error),
}

/// Every metric family of the proxy, by subsystem, in one registry.
pub struct Metrics {
    registry: Registry,
    downstream: downstream::Families,
    upstream: upstream::Families,
    dns: dns::Families,
    tls: tls::Families,
    reloads: IntCounterVec,
    /// Interception families (`weir_intercept_*`).
    pub intercept: super::intercept::metrics::InterceptMetrics,
}

pub(crate) fn counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

pub(crate) fn gauge(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

/// A duration histogram family with Envoy's bucket bounds, registered.
pub(crate) fn duration_histogram(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(DURATION_BUCKETS_SECONDS.to_vec()),
        labels,
    )?;
    reg.register(Box::new(h.clone()))?;
    Ok(h)
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
            intercept: super::intercept::metrics::InterceptMetrics::new(&registry)?,
            registry,
        })
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

/// Index into a per-class counter array for a status code.
pub fn class_index(status: u16) -> usize {
    (usize::from(status / 100)).clamp(1, 5) - 1
}

/// RAII guard: increments a gauge now, decrements it on drop.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
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
