//! The pieces every family of the proxy is made with: registration
//! helpers, the status classes, the duration buckets, gauge guards.

use prometheus::core::Collector;
use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Upper bounds (seconds) of the request duration histograms: Envoy's
/// default histogram buckets (0.5 ms .. 1 h), converted from ms to seconds.
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// HTTP status classes, the `response_code_class` label values.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric family: {0}")]
    Register(#[from] prometheus::Error),
}

pub fn counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    register(reg, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// A counter family of fractional amounts (seconds).
pub fn float_counter(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<CounterVec, MetricsError> {
    register(reg, CounterVec::new(Opts::new(name, help), labels)?)
}

pub fn gauge(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    register(reg, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// A duration histogram family with Envoy's bucket bounds.
pub fn duration_histogram(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS_SECONDS.to_vec());
    register(reg, HistogramVec::new(opts, labels)?)
}

fn register<C: Collector + Clone + 'static>(reg: &Registry, c: C) -> Result<C, MetricsError> {
    reg.register(Box::new(c.clone()))?;
    Ok(c)
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
