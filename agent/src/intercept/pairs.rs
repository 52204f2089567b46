//! The series of each (source, destination) identity, stored compactly:
//! one [`Pair`] per distinct identity label set, made on first use, with
//! the label values kept once (as the key of the map) and plain atomics
//! for its request counts per class, its duration histogram and its TCP
//! counters. [`Pairs`] is a `prometheus` [`Collector`] registered in the
//! agent's registry, so the families read exactly as `IntCounterVec` and
//! `HistogramVec` families with the same names and labels would.
//!
//! Why not those vectors: each of their children holds its own copy of the
//! 14-15 label pairs (a `String` name and value each), about 16 KiB per
//! probed pod for the 10 children of one pair. A pair here is ~0.5 KiB.
//!
//! Istio shows a series once it has something to say: a
//! `response_code_class` once a response of that class was counted, a
//! pair's histogram once it timed a request, the denied counter once a
//! connection was denied. The TCP counters (opened, closed, sent,
//! received) show from the first connection of the pair, zeros included.
//!
//! The map's lock is taken when a connection resolves its identity (once
//! per connection) and briefly by a scrape, which copies the entries out;
//! the request path only adds to the atomics of the `Arc<Pair>` it holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};

use super::bounded::OTHER;
use crate::proxy::io::ByteTotals;
use crate::proxy::metrics::{CLASSES, DURATION_BUCKETS_SECONDS, class_index};

/// The identity labels, in the order their values are given.
pub const ID: [&str; 14] = [
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

/// Distinct identity label sets kept. Each label is bounded on its own
/// (enrolled pods, [`super::identity::MAX_PRINCIPALS`],
/// [`super::identity::MAX_PASSTHROUGH_DESTINATIONS`], ...), but their
/// product is not; past this many sets (about 32 MiB of entries) a new one
/// is counted under its `direction` and `reporter` with every other label
/// `other`.
pub const MAX_PAIRS: usize = 65_536;

/// Labels kept in the overflow set: `direction` and `reporter`.
const KEPT_PAST_BOUND: [usize; 2] = [0, 6];

const BUCKETS: usize = DURATION_BUCKETS_SECONDS.len();

/// The families of the store: name, help, extra label.
const REQUESTS: (&str, &str) = (
    "weir_intercept_requests_total",
    "Intercepted HTTP requests by source, destination and response class (istio_requests_total).",
);
const DURATION: (&str, &str) = (
    "weir_intercept_request_duration_seconds",
    "Intercepted HTTP requests by source and destination: from the request head to the response head (istio_request_duration_milliseconds, in seconds).",
);
/// The counters every pair has, in [`Pair::tcp`] order, then denied.
const TCP: [(&str, &str); 5] = [
    (
        "weir_intercept_tcp_connections_opened_total",
        "Intercepted connections opened (istio_tcp_connections_opened_total).",
    ),
    (
        "weir_intercept_tcp_connections_closed_total",
        "Intercepted connections closed (istio_tcp_connections_closed_total).",
    ),
    (
        "weir_intercept_tcp_sent_bytes_total",
        "Bytes written to the intercepted client (istio_tcp_sent_bytes_total).",
    ),
    (
        "weir_intercept_tcp_received_bytes_total",
        "Bytes read from the intercepted client (istio_tcp_received_bytes_total).",
    ),
    (
        "weir_intercept_tcp_connections_denied_total",
        "Non-HTTP connections closed by outbound_traffic_policy REGISTRY_ONLY (Istio BlackHoleCluster).",
    ),
];
const OPENED: usize = 0;
const CLOSED: usize = 1;
const SENT: usize = 2;
const RECEIVED: usize = 3;
const DENIED: usize = 4;

/// [`Pair::shown`] bits: the opened/closed/sent/received series, the denied one.
const SHOW_TCP: u8 = 1;
const SHOW_DENIED: u8 = 2;

/// The counts of one identity label set.
#[derive(Default)]
pub struct Pair {
    /// Responses by class (`1xx` .. `5xx`).
    requests: [AtomicU64; 5],
    /// Requests timed, by the first bucket whose bound holds them (not
    /// cumulative); the last slot is above every bound. Their sum is the
    /// histogram's count.
    buckets: [AtomicU64; BUCKETS + 1],
    /// The sum of the times, seconds, as `f64` bits.
    sum: AtomicU64,
    /// opened, closed, sent, received, denied.
    tcp: [AtomicU64; 5],
    shown: AtomicU8,
}

impl Pair {
    /// A response with `status` that took `seconds`.
    pub fn response(&self, status: u16, seconds: f64) {
        self.requests[class_index(status)].fetch_add(1, Relaxed);
        let b = DURATION_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS);
        self.buckets[b].fetch_add(1, Relaxed);
        // Relaxed: a scrape may read a sum a request ahead of the buckets,
        // as `prometheus`'s own histogram may between its shards.
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + seconds).to_bits())
        });
    }

    pub fn opened(&self, n: u64) {
        self.tcp[OPENED].fetch_add(n, Relaxed);
    }

    pub fn closed(&self, n: u64) {
        self.tcp[CLOSED].fetch_add(n, Relaxed);
    }

    pub fn sent(&self, n: u64) {
        self.tcp[SENT].fetch_add(n, Relaxed);
    }

    pub fn received(&self, n: u64) {
        self.tcp[RECEIVED].fetch_add(n, Relaxed);
    }

    pub fn denied(&self, n: u64) {
        self.show(SHOW_DENIED);
        self.tcp[DENIED].fetch_add(n, Relaxed);
    }

    /// From now on the opened/closed/sent/received series are exported.
    pub fn show_tcp(&self) {
        self.show(SHOW_TCP);
    }

    fn show(&self, bit: u8) {
        if self.shown.load(Relaxed) & bit == 0 {
            self.shown.fetch_or(bit, Relaxed);
        }
    }
}

