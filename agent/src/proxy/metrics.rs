//! Proxy metrics, Envoy meanings with Prometheus names (see `docs/metrics.md`).
//!
//! Families are registered once per process in [`Metrics::new`]. The request
//! path never calls `with_label_values`: each listener and cluster resolves
//! its handles once into [`ListenerMetrics`] / [`ClusterMetrics`] when the
//! runtime snapshot is built.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

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

/// All metric families of the proxy, registered in one registry.
pub struct Metrics {
    registry: Registry,
    downstream_cx_total: IntCounterVec,
    downstream_cx_active: IntGaugeVec,
    downstream_rq: IntCounterVec,
    downstream_rx_bytes: IntCounterVec,
    downstream_tx_bytes: IntCounterVec,
    downstream_rq_timeout: IntCounterVec,
    upstream_rq: IntCounterVec,
    upstream_rq_duration: HistogramVec,
    upstream_cx_total: IntCounterVec,
    upstream_cx_active: IntGaugeVec,
    upstream_rq_active: IntGaugeVec,
    upstream_cx_connect_fail: IntCounterVec,
    upstream_cx_connect_timeout: IntCounterVec,
    upstream_rq_timeout: IntCounterVec,
    upstream_rq_per_try_timeout: IntCounterVec,
    upstream_rq_retry: IntCounterVec,
    upstream_rq_reset: IntCounterVec,
    upstream_none_healthy: IntCounterVec,
    upstream_overflow: IntCounterVec,
    upstream_tx_bytes: IntCounterVec,
    upstream_rx_bytes: IntCounterVec,
    ejections: IntCounterVec,
    ejections_active: IntGaugeVec,
    dns_attempt: IntCounterVec,
    dns_success: IntCounterVec,
    dns_failure: IntCounterVec,
    dns_hosts_added: IntCounterVec,
    dns_hosts_removed: IntCounterVec,
    reloads: IntCounterVec,
}

