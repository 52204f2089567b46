//! Downstream (per listener) families: Envoy's `http.<prefix>.downstream_*`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{CLASSES, MetricsError, class_index, counter, gauge};

pub(super) struct Families {
    cx_total: IntCounterVec,
    cx_active: IntGaugeVec,
    rq: IntCounterVec,
    rx_bytes: IntCounterVec,
    tx_bytes: IntCounterVec,
    rq_timeout: IntCounterVec,
}

impl Families {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        let l = &["listener"];
        Ok(Self {
            cx_total: counter(
                r,
                "weir_http_downstream_connections_total",
                "Downstream connections accepted (downstream_cx_total).",
                l,
            )?,
            cx_active: gauge(
                r,
                "weir_http_downstream_connections_active",
                "Open downstream connections (downstream_cx_active).",
                l,
            )?,
            rq: counter(
                r,
                "weir_http_downstream_requests_total",
                "Downstream responses by class, local replies included (downstream_rq_xx).",
                &["listener", "response_code_class"],
            )?,
            rx_bytes: counter(
                r,
                "weir_http_downstream_received_bytes_total",
                "Bytes read from downstream connections (downstream_cx_rx_bytes_total).",
                l,
            )?,
            tx_bytes: counter(
                r,
                "weir_http_downstream_sent_bytes_total",
                "Bytes written to downstream connections (downstream_cx_tx_bytes_total).",
                l,
            )?,
            rq_timeout: counter(
                r,
                "weir_http_downstream_request_timeouts_total",
                "Requests ended by the request or header-read timeout (downstream_rq_timeout).",
                l,
            )?,
        })
    }

    pub(super) fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            cx_total: self.cx_total.with_label_values(&[name]),
            cx_active: self.cx_active.with_label_values(&[name]),
            rq: CLASSES.map(|c| self.rq.with_label_values(&[name, c])),
            rx_bytes: self.rx_bytes.with_label_values(&[name]),
            tx_bytes: self.tx_bytes.with_label_values(&[name]),
            rq_timeout: self.rq_timeout.with_label_values(&[name]),
        }
    }
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
