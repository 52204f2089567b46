//! Interception metrics: Istio's standard metrics (`istio_requests_total`,
//! `istio_tcp_*`) with weir names, plus protocol detection and TLS SNI.
//! See `docs/metrics.md`.
//!
//! Label handles are resolved once per connection ([`InterceptMetrics::identity`]);
//! the request path only increments counters it already holds.

use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Histogram, HistogramVec, IntCounter, IntCounterVec, Registry,
};

use super::bounded::{BoundedValues, OTHER};
use super::detect::{Detected, Direction};
use crate::proxy::io::ByteCounters;
use crate::proxy::metrics::{
    CLASSES, MetricsError, class_index, counter, duration_histogram, float_counter,
};

/// Value of a label that is not known (Istio's convention).
pub const UNKNOWN: &str = "unknown";
/// Distinct `sni` label values kept; later names are counted as `other`.
pub const MAX_SNI_VALUES: usize = 256;
/// Distinct `ip:port` destinations of unmatched (passthrough) traffic kept
/// as `destination` values; later ones are counted as `PassthroughCluster`.
pub const MAX_PASSTHROUGH_DESTINATIONS: usize = 1024;

/// Principal label values kept (an authenticated source's or a
/// destination's, `spiffe://...`); later ones are counted as `other`. Pods
/// of this node are far fewer; certificates from other nodes could name
/// any.
pub const MAX_PRINCIPALS: usize = 4096;

/// weir's own labels, then Istio's standard ones with the same facts
/// (`reporter`, `*_workload_namespace`, `*_workload`, `*_principal`,
/// `connection_security_policy`), so that Kiali-style queries written for
/// `istio_requests_total` read weir's families unchanged.
const ID: [&str; 14] = [
    "direction",
    "source_namespace",
    "source_pod",
    "destination",
    "destination_namespace",
    "destination_pod",
    "reporter",
    "source_workload_namespace",
    "source_workload",
    "source_principal",
    "destination_workload_namespace",
    "destination_workload",
    "destination_principal",
    "connection_security_policy",
];

/// The pod whose connections went around the proxy.
const BYPASS: [&str; 2] = ["source_namespace", "source_pod"];

/// Who talks to whom: the identity labels of one connection.
pub struct Labels<'a> {
    pub direction: Direction,
    pub source: Party<'a>,
    pub destination: &'a str,
    pub destination_pod: Party<'a>,
    /// Istio's `connection_security_policy`: `mutual_tls` (through the mesh
    /// tunnel), `none`, `unknown` (outbound: weir's own leg is decided later).
    pub security: &'a str,
}

/// One end of a connection as the labels name it; [`Party::UNKNOWN`] when
/// weir does not know it.
#[derive(Clone, Copy)]
pub struct Party<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub workload: &'a str,
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub principal: &'a str,
}

impl<'a> Party<'a> {
    /// Enrolled pod `pod`, whose principal is `principal` (`spiffe://...`).
    pub fn of(pod: &'a super::PodIdentity, principal: &'a str) -> Self {
        Self {
            namespace: &pod.namespace,
            pod: &pod.name,
            workload: &pod.workload,
            principal,
        }
    }

    pub const UNKNOWN: Party<'static> = Party {
        namespace: UNKNOWN,
        pod: UNKNOWN,
        workload: UNKNOWN,
        principal: UNKNOWN,
    };
}

impl Labels<'_> {
    fn values(&self) -> [&str; 14] {
        let (s, d) = (&self.source, &self.destination_pod);
        [
            self.direction.label(),
            s.namespace,
            s.pod,
            self.destination,
            d.namespace,
            d.pod,
            match self.direction {
                Direction::Outbound => "source",
                Direction::Inbound => "destination",
            },
            s.namespace,
            s.workload,
            s.principal,
            d.namespace,
            d.workload,
            d.principal,
            self.security,
        ]
    }
}

