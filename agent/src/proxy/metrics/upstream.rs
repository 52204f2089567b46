//! Upstream (per cluster) families: Envoy's `cluster.<name>.*`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use super::dns::DnsMetrics;
use super::family::{CLASSES, MetricsError, class_index, counter, duration_histogram, gauge};

pub(super) struct Families {
    rq: IntCounterVec,
    rq_code: IntCounterVec,
    rq_sent: IntCounterVec,
    retry_rq: IntCounterVec,
    rq_duration: HistogramVec,
    cx_total: IntCounterVec,
    cx_active: IntGaugeVec,
    rq_active: IntGaugeVec,
    connect_fail: IntCounterVec,
    connect_timeout: IntCounterVec,
    rq_timeout: IntCounterVec,
    rq_per_try_timeout: IntCounterVec,
    rq_retry: IntCounterVec,
    rq_reset: IntCounterVec,
    none_healthy: IntCounterVec,
    lb_healthy_panic: IntCounterVec,
    overflow: IntCounterVec,
    tx_bytes: IntCounterVec,
    rx_bytes: IntCounterVec,
    ejections: IntCounterVec,
}

impl Families {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        let c = &["cluster"];
        Ok(Self {
            rq: counter(
                r,
                "weir_cluster_upstream_requests_total",
                "Answers requests ended with, by class, local 503/504 included; retried tries are not here (upstream_rq_xx).",
                &["cluster", "response_code_class"],
            )?,
            rq_code: counter(
                r,
                "weir_cluster_upstream_requests_by_code_total",
                "Answers requests ended with, by status code 100..599, as weir_cluster_upstream_requests_total (upstream_rq_<code>).",
                &["cluster", "response_code"],
            )?,
            rq_sent: counter(
                r,
                "weir_cluster_upstream_requests_sent_total",
                "Tries sent on an upstream connection, retries included (upstream_rq_total).",
                c,
            )?,
            retry_rq: counter(
                r,
                "weir_cluster_retry_upstream_requests_total",
                "Upstream responses that were retried, by class (retry.upstream_rq_xx).",
                &["cluster", "response_code_class"],
            )?,
            rq_duration: duration_histogram(
                r,
                "weir_cluster_upstream_request_duration_seconds",
                "Per try, from sending the request to the upstream response head (upstream_rq_time).",
                c,
            )?,
            cx_total: counter(
                r,
                "weir_cluster_upstream_connections_total",
                "Upstream connections opened (upstream_cx_total).",
                c,
            )?,
            cx_active: gauge(
                r,
                "weir_cluster_upstream_connections_active",
                "Open upstream connections (upstream_cx_active).",
                c,
            )?,
            rq_active: gauge(
                r,
                "weir_cluster_upstream_requests_active",
                "Upstream tries in flight (upstream_rq_active).",
                c,
            )?,
            connect_fail: counter(
                r,
                "weir_cluster_upstream_connect_failures_total",
                "Upstream connect failures, timeouts included (upstream_cx_connect_fail).",
                c,
            )?,
            connect_timeout: counter(
                r,
                "weir_cluster_upstream_connect_timeouts_total",
                "Upstream connects that hit connect_timeout (upstream_cx_connect_timeout).",
                c,
            )?,
            rq_timeout: counter(
                r,
                "weir_cluster_upstream_request_timeouts_total",
                "Requests that hit the route timeout (upstream_rq_timeout).",
                c,
            )?,
            rq_per_try_timeout: counter(
                r,
                "weir_cluster_upstream_request_per_try_timeouts_total",
                "Tries that hit per_try_timeout (upstream_rq_per_try_timeout).",
                c,
            )?,
            rq_retry: counter(
                r,
                "weir_cluster_upstream_request_retries_total",
                "Retries sent (upstream_rq_retry).",
                c,
            )?,
            rq_reset: counter(
                r,
                "weir_cluster_upstream_request_resets_total",
                "Upstream closed or reset before a response head (upstream_rq_rx_reset).",
                c,
            )?,
            none_healthy: counter(
                r,
                "weir_cluster_upstream_no_healthy_total",
                "Requests with no endpoint to go to (upstream_cx_none_healthy).",
                c,
            )?,
            lb_healthy_panic: counter(
                r,
                "weir_cluster_lb_healthy_panic_total",
                "Picks made ignoring health: fewer than half the endpoints healthy (lb_healthy_panic).",
                c,
            )?,
            overflow: counter(
                r,
                "weir_cluster_circuit_breaker_overflows_total",
                "Requests refused or retries skipped by a circuit breaker (upstream_cx_overflow, upstream_rq_pending_overflow, upstream_rq_retry_overflow).",
                &["cluster", "breaker"],
            )?,
            tx_bytes: counter(
                r,
                "weir_cluster_upstream_sent_bytes_total",
                "Request body bytes sent upstream (upstream_cx_tx_bytes_total, bodies only).",
                c,
            )?,
            rx_bytes: counter(
                r,
                "weir_cluster_upstream_received_bytes_total",
                "Response body bytes received from upstream (upstream_cx_rx_bytes_total, bodies only).",
                c,
            )?,
            ejections: counter(
                r,
                "weir_cluster_outlier_ejections_total",
                "Endpoints ejected by outlier detection (outlier_detection.ejections_enforced_total).",
                c,
            )?,
        })
    }

    pub(super) fn cluster(&self, name: &str, dns: DnsMetrics) -> ClusterMetrics {
        let one = |v: &IntCounterVec| v.with_label_values(&[name]);
        let ov = |b: &str| self.overflow.with_label_values(&[name, b]);
        ClusterMetrics {
            rq: CLASSES.map(|c| self.rq.with_label_values(&[name, c])),
            rq_code: Arc::new(ByCode {
                family: self.rq_code.clone(),
                cluster: name.into(),
                seen: ArcSwap::default(),
            }),
            rq_sent: one(&self.rq_sent),
            retry_rq: CLASSES.map(|c| self.retry_rq.with_label_values(&[name, c])),
            rq_duration: self.rq_duration.with_label_values(&[name]),
            cx_total: one(&self.cx_total),
            cx_active: self.cx_active.with_label_values(&[name]),
            rq_active: self.rq_active.with_label_values(&[name]),
            connect_fail: one(&self.connect_fail),
            connect_timeout: one(&self.connect_timeout),
            rq_timeout: one(&self.rq_timeout),
            rq_per_try_timeout: one(&self.rq_per_try_timeout),
            rq_retry: one(&self.rq_retry),
            rq_reset: one(&self.rq_reset),
            none_healthy: one(&self.none_healthy),
            lb_healthy_panic: one(&self.lb_healthy_panic),
            overflow_connections: ov("connections"),
            overflow_pending: ov("pending"),
            overflow_requests: ov("requests"),
            overflow_retries: ov("retries"),
            tx_bytes: one(&self.tx_bytes),
            rx_bytes: one(&self.rx_bytes),
            ejections: one(&self.ejections),
            dns,
        }
    }
}