/// A stream to or from the intercepted client: read is what the client
/// sent (`received`), written what it is sent (`sent`).
impl ByteTotals for Pair {
    fn add_read(&self, n: u64) {
        self.received(n);
    }

    fn add_written(&self, n: u64) {
        self.sent(n);
    }
}

/// Every pair seen, exported as the identity families.
#[derive(Clone)]
pub struct Pairs(Arc<Store>);

struct Store {
    /// Key: the label values, each a LEB128 length then its bytes. Shared,
    /// so a scrape copies pointers under the lock, not up to
    /// [`MAX_PAIRS`] keys (which new connections would wait behind).
    pairs: Mutex<HashMap<Arc<[u8]>, Arc<Pair>>>,
    /// requests, duration, then the [`TCP`] families.
    descs: Vec<Desc>,
}

impl Pairs {
    pub fn new() -> Result<Self, prometheus::Error> {
        let desc = |(name, help): (&str, &str), extra: Option<&str>| {
            let labels = ID.iter().copied().chain(extra);
            Desc::new(
                name.into(),
                help.into(),
                labels.map(String::from).collect(),
                HashMap::new(),
            )
        };
        let mut descs = vec![
            desc(REQUESTS, Some("response_code_class"))?,
            desc(DURATION, None)?,
        ];
        for family in TCP {
            descs.push(desc(family, None)?);
        }
        Ok(Self(Arc::new(Store {
            pairs: Mutex::new(HashMap::new()),
            descs,
        })))
    }

    /// The entry of the label set `values` (in [`ID`] order), made when new.
    pub fn pair(&self, values: &[&str; 14]) -> Arc<Pair> {
        let key = encode(values);
        // A poisoned lock still holds consistent counters (nothing panics
        // half-way through an insert of ours).
        let mut pairs = self.0.pairs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pairs.get(&key[..]) {
            return Arc::clone(p);
        }
        let key = if pairs.len() < MAX_PAIRS {
            key
        } else {
            let mut v = [OTHER; 14];
            for i in KEPT_PAST_BOUND {
                v[i] = values[i];
            }
            encode(&v)
        };
        Arc::clone(pairs.entry(Arc::from(key)).or_default())
    }

    /// Distinct label sets held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.pairs.lock().map(|p| p.len()).unwrap_or(0)
    }
}