pub struct InterceptMetrics {
    requests: IntCounterVec,
    durations: HistogramVec,
    opened: IntCounterVec,
    closed: IntCounterVec,
    sent: IntCounterVec,
    received: IntCounterVec,
    denied: IntCounterVec,
    tls: IntCounterVec,
    bypassed: IntCounterVec,
    bypassed_reset: IntCounterVec,
    refused: IntCounterVec,
    refused_requests: IntCounterVec,
    cpu_used: CounterVec,
    cpu_throttled: CounterVec,
    /// [direction][protocol]
    detected: [[IntCounter; 3]; 2],
    /// Upstream connections delivered to a pod on this node without a second pass (`same_node`).
    pub same_node: IntCounter,
    /// Connections a pod's source could not open: [unenrolled, socket].
    pod_connect_failures: [IntCounter; 2],
    sni_seen: BoundedValues,
    dst_seen: BoundedValues,
    principals_seen: BoundedValues,
}

/// Handles of one (source, destination) pair.
pub struct IdentityHandles {
    pub requests: [IntCounter; 5],
    pub duration: Histogram,
    pub opened: IntCounter,
    pub closed: IntCounter,
    pub sent: IntCounter,
    pub received: IntCounter,
}

impl IdentityHandles {
    /// A response with `status`, `elapsed` after its request's head was
    /// read (istio_requests_total and istio_request_duration_milliseconds).
    pub fn response(&self, status: u16, elapsed: Duration) {
        self.requests[class_index(status)].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The byte counters of a stream to or from the intercepted client.
    pub fn counters(&self) -> ByteCounters {
        ByteCounters {
            read: self.received.clone(),
            written: self.sent.clone(),
        }
    }

    /// Count a connection opened now and closed when the guard drops.
    pub fn connection(&self) -> ConnCount {
        self.opened.inc();
        ConnCount(self.closed.clone())
    }
}

/// Increments `..._tcp_connections_closed_total` on drop.
pub struct ConnCount(IntCounter);

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.inc();
    }
}

impl InterceptMetrics {
    pub fn new(r: &Registry) -> Result<Self, MetricsError> {
        let mut id_class = ID.to_vec();
        id_class.push("response_code_class");
        let mut id_sni = ID.to_vec();
        id_sni.push("sni");
        let detected = counter(
            r,
            "weir_intercept_protocol_detected_total",
            "Intercepted connections by detected protocol (Envoy http_inspector / tls_inspector outcomes).",
            &["direction", "protocol"],
        )?;
        let d = |dir: Direction| {
            ["http1", "tls", "opaque"].map(|p| detected.with_label_values(&[dir.label(), p]))
        };
        let same_node = IntCounter::new(
            "weir_intercept_same_node_connections_total",
            "Upstream connections to a pod enrolled on this node, made straight to its application (one proxy pass instead of outbound + inbound).",
        )?;
        r.register(Box::new(same_node.clone()))?;
        let pod_connect_failures = counter(
            r,
            "weir_intercept_pod_connect_failures_total",
            "Upstream connections for an enrolled pod that could not be opened from inside its network namespace: reason unenrolled (the pod was un-enrolled while its connection to weir stayed open: a 503 or a reset), socket (its socket factory failed).",
            &["reason"],
        )?;
        Ok(Self {
            pod_connect_failures: ["unenrolled", "socket"]
                .map(|reason| pod_connect_failures.with_label_values(&[reason])),
            detected: [d(Direction::Outbound), d(Direction::Inbound)],
            same_node,
            requests: counter(
                r,
                "weir_intercept_requests_total",
                "Intercepted HTTP requests by source, destination and response class (istio_requests_total).",
                &id_class,
            )?,
            durations: duration_histogram(
                r,
                "weir_intercept_request_duration_seconds",
                "Intercepted HTTP requests by source and destination: from the request head to the response head (istio_request_duration_milliseconds, in seconds).",
                &ID,
            )?,
            opened: counter(
                r,
                "weir_intercept_tcp_connections_opened_total",
                "Intercepted connections opened (istio_tcp_connections_opened_total).",
                &ID,
            )?,
            closed: counter(
                r,
                "weir_intercept_tcp_connections_closed_total",
                "Intercepted connections closed (istio_tcp_connections_closed_total).",
                &ID,
            )?,
            sent: counter(
                r,
                "weir_intercept_tcp_sent_bytes_total",
                "Bytes written to the intercepted client (istio_tcp_sent_bytes_total).",
                &ID,
            )?,
            received: counter(
                r,
                "weir_intercept_tcp_received_bytes_total",
                "Bytes read from the intercepted client (istio_tcp_received_bytes_total).",
                &ID,
            )?,
            denied: counter(
                r,
                "weir_intercept_tcp_connections_denied_total",
                "Non-HTTP connections closed by outbound_traffic_policy REGISTRY_ONLY (Istio BlackHoleCluster).",
                &ID,
            )?,
            tls: counter(
                r,
                "weir_intercept_tls_connections_total",
                "Intercepted TLS connections passed through, by ClientHello SNI (tls_inspector).",
                &id_sni,
            )?,
            bypassed: counter(
                r,
                "weir_intercept_bypassed_connections_total",
                "Connections a fail-open pod made directly, outside the mesh, while no agent served it; counted once an agent serves the pod again.",
                &BYPASS,
            )?,
            bypassed_reset: counter(
                r,
                "weir_intercept_bypassed_connections_reset_total",
                "Of the bypassed connections, those still open that weir reset once back (weir.dev/bypassed-connections).",
                &BYPASS,
            )?,
            refused: counter(
                r,
                "weir_intercept_connections_refused_total",
                "Intercepted connections reset at once because the pod was over its share (weir.dev/max-connections, weir.dev/max-connection-rate) or the node's descriptors were running out.",
                &["direction", "namespace", "pod", "reason"],
            )?,
            refused_requests: counter(
                r,
                "weir_intercept_requests_refused_total",
                "Intercepted HTTP requests answered 503 (x-envoy-overloaded) at once because the pod had its weir.dev/max-requests in flight.",
                &["direction", "namespace", "pod", "reason"],
            )?,
            cpu_used: float_counter(
                r,
                "weir_intercept_cpu_seconds_total",
                "Proxy CPU spent on the pod's intercepted connections (time polling their tasks), both directions.",
                &["namespace", "pod"],
            )?,
            cpu_throttled: float_counter(
                r,
                "weir_intercept_cpu_throttled_seconds_total",
                "Time the pod's intercepted connections were held back because it was over its weir.dev/max-cpu (summed over its connections).",
                &["namespace", "pod"],
            )?,
            sni_seen: BoundedValues::new(MAX_SNI_VALUES),
            dst_seen: BoundedValues::new(MAX_PASSTHROUGH_DESTINATIONS),
            principals_seen: BoundedValues::new(MAX_PRINCIPALS),
        })
    }

