//! Downstream (per listener) families: Envoy's `http.<prefix>.downstream_*`.

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use super::family::{CLASSES, MetricsError, class_index, counter, duration_histogram, gauge};

pub(super) struct Families {
    cx_total: IntCounterVec,
    cx_active: IntGaugeVec,
    cx_overflow: IntCounterVec,
    rq: IntCounterVec,
    rx_bytes: IntCounterVec,
    tx_bytes: IntCounterVec,
    rq_timeout: IntCounterVec,
    accept_errors: IntCounterVec,
    rq_protocol: IntCounterVec,
    grpc: IntCounterVec,
    no_route: IntCounterVec,
    rq_duration: HistogramVec,
    access_log_dropped: IntCounterVec,
}

impl Families {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        let l = &["listener"];
        Ok(Self {
            access_log_dropped: counter(
                r,
                "weir_access_log_dropped_total",
                "Access log lines dropped because the file's writer queue was full (16,384 lines or 16 MiB).",
                l,
            )?,
            rq_duration: duration_histogram(
                r,
                "weir_http_downstream_request_duration_seconds",
                "From the request head read to the response head sent, local replies included (downstream_rq_time).",
                l,
            )?,
            no_route: counter(
                r,
                "weir_http_downstream_no_route_total",
                "Requests answered 404 because no virtual host or route matched (no_route).",
                l,
            )?,
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
            cx_overflow: counter(
                r,
                "weir_http_downstream_connections_overflow_total",
                "Connections reset at accept because their client address had limits.max_connections_per_client open (downstream_cx_overflow).",
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
            accept_errors: counter(
                r,
                "weir_http_downstream_accept_errors_total",
                "Failed accepts on the listener's socket (EMFILE, ENFILE, ENOBUFS); each pauses accepting 50 ms.",
                l,
            )?,
            rq_protocol: counter(
                r,
                "weir_http_downstream_requests_by_protocol_total",
                "Downstream requests by HTTP protocol (downstream_rq_http1_total, downstream_rq_http2_total).",
                &["listener", "protocol"],
            )?,
            grpc: counter(
                r,
                "weir_http_downstream_grpc_responses_total",
                "gRPC responses sent downstream by grpc-status (0..16, unknown), trailers-only responses included (grpc_stats).",
                &["listener", "grpc_status"],
            )?,
        })
    }

    /// Made only for listeners that log, so the others have no series.
    pub(super) fn access_log_dropped(&self, name: &str) -> IntCounter {
        self.access_log_dropped.with_label_values(&[name])
    }

    pub(super) fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            cx_total: self.cx_total.with_label_values(&[name]),
            cx_active: self.cx_active.with_label_values(&[name]),
            cx_overflow: self.cx_overflow.with_label_values(&[name]),
            rq: CLASSES.map(|c| self.rq.with_label_values(&[name, c])),
            rx_bytes: self.rx_bytes.with_label_values(&[name]),
            tx_bytes: self.tx_bytes.with_label_values(&[name]),
            rq_timeout: self.rq_timeout.with_label_values(&[name]),
            no_route: self.no_route.with_label_values(&[name]),
            rq_duration: self.rq_duration.with_label_values(&[name]),
            accept_errors: self.accept_errors.with_label_values(&[name]),
            rq_protocol: PROTOCOLS.map(|p| self.rq_protocol.with_label_values(&[name, p])),
            grpc: GrpcMetrics {
                by_status: self.grpc.clone(),
                listener: name.into(),
            },
        }
    }
}

/// Per-listener handles, resolved once.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub cx_total: IntCounter,
    pub cx_active: IntGauge,
    pub cx_overflow: IntCounter,
    pub rq: [IntCounter; 5],
    pub rx_bytes: IntCounter,
    pub tx_bytes: IntCounter,
    pub rq_timeout: IntCounter,
    pub no_route: IntCounter,
    pub rq_duration: Histogram,
    pub accept_errors: IntCounter,
    /// By [`PROTOCOLS`] index.
    pub rq_protocol: [IntCounter; 2],
    pub grpc: GrpcMetrics,
}

/// The `protocol` label values.
pub const PROTOCOLS: [&str; 2] = ["HTTP/1.1", "HTTP/2"];

/// gRPC responses by status; resolved per response (gRPC only), so only
/// statuses that occur make series.
#[derive(Clone)]
pub struct GrpcMetrics {
    by_status: IntCounterVec,
    listener: std::sync::Arc<str>,
}

impl GrpcMetrics {
    /// Count one gRPC response with `grpc-status` value `status`.
    pub fn status(&self, status: &[u8]) {
        let label = match std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.parse::<u8>().ok())
        {
            Some(code) if code <= 16 => GRPC_CODES[usize::from(code)],
            _ => "unknown",
        };
        self.by_status
            .with_label_values(&[&*self.listener, label])
            .inc();
    }
}

const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

impl ListenerMetrics {
    pub fn response(&self, status: u16) {
        self.rq[class_index(status)].inc();
    }
}