fn encode(values: &[&str; 14]) -> Vec<u8> {
    let mut key = Vec::with_capacity(values.iter().map(|v| v.len() + 2).sum());
    for v in values {
        let mut n = v.len();
        while n >= 0x80 {
            key.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        key.push(n as u8);
        key.extend_from_slice(v.as_bytes());
    }
    key
}

/// The values [`encode`] wrote, in [`ID`] order.
fn decode(mut key: &[u8]) -> Vec<&str> {
    let mut values = Vec::with_capacity(ID.len());
    while !key.is_empty() {
        let (mut n, mut shift) = (0usize, 0);
        while let Some((&b, rest)) = key.split_first() {
            key = rest;
            n |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let (v, rest) = key.split_at(n.min(key.len()));
        // The key was made from `&str`s, whole ones.
        values.push(std::str::from_utf8(v).unwrap_or(OTHER));
        key = rest;
    }
    values
}

/// The label pairs of `values` (in the desc's label order), sorted by
/// name as `prometheus` sorts its own.
fn label_pairs(desc: &Desc, values: &[&str]) -> Vec<LabelPair> {
    let mut pairs: Vec<LabelPair> = desc
        .variable_labels
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut p = LabelPair::default();
            p.set_name(name.clone());
            p.set_value((*value).to_owned());
            p
        })
        .collect();
    pairs.sort();
    pairs
}

fn counter(desc: &Desc, values: &[&str], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(label_pairs(desc, values));
    m.set_counter(c);
    m
}