/// Per-cluster handles, resolved once.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub rq: [IntCounter; 5],
    rq_code: Arc<ByCode>,
    pub rq_sent: IntCounter,
    pub retry_rq: [IntCounter; 5],
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
    pub lb_healthy_panic: IntCounter,
    pub overflow_connections: IntCounter,
    pub overflow_pending: IntCounter,
    pub overflow_requests: IntCounter,
    pub overflow_retries: IntCounter,
    pub tx_bytes: IntCounter,
    pub rx_bytes: IntCounter,
    pub ejections: IntCounter,
    pub dns: DnsMetrics,
}

impl ClusterMetrics {
    /// The answer a request ended with.
    pub fn response(&self, status: u16) {
        self.rq[class_index(status)].inc();
        self.rq_code.inc(status);
    }

    /// An upstream response weir retried.
    pub fn retried_response(&self, status: u16) {
        self.retry_rq[class_index(status)].inc();
    }
}

/// Per-code counters of one cluster. The request path must not take the
/// family's lock for every answer, so the handles of the codes seen so far
/// sit in a copy-on-write list: reads are lock-free, a new code (rare, at
/// most 500 ever, see [`CODES`]) copies it.
struct ByCode {
    family: IntCounterVec,
    cluster: Arc<str>,
    seen: ArcSwap<Vec<(u16, IntCounter)>>,
}

/// Status codes with a series of their own: 100..=599 (500 at most per
/// cluster); hyper accepts codes up to 999, which no per-code series gets.
const CODES: std::ops::RangeInclusive<u16> = 100..=599;

impl ByCode {
    fn inc(&self, status: u16) {
        if !CODES.contains(&status) {
            return;
        }
        if let Some((_, c)) = self.seen.load().iter().find(|(s, _)| *s == status) {
            c.inc();
            return;
        }
        let code = status.to_string();
        let counter = self.family.with_label_values(&[&*self.cluster, &code]);
        counter.inc();
        self.seen.rcu(|seen| {
            let mut next = Vec::with_capacity(seen.len() + 1);
            next.extend(seen.iter().cloned());
            if !next.iter().any(|(s, _)| *s == status) {
                next.push((status, counter.clone()));
            }
            next
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;

    #[test]
    fn per_code_counts_and_bound() {
        let m = Metrics::new().unwrap();
        let c = m.cluster("c");
        for status in [200, 200, 503, 999, 42] {
            c.response(status);
        }
        let text = String::from_utf8(m.encode()).unwrap();
        let code = |v: &str| {
            format!(
                "weir_cluster_upstream_requests_by_code_total{{cluster=\"c\",response_code=\"{v}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 2\n", code("200"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", code("503"))), "{text}");
        assert!(
            !text.contains(&code("999")),
            "codes outside 100..599 get no series"
        );
        assert!(!text.contains(&code("42")));
        // A clone shares the handles it resolved.
        c.clone().response(503);
        assert!(
            String::from_utf8(m.encode())
                .unwrap()
                .contains(&format!("{} 2\n", code("503")))
        );
    }
}
