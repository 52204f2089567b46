//! Interception metrics: Istio's standard metrics (`istio_requests_total`,
//! `istio_tcp_*`) with weir names, plus protocol detection and TLS SNI.
//! See `docs/metrics.md`.
//!
//! A connection resolves its identity once ([`InterceptMetrics::identity`]):
//! the entry of its label set in [`Pairs`], which holds the
//! per-(source, destination) families compactly; the request path only
//! adds to the atomics of the entry it holds.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Counter, CounterVec, IntCounter, IntCounterVec, Registry};

use super::bounded::{BoundedValues, OTHER};
use super::detect::{Detected, Direction};
use super::pairs::{ID, Pair, Pairs};
use crate::proxy::io::{ByteCounters, ByteTotals};
use crate::proxy::metrics::{MetricsError, counter, float_counter};

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
    /// The values of [`ID`]: weir's own labels, then Istio's standard ones
    /// with the same facts (`reporter`, `*_workload_namespace`,
    /// `*_workload`, `*_principal`, `connection_security_policy`), so that
    /// Kiali-style queries written for `istio_requests_total` read weir's
    /// families unchanged.
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
    /// requests, durations, opened, closed, sent, received, denied.
    pairs: Pairs,
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

/// The counters of one (source, destination) pair: its entry, shared by
/// every connection of the pair.
#[derive(Clone)]
pub struct IdentityHandles(Arc<Pair>);

impl IdentityHandles {
    /// A response with `status`, `elapsed` after its request's head was
    /// read (istio_requests_total and istio_request_duration_milliseconds).
    pub fn response(&self, status: u16, elapsed: Duration) {
        self.0.response(status, elapsed.as_secs_f64());
    }

    /// The byte counters of a stream to or from the intercepted client.
    pub fn counters(&self) -> ByteCounters {
        ByteCounters::new(self.0.clone())
    }

    /// The byte counters of a stream to the application on the client's
    /// behalf (same-node delivery): what weir writes is what the client
    /// sent (`received`), what it reads is the answer (`sent`).
    pub fn app_counters(&self) -> ByteCounters {
        ByteCounters::new(Arc::new(AppSide(self.0.clone())))
    }

    /// Count a connection opened now and closed when the guard drops.
    pub fn connection(&self) -> ConnCount {
        self.0.opened(1);
        ConnCount(self.0.clone())
    }
}

/// A pair's bytes seen from the application's side.
struct AppSide(Arc<Pair>);

impl ByteTotals for AppSide {
    fn add_read(&self, n: u64) {
        self.0.sent(n);
    }

    fn add_written(&self, n: u64) {
        self.0.received(n);
    }
}

/// Increments `..._tcp_connections_closed_total` on drop.
pub struct ConnCount(Arc<Pair>);

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.closed(1);
    }
}

impl InterceptMetrics {
    pub fn new(r: &Registry) -> Result<Self, MetricsError> {
        let pairs = Pairs::new()?;
        r.register(Box::new(pairs.clone()))?;
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
            pairs,
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

    /// The entry of `l`'s label set, made on its first connection; its
    /// TCP series show from then on.
    pub fn identity(&self, l: &Labels<'_>) -> IdentityHandles {
        let pair = self.pairs.pair(&self.values(l));
        pair.show_tcp();
        IdentityHandles(pair)
    }

    /// Connections the kernel let through or refused without the proxy.
    pub fn direct(&self, l: &Labels<'_>, flow: &super::DirectFlow) {
        let pair = self.pairs.pair(&self.values(l));
        if flow.refused {
            pair.denied(flow.connections);
            return;
        }
        pair.show_tcp();
        pair.opened(flow.connections);
        pair.closed(flow.closed);
        pair.sent(flow.sent);
        pair.received(flow.received);
    }

    pub fn denied(&self, l: &Labels<'_>) {
        self.pairs.pair(&self.values(l)).denied(1);
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

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricFamily;

    use super::*;

    fn metrics() -> (Registry, InterceptMetrics) {
        let r = Registry::new();
        let m = InterceptMetrics::new(&r).unwrap();
        (r, m)
    }

    /// The gathered family `name`.
    fn family(r: &Registry, name: &str) -> MetricFamily {
        r.gather().into_iter().find(|f| f.name() == name).unwrap()
    }

    #[test]
    fn sni_values_are_bounded() {
        let (r, m) = metrics();
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
        let tls = family(&r, "weir_intercept_tls_connections_total");
        assert_eq!(tls.get_metric().len(), MAX_SNI_VALUES + 1);
    }

    #[test]
    fn connections_of_one_pair_share_its_entry() {
        let (r, m) = metrics();
        let l = Labels {
            direction: Direction::Inbound,
            source: Party::UNKNOWN,
            destination: "10.0.0.7:8080",
            destination_pod: Party::UNKNOWN,
            security: "none",
        };
        let (a, b) = (m.identity(&l), m.identity(&l));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let (_one, _two) = (a.connection(), b.connection());
        a.response(200, Duration::from_millis(3));
        b.response(200, Duration::from_millis(5));
        let requests = family(&r, "weir_intercept_requests_total");
        // One series, 2xx only (Istio shows no class it has not seen).
        assert_eq!(requests.get_metric().len(), 1);
        assert_eq!(requests.get_metric()[0].get_counter().get_value(), 2.0);
    }

    #[test]
    fn principal_values_are_bounded() {
        let (r, m) = metrics();
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
        let opened = family(&r, "weir_intercept_tcp_connections_opened_total");
        // The bound's worth of principals, and `other` for the rest.
        assert_eq!(opened.get_metric().len(), MAX_PRINCIPALS + 1);
    }
}
