//! DNS discovery families (per STRICT_DNS cluster): Envoy's `dns_cache.*`.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::family::{MetricsError, counter};

pub(super) struct Families {
    attempt: IntCounterVec,
    success: IntCounterVec,
    failure: IntCounterVec,
    hosts_added: IntCounterVec,
    hosts_removed: IntCounterVec,
}

impl Families {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        let c = &["cluster"];
        Ok(Self {
            attempt: counter(
                r,
                "weir_dns_query_attempts_total",
                "DNS resolutions started (dns_query_attempt).",
                c,
            )?,
            success: counter(
                r,
                "weir_dns_query_successes_total",
                "DNS resolutions that succeeded (dns_query_success).",
                c,
            )?,
            failure: counter(
                r,
                "weir_dns_query_failures_total",
                "DNS resolutions that failed (dns_query_failure).",
                c,
            )?,
            hosts_added: counter(
                r,
                "weir_dns_hosts_added_total",
                "Endpoints added by DNS resolution (host_added).",
                c,
            )?,
            hosts_removed: counter(
                r,
                "weir_dns_hosts_removed_total",
                "Endpoints removed by DNS resolution (host_removed).",
                c,
            )?,
        })
    }

    pub(super) fn cluster(&self, name: &str) -> DnsMetrics {
        DnsMetrics {
            attempt: self.attempt.with_label_values(&[name]),
            success: self.success.with_label_values(&[name]),
            failure: self.failure.with_label_values(&[name]),
            hosts_added: self.hosts_added.with_label_values(&[name]),
            hosts_removed: self.hosts_removed.with_label_values(&[name]),
        }
    }
}

/// Per-cluster DNS handles, resolved once.
#[derive(Clone)]
pub struct DnsMetrics {
    pub attempt: IntCounter,
    pub success: IntCounter,
    pub failure: IntCounter,
    pub hosts_added: IntCounter,
    pub hosts_removed: IntCounter,
}