fn counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let l = &["listener"];
        let lc = &["listener", "response_code_class"];
        let c = &["cluster"];
        let cc = &["cluster", "response_code_class"];
        let upstream_rq_duration = HistogramVec::new(
            HistogramOpts::new(
                "weir_cluster_upstream_request_duration_seconds",
                "Time from the first upstream try to the upstream response head (Envoy upstream_rq_time).",
            )
            .buckets(DURATION_BUCKETS_SECONDS.to_vec()),
            c,
        )?;
        r.register(Box::new(upstream_rq_duration.clone()))?;
        Ok(Self {
            downstream_cx_total: counter(
                &r,
                "weir_http_downstream_connections_total",
                "Downstream connections accepted (downstream_cx_total).",
                l,
            )?,
            downstream_cx_active: gauge(
                &r,
                "weir_http_downstream_connections_active",
                "Open downstream connections (downstream_cx_active).",
                l,
            )?,
            downstream_rq: counter(
                &r,
                "weir_http_downstream_requests_total",
                "Downstream requests by response class (downstream_rq_xx).",
                lc,
            )?,
            downstream_rx_bytes: counter(
                &r,
                "weir_http_downstream_received_bytes_total",
                "Bytes read from downstream connections (downstream_cx_rx_bytes_total).",
                l,
            )?,
            downstream_tx_bytes: counter(
                &r,
                "weir_http_downstream_sent_bytes_total",
                "Bytes written to downstream connections (downstream_cx_tx_bytes_total).",
                l,
            )?,
            downstream_rq_timeout: counter(
                &r,
                "weir_http_downstream_request_timeouts_total",
                "Downstream requests closed by the request or header-read timeout (downstream_rq_timeout).",
                l,
            )?,
            upstream_rq: counter(
                &r,
                "weir_cluster_upstream_requests_total",
                "Upstream responses by class, local 5xx included (upstream_rq_xx).",
                cc,
            )?,
            upstream_rq_duration,
            upstream_cx_total: counter(
                &r,
                "weir_cluster_upstream_connections_total",
                "Upstream connections opened (upstream_cx_total).",
                c,
            )?,
            upstream_cx_active: gauge(
                &r,
                "weir_cluster_upstream_connections_active",
                "Open upstream connections (upstream_cx_active).",
                c,
            )?,
            upstream_rq_active: gauge(
                &r,
                "weir_cluster_upstream_requests_active",
                "Upstream requests in flight (upstream_rq_active).",
                c,
            )?,
            upstream_cx_connect_fail: counter(
                &r,
                "weir_cluster_upstream_connect_failures_total",
                "Upstream connect failures, timeouts included (upstream_cx_connect_fail).",
                c,
            )?,
            upstream_cx_connect_timeout: counter(
                &r,
                "weir_cluster_upstream_connect_timeouts_total",
                "Upstream connects that hit connect_timeout (upstream_cx_connect_timeout).",
                c,
            )?,
            upstream_rq_timeout: counter(
                &r,
                "weir_cluster_upstream_request_timeouts_total",
                "Requests that hit the route timeout (upstream_rq_timeout).",
                c,
            )?,
            upstream_rq_per_try_timeout: counter(
                &r,
                "weir_cluster_upstream_request_per_try_timeouts_total",
                "Tries that hit per_try_timeout (upstream_rq_per_try_timeout).",
                c,
            )?,
            upstream_rq_retry: counter(
                &r,
                "weir_cluster_upstream_request_retries_total",
                "Retries sent (upstream_rq_retry).",
                c,
            )?,
            upstream_rq_reset: counter(
                &r,
                "weir_cluster_upstream_request_resets_total",
                "Upstream connections reset before a response (upstream_rq_rx_reset / cx_destroy_remote_with_active_rq).",
                c,
            )?,
            upstream_none_healthy: counter(
                &r,
                "weir_cluster_upstream_no_healthy_total",
                "Requests with no healthy endpoint (upstream_cx_none_healthy).",
                c,
            )?,
            upstream_overflow: counter(
                &r,
                "weir_cluster_circuit_breaker_overflows_total",
                "Requests refused by a circuit breaker (upstream_cx_overflow, upstream_rq_pending_overflow, upstream_rq_retry_overflow).",
                &["cluster", "breaker"],
            )?,
            upstream_tx_bytes: counter(
                &r,
                "weir_cluster_upstream_sent_bytes_total",
                "Request body bytes sent upstream (upstream_cx_tx_bytes_total, bodies only).",
                c,
            )?,
            upstream_rx_bytes: counter(
                &r,
                "weir_cluster_upstream_received_bytes_total",
                "Response body bytes received from upstream (upstream_cx_rx_bytes_total, bodies only).",
                c,
            )?,
            ejections: counter(
                &r,
                "weir_cluster_outlier_ejections_total",
                "Endpoints ejected by outlier detection (outlier_detection.ejections_enforced_total).",
                c,
            )?,
            ejections_active: gauge(
                &r,
                "weir_cluster_outlier_ejections_active",
                "Endpoints currently ejected (outlier_detection.ejections_active).",
                c,
            )?,
            dns_attempt: counter(
                &r,
                "weir_dns_query_attempts_total",
                "DNS resolutions started (dns_cache dns_query_attempt).",
                c,
            )?,
            dns_success: counter(
                &r,
                "weir_dns_query_successes_total",
                "DNS resolutions that succeeded (dns_cache dns_query_success).",
                c,
            )?,
            dns_failure: counter(
                &r,
                "weir_dns_query_failures_total",
                "DNS resolutions that failed (dns_cache dns_query_failure).",
                c,
            )?,
            dns_hosts_added: counter(
                &r,
                "weir_dns_hosts_added_total",
                "Endpoints added by DNS resolution (dns_cache host_added).",
                c,
            )?,
            dns_hosts_removed: counter(
                &r,
                "weir_dns_hosts_removed_total",
                "Endpoints removed by DNS resolution (dns_cache host_removed).",
                c,
            )?,
            reloads: counter(
                &r,
                "weir_config_reloads_total",
                "Config reloads by outcome (listener_manager/cds update_success, update_rejected).",
                &["outcome"],
            )?,
            registry: r,
        })
    }

    /// Prometheus text exposition of every family.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }

    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            cx_total: self.downstream_cx_total.with_label_values(&[name]),
            cx_active: self.downstream_cx_active.with_label_values(&[name]),
            rq: CLASSES.map(|c| self.downstream_rq.with_label_values(&[name, c])),
            rx_bytes: self.downstream_rx_bytes.with_label_values(&[name]),
            tx_bytes: self.downstream_tx_bytes.with_label_values(&[name]),
            rq_timeout: self.downstream_rq_timeout.with_label_values(&[name]),
        }
    }

    pub fn cluster(&self, name: &str) -> ClusterMetrics {
        let ov = |b: &str| self.upstream_overflow.with_label_values(&[name, b]);
        ClusterMetrics {
            rq: CLASSES.map(|c| self.upstream_rq.with_label_values(&[name, c])),
            rq_duration: self.upstream_rq_duration.with_label_values(&[name]),
            cx_total: self.upstream_cx_total.with_label_values(&[name]),
            cx_active: self.upstream_cx_active.with_label_values(&[name]),
            rq_active: self.upstream_rq_active.with_label_values(&[name]),
            connect_fail: self.upstream_cx_connect_fail.with_label_values(&[name]),
            connect_timeout: self.upstream_cx_connect_timeout.with_label_values(&[name]),
            rq_timeout: self.upstream_rq_timeout.with_label_values(&[name]),
            rq_per_try_timeout: self.upstream_rq_per_try_timeout.with_label_values(&[name]),
            rq_retry: self.upstream_rq_retry.with_label_values(&[name]),
            rq_reset: self.upstream_rq_reset.with_label_values(&[name]),
            none_healthy: self.upstream_none_healthy.with_label_values(&[name]),
            overflow_connections: ov("connections"),
            overflow_pending: ov("pending"),
            overflow_requests: ov("requests"),
            overflow_retries: ov("retries"),
            tx_bytes: self.upstream_tx_bytes.with_label_values(&[name]),
            rx_bytes: self.upstream_rx_bytes.with_label_values(&[name]),
            ejections: self.ejections.with_label_values(&[name]),
            ejections_active: self.ejections_active.with_label_values(&[name]),
            dns_attempt: self.dns_attempt.with_label_values(&[name]),
            dns_success: self.dns_success.with_label_values(&[name]),
            dns_failure: self.dns_failure.with_label_values(&[name]),
            dns_hosts_added: self.dns_hosts_added.with_label_values(&[name]),
            dns_hosts_removed: self.dns_hosts_removed.with_label_values(&[name]),
        }
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

/// Per-listener handles, resolved once.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub cx_total: IntCounter,
    pub cx_active: IntGauge,
    pub rq: [IntCounter; 5],
    pub rx_bytes: IntCounter,
    pub tx_bytes: IntCounter,
    pub rq_timeout: IntCounter,
}