fn histogram(desc: &Desc, values: &[&str], pair: &Pair) -> Option<Metric> {
    let counts: Vec<u64> = pair.buckets.iter().map(|b| b.load(Relaxed)).collect();
    let count: u64 = counts.iter().sum();
    if count == 0 {
        return None;
    }
    let mut cumulative = 0;
    let buckets = DURATION_BUCKETS_SECONDS
        .iter()
        .zip(&counts)
        .map(|(bound, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(f64::from_bits(pair.sum.load(Relaxed)));
    h.set_bucket(buckets);
    let mut m = Metric::from_label(label_pairs(desc, values));
    m.set_histogram(h);
    Some(m)
}

impl Collector for Pairs {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let entries: Vec<(Arc<[u8]>, Arc<Pair>)> = {
            let pairs = self.0.pairs.lock().unwrap_or_else(|e| e.into_inner());
            pairs
                .iter()
                .map(|(k, v)| (Arc::clone(k), Arc::clone(v)))
                .collect()
        };
        let descs = &self.0.descs;
        let mut metrics: Vec<Vec<Metric>> = vec![Vec::new(); descs.len()];
        for (key, pair) in &entries {
            let mut values = decode(key);
            for (class, n) in CLASSES.iter().zip(&pair.requests) {
                let n = n.load(Relaxed);
                if n > 0 {
                    values.push(class);
                    metrics[0].push(counter(&descs[0], &values, n));
                    values.pop();
                }
            }
            metrics[1].extend(histogram(&descs[1], &values, pair));
            let shown = pair.shown.load(Relaxed);
            for (i, n) in pair.tcp.iter().enumerate() {
                let bit = if i == DENIED { SHOW_DENIED } else { SHOW_TCP };
                if shown & bit != 0 {
                    metrics[2 + i].push(counter(&descs[2 + i], &values, n.load(Relaxed)));
                }
            }
        }
        descs
            .iter()
            .zip(metrics)
            .zip(
                [MetricType::COUNTER, MetricType::HISTOGRAM]
                    .into_iter()
                    .chain([MetricType::COUNTER; 5]),
            )
            .map(|((desc, metrics), kind)| {
                let mut f = MetricFamily::default();
                f.set_name(desc.fq_name.clone());
                f.set_help(desc.help.clone());
                f.set_field_type(kind);
                f.set_metric(metrics);
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{
        Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
    };

    use super::*;

    const VALUES: [&str; 14] = [
        "inbound",
        "unknown",
        "unknown",
        "10.0.0.7:8080",
        "ns",
        "web-0",
        "destination",
        "unknown",
        "unknown",
        "unknown",
        "ns",
        "web",
        "spiffe://cluster.local/ns/ns/sa/default",
        "none",
    ];

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn store() -> (Registry, Pairs) {
        let r = Registry::new();
        let pairs = Pairs::new().unwrap();
        r.register(Box::new(pairs.clone())).unwrap();
        (r, pairs)
    }

    /// The same counts in the `prometheus` vectors the store replaced: its
    /// exposition must read the same, byte for byte.
    #[test]
    fn a_pair_reads_as_the_prometheus_vectors_it_replaced() {
        let (r, pairs) = store();
        let p = pairs.pair(&VALUES);
        p.show_tcp();
        p.opened(2);
        p.response(200, 0.003);
        p.response(204, 42.0);
        p.response(503, 0.0005);
        p.received(120);
        p.sent(4000);
        p.closed(1);

        let old = Registry::new();
        let mut id_class = ID.to_vec();
        id_class.push("response_code_class");
        let requests = IntCounterVec::new(Opts::new(REQUESTS.0, REQUESTS.1), &id_class).unwrap();
        let opts =
            HistogramOpts::new(DURATION.0, DURATION.1).buckets(DURATION_BUCKETS_SECONDS.to_vec());
        let durations = HistogramVec::new(opts, &ID).unwrap();
        let tcp = TCP[..4]
            .iter()
            .map(|(name, help)| IntCounterVec::new(Opts::new(*name, *help), &ID).unwrap())
            .collect::<Vec<_>>();
        old.register(Box::new(requests.clone())).unwrap();
        old.register(Box::new(durations.clone())).unwrap();
        for c in &tcp {
            old.register(Box::new(c.clone())).unwrap();
        }
        let mut vc = VALUES.to_vec();
        vc.push("2xx");
        requests.with_label_values(&vc).inc_by(2);
        vc[14] = "5xx";
        requests.with_label_values(&vc).inc();
        let h = durations.with_label_values(&VALUES);
        for s in [0.003, 42.0, 0.0005] {
            h.observe(s);
        }
        for (c, n) in tcp.iter().zip([2, 1, 4000, 120]) {
            c.with_label_values(&VALUES).inc_by(n);
        }

        let new = text(&r);
        assert_eq!(new, text(&old));
        let ok = new
            .lines()
            .find(|l| l.contains("response_code_class=\"2xx\""))
            .unwrap();
        assert!(ok.ends_with("} 2"), "{new}");
    }

    #[test]
    fn a_class_a_histogram_and_denied_show_once_counted() {
        let (r, pairs) = store();
        let p = pairs.pair(&VALUES);
        assert_eq!(
            text(&r),
            "",
            "an entry nothing was counted in shows nothing"
        );
        p.show_tcp();
        let t = text(&r);
        assert!(
            t.contains("weir_intercept_tcp_connections_opened_total{"),
            "{t}"
        );
        assert!(!t.contains("weir_intercept_requests_total"), "{t}");
        assert!(
            !t.contains("weir_intercept_request_duration_seconds"),
            "{t}"
        );
        assert!(
            !t.contains("weir_intercept_tcp_connections_denied_total"),
            "{t}"
        );
        p.response(404, 0.01);
        let t = text(&r);
        let classes: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("weir_intercept_requests_total{"))
            .collect();
        assert_eq!(classes.len(), 1, "{t}");
        assert!(
            classes[0].contains("response_code_class=\"4xx\"") && classes[0].ends_with("} 1"),
            "{t}"
        );
        assert!(
            t.contains("weir_intercept_request_duration_seconds_count{"),
            "{t}"
        );
        p.denied(3);
        assert!(text(&r).contains("weir_intercept_tcp_connections_denied_total{"));
    }

    #[test]
    fn one_label_set_is_one_entry() {
        let (_, pairs) = store();
        let a = pairs.pair(&VALUES);
        let b = pairs.pair(&VALUES);
        assert!(Arc::ptr_eq(&a, &b));
        let mut other = VALUES;
        other[0] = "outbound";
        assert!(!Arc::ptr_eq(&a, &pairs.pair(&other)));
        assert_eq!(pairs.len(), 2);
    }

    #[test]
    fn keys_are_unambiguous_and_read_back() {
        let long = "x".repeat(300);
        let mut v = VALUES;
        v[3] = &long;
        v[4] = "";
        assert_eq!(decode(&encode(&v)), v.to_vec());
        // Moving a byte from one value to the next is another key.
        let (mut a, mut b) = (VALUES, VALUES);
        (a[1], a[2]) = ("ab", "c");
        (b[1], b[2]) = ("a", "bc");
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn label_sets_past_the_bound_share_one_entry() {
        let (_, pairs) = store();
        let names: Vec<String> = (0..MAX_PAIRS + 2).map(|i| format!("p{i}")).collect();
        let mut last = None;
        for name in &names {
            let mut v = VALUES;
            v[2] = name;
            last = Some(pairs.pair(&v));
        }
        assert_eq!(pairs.len(), MAX_PAIRS + 1);
        let mut past = [OTHER; 14];
        (past[0], past[6]) = (VALUES[0], VALUES[6]);
        assert!(Arc::ptr_eq(&last.unwrap(), &pairs.pair(&past)));
    }
}