    /// A connection `direction` of pod `namespace/name` reset for `reason`;
    /// the series are bounded by the enrolled pods x 2 x 4.
    pub fn refused(&self, direction: &str, namespace: &str, name: &str, reason: &str) {
        self.refused
            .with_label_values(&[direction, namespace, name, reason])
            .inc();
    }

    /// A request `direction` of pod `namespace/name` refused for `reason`;
    /// one series per enrolled pod and direction (one reason so far).
    pub fn refused_request(&self, direction: &str, namespace: &str, name: &str, reason: &str) {
        self.refused_requests
            .with_label_values(&[direction, namespace, name, reason])
            .inc();
    }

    /// The pod's CPU counters (used, throttled): one series each per enrolled pod.
    pub fn cpu(&self, namespace: &str, name: &str) -> (Counter, Counter) {
        let labels = [namespace, name];
        (
            self.cpu_used.with_label_values(&labels),
            self.cpu_throttled.with_label_values(&labels),
        )
    }

    /// `connections` made by pod `namespace/name` while no agent served it,
    /// `reset` of which were reset. One series per enrolled pod, at most.
    pub fn bypassed(&self, namespace: &str, name: &str, connections: u64, reset: u64) {
        let labels = [namespace, name];
        self.bypassed.with_label_values(&labels).inc_by(connections);
        self.bypassed_reset.with_label_values(&labels).inc_by(reset);
    }

    /// A connection for a pod could not be opened from its namespace:
    /// because it was un-enrolled (`gone`), else its socket factory failed.
    pub fn pod_connect_failed(&self, gone: bool) {
        self.pod_connect_failures[usize::from(!gone)].inc();
    }

    pub fn detected(&self, direction: Direction, d: &Detected) {
        let p = match d {
            Detected::Http1 => 0,
            Detected::Tls { .. } => 1,
            Detected::Opaque => 2,
        };
        self.detected[direction as usize][p].inc();
    }