impl ListenerMetrics {
    pub fn response(&self, status: u16) {
        self.rq[class_index(status)].inc();
    }
}

/// Per-cluster handles, resolved once.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub rq: [IntCounter; 5],
    pub rq_duration: Histogram,
    pub cx_total: IntCounter,
    pub cx_active: IntGauge,
    pub rq_active: IntGauge,
    pub connect_fail: IntCounter,
    pub connect_timeout: IntCounter,
    pub rq_timeout: IntCounter,
    pub rq_per_try_timeout: IntCounter,
    pub rq_retry: IntCounter,
    pub rq_reset: IntCounter,
    pub none_healthy: IntCounter,
    pub overflow_connections: IntCounter,
    pub overflow_pending: IntCounter,
    pub overflow_requests: IntCounter,
    pub overflow_retries: IntCounter,
    pub tx_bytes: IntCounter,
    pub rx_bytes: IntCounter,
    pub ejections: IntCounter,
    pub ejections_active: IntGauge,
    pub dns_attempt: IntCounter,
    pub dns_success: IntCounter,
    pub dns_failure: IntCounter,
    pub dns_hosts_added: IntCounter,
    pub dns_hosts_removed: IntCounter,
}

impl ClusterMetrics {
    pub fn response(&self, status: u16) {
        self.rq[class_index(status)].inc();
    }
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
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(
            "weir_http_downstream_requests_total{listener=\"l\",response_code_class=\"2xx\"} 1"
        ));
    }
}