    /// Resolve the handles of one connection's identity.
    /// `l`'s label values, principals (9 and 12) within [`MAX_PRINCIPALS`].
    fn values<'l>(&self, l: &'l Labels<'l>) -> [&'l str; 14] {
        let mut v = l.values();
        for i in [9, 12] {
            if v[i] != UNKNOWN && self.principals_seen.admit(v[i]).is_none() {
                v[i] = OTHER;
            }
        }
        v
    }

    pub fn identity(&self, l: &Labels<'_>) -> IdentityHandles {
        let v = self.values(l);
        IdentityHandles {
            requests: CLASSES.map(|c| {
                let mut vc = v.to_vec();
                vc.push(c);
                self.requests.with_label_values(&vc)
            }),
            duration: self.durations.with_label_values(&v),
            opened: self.opened.with_label_values(&v),
            closed: self.closed.with_label_values(&v),
            sent: self.sent.with_label_values(&v),
            received: self.received.with_label_values(&v),
        }
    }

    /// Connections the kernel let through or refused without the proxy.
    pub fn direct(&self, l: &Labels<'_>, flow: &super::DirectFlow) {
        let v = self.values(l);
        if flow.refused {
            self.denied.with_label_values(&v).inc_by(flow.connections);
            return;
        }
        self.opened.with_label_values(&v).inc_by(flow.connections);
        self.closed.with_label_values(&v).inc_by(flow.closed);
        self.sent.with_label_values(&v).inc_by(flow.sent);
        self.received.with_label_values(&v).inc_by(flow.received);
    }

    pub fn denied(&self, l: &Labels<'_>) {
        self.denied.with_label_values(&self.values(l)).inc();
    }

    /// Count a TLS connection; `sni` is bounded to [`MAX_SNI_VALUES`] values.
    pub fn tls(&self, l: &Labels<'_>, sni: Option<&str>) {
        let sni = match sni {
            None => "none",
            Some(s) if self.sni_seen.admit(s).is_some() => s,
            Some(_) => OTHER,
        };
        let mut v = self.values(l).to_vec();
        v.push(sni);
        self.tls.with_label_values(&v).inc();
    }

    /// The `destination` label of unmatched traffic: `ip:port` within
    /// [`MAX_PASSTHROUGH_DESTINATIONS`], else `PassthroughCluster`.
    pub fn passthrough_destination(&self, dst: String) -> String {
        if self.dst_seen.admit(&dst).is_some() {
            dst
        } else {
            super::passthrough::PASSTHROUGH_CLUSTER.to_string()
        }
    }
}

/// True when `value` was seen before or fits in the budget.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_values_are_bounded() {
        let r = Registry::new();
        let m = InterceptMetrics::new(&r).unwrap();
        let l = Labels {
            direction: Direction::Outbound,
            source: Party {
                namespace: "ns",
                pod: "p",
                workload: "w",
                principal: "spiffe://cluster.local/ns/ns/sa/default",
            },
            destination: "d",
            destination_pod: Party::UNKNOWN,
            security: UNKNOWN,
        };
        for i in 0..MAX_SNI_VALUES + 10 {
            m.tls(&l, Some(&format!("h{i}.example")));
        }
        m.tls(&l, Some("h0.example"));
        let fams = r.gather();
        let tls = fams
            .iter()
            .find(|f| f.name() == "weir_intercept_tls_connections_total")
            .unwrap();
        assert_eq!(tls.get_metric().len(), MAX_SNI_VALUES + 1);
    }

    #[test]
    fn principal_values_are_bounded() {
        let r = Registry::new();
        let m = InterceptMetrics::new(&r).unwrap();
        for i in 0..MAX_PRINCIPALS + 10 {
            let principal = format!("spiffe://td/ns/n/sa/s{i}");
            let l = Labels {
                direction: Direction::Inbound,
                source: Party {
                    principal: &principal,
                    ..Party::UNKNOWN
                },
                destination: "d",
                destination_pod: Party::UNKNOWN,
                security: "mutual_tls",
            };
            m.identity(&l).connection();
        }
        let fams = r.gather();
        let opened = fams
            .iter()
            .find(|f| f.name() == "weir_intercept_tcp_connections_opened_total")
            .unwrap();
        // The bound's worth of principals, and `other` for the rest.
        assert_eq!(opened.get_metric().len(), MAX_PRINCIPALS + 1);
    }
}
