//! Envoy's view of the same numbers: the listener, cluster, TLS and DNS
//! families under the stat names an Envoy with the same config would use
//! (`http.<listener>.downstream_rq_2xx`, `cluster.<cluster>.upstream_rq_503`,
//! `listener.<address>.ssl.handshake`, ...), in Envoy's text, JSON and
//! Prometheus forms (`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",
//! envoy_cluster_name="..."}`), so checks and dashboards written against
//! Envoy read weir unchanged. Only families whose meaning is Envoy's are
//! listed. The Prometheus form leads the scrape page (`/stats/prometheus`),
//! weir's own `weir_*` families follow it.

mod render;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use prometheus::proto::{Metric, MetricFamily, MetricType};

pub use self::render::{json, prometheus, text};

/// Where a family's label says the stat lives.
#[derive(Clone, Copy)]
enum Scope {
    /// `listener` label -> `http.<name>.` (the HTTP connection manager's `stat_prefix`).
    Http,
    /// `cluster` label -> `cluster.<name>.`
    Cluster,
    /// `listener` label -> `listener.<address>.` (Envoy names listener
    /// stats by the configured address, `127.0.0.1_8443`).
    Listener,
}

impl Scope {
    fn label(self) -> &'static str {
        match self {
            Scope::Http | Scope::Listener => "listener",
            Scope::Cluster => "cluster",
        }
    }

    fn dotted(self) -> &'static str {
        match self {
            Scope::Http => "http",
            Scope::Cluster => "cluster",
            Scope::Listener => "listener",
        }
    }

    /// Envoy's Prometheus tag for the scope's name.
    fn tag(self) -> &'static str {
        match self {
            Scope::Http => "envoy_http_conn_manager_prefix",
            Scope::Cluster => "envoy_cluster_name",
            Scope::Listener => "envoy_listener_address",
        }
    }
}

/// How a family's series become stats.
enum Stat {
    /// One stat; series differing only in other labels are summed.
    Fixed(&'static str),
    /// `<prefix><class>` by the `response_code_class` label (`2xx`).
    ByClass(&'static str),
    /// By the value of `label`; values not listed are left out.
    ByValue(&'static str, &'static [(&'static str, &'static str)]),
    /// `<prefix><code>` by the `response_code` label (`503`).
    ByCode(&'static str),
}

/// Handshake failure reasons (`metrics::tls`) under Envoy's TLS stat names.
const TLS_FAILURES: &[(&str, &str)] = &[
    ("verify_failed", "ssl.fail_verify_error"),
    ("no_client_certificate", "ssl.fail_verify_no_cert"),
    ("peer_alert", "ssl.connection_error"),
    ("incompatible", "ssl.connection_error"),
    ("no_application_protocol", "ssl.connection_error"),
    ("not_tls", "ssl.connection_error"),
    ("io", "ssl.connection_error"),
    ("other", "ssl.connection_error"),
];

const RULES: &[(&str, Scope, Stat)] = &[
    (
        "weir_http_downstream_requests_total",
        Scope::Http,
        Stat::ByClass("downstream_rq_"),
    ),
    (
        "weir_http_downstream_requests_total",
        Scope::Http,
        Stat::Fixed("downstream_rq_completed"),
    ),
    (
        "weir_http_downstream_no_route_total",
        Scope::Http,
        Stat::Fixed("no_route"),
    ),
    (
        "weir_http_downstream_requests_by_protocol_total",
        Scope::Http,
        Stat::Fixed("downstream_rq_total"),
    ),
    (
        "weir_http_downstream_requests_by_protocol_total",
        Scope::Http,
        Stat::ByValue(
            "protocol",
            &[
                ("HTTP/1.1", "downstream_rq_http1_total"),
                ("HTTP/2", "downstream_rq_http2_total"),
            ],
        ),
    ),
    (
        "weir_http_downstream_connections_total",
        Scope::Http,
        Stat::Fixed("downstream_cx_total"),
    ),
    (
        "weir_http_downstream_connections_active",
        Scope::Http,
        Stat::Fixed("downstream_cx_active"),
    ),
    (
        "weir_http_downstream_connections_overflow_total",
        Scope::Listener,
        Stat::Fixed("downstream_cx_overflow"),
    ),
    (
        "weir_http_downstream_received_bytes_total",
        Scope::Http,
        Stat::Fixed("downstream_cx_rx_bytes_total"),
    ),
    (
        "weir_http_downstream_sent_bytes_total",
        Scope::Http,
        Stat::Fixed("downstream_cx_tx_bytes_total"),
    ),
    (
        "weir_http_downstream_request_timeouts_total",
        Scope::Http,
        Stat::Fixed("downstream_rq_timeout"),
    ),
    (
        "weir_cluster_upstream_requests_total",
        Scope::Cluster,
        Stat::ByClass("upstream_rq_"),
    ),
    (
        "weir_cluster_upstream_requests_total",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_completed"),
    ),
    (
        "weir_cluster_upstream_requests_by_code_total",
        Scope::Cluster,
        Stat::ByCode("upstream_rq_"),
    ),
    (
        "weir_cluster_upstream_requests_sent_total",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_total"),
    ),
    (
        "weir_cluster_retry_upstream_requests_total",
        Scope::Cluster,
        Stat::ByClass("retry.upstream_rq_"),
    ),
    (
        "weir_cluster_upstream_requests_active",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_active"),
    ),
    (
        "weir_cluster_upstream_connections_total",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_total"),
    ),
    (
        "weir_cluster_upstream_connections_active",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_active"),
    ),
    (
        "weir_cluster_upstream_connect_failures_total",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_connect_fail"),
    ),
    (
        "weir_cluster_upstream_connect_timeouts_total",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_connect_timeout"),
    ),
    (
        "weir_cluster_upstream_request_timeouts_total",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_timeout"),
    ),
    (
        "weir_cluster_upstream_request_per_try_timeouts_total",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_per_try_timeout"),
    ),
    (
        "weir_cluster_lb_healthy_panic_total",
        Scope::Cluster,
        Stat::Fixed("lb_healthy_panic"),
    ),
    (
        "weir_cluster_upstream_request_retries_total",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_retry"),
    ),
    (
        "weir_cluster_upstream_request_resets_total",
        Scope::Cluster,
        Stat::Fixed("upstream_rq_rx_reset"),
    ),
    (
        "weir_cluster_upstream_no_healthy_total",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_none_healthy"),
    ),
    (
        "weir_cluster_circuit_breaker_overflows_total",
        Scope::Cluster,
        Stat::ByValue(
            "breaker",
            &[
                ("connections", "upstream_cx_overflow"),
                // Envoy counts both under one name (see docs/metrics.md).
                ("pending", "upstream_rq_pending_overflow"),
                ("requests", "upstream_rq_pending_overflow"),
                ("retries", "upstream_rq_retry_overflow"),
            ],
        ),
    ),
    (
        "weir_cluster_upstream_sent_bytes_total",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_tx_bytes_total"),
    ),
    (
        "weir_cluster_upstream_received_bytes_total",
        Scope::Cluster,
        Stat::Fixed("upstream_cx_rx_bytes_total"),
    ),
    (
        "weir_cluster_outlier_ejections_total",
        Scope::Cluster,
        Stat::Fixed("outlier_detection.ejections_enforced_total"),
    ),
];

/// The TLS families, the same two on each side: (handshakes, handshake
/// failures, the side's scope).
const TLS_RULES: &[(&str, &str, Scope)] = &[
    (
        "weir_tls_downstream_handshakes_total",
        "weir_tls_downstream_handshake_failures_total",
        Scope::Listener,
    ),
    (
        "weir_tls_upstream_handshakes_total",
        "weir_tls_upstream_handshake_failures_total",
        Scope::Cluster,
    ),
];

static HANDSHAKES: Stat = Stat::Fixed("ssl.handshake");
static HANDSHAKE_FAILURES: Stat = Stat::ByValue("reason", TLS_FAILURES);

/// The rules for the weir family `name`: its rows in [`RULES`] and [`TLS_RULES`].
fn rules_for(name: &str) -> impl Iterator<Item = (Scope, &'static Stat)> + '_ {
    let tls = TLS_RULES
        .iter()
        .filter_map(move |(handshakes, failures, scope)| {
            if *handshakes == name {
                Some((*scope, &HANDSHAKES))
            } else if *failures == name {
                Some((*scope, &HANDSHAKE_FAILURES))
            } else {
                None
            }
        });
    RULES
        .iter()
        .filter(move |(weir, ..)| *weir == name)
        .map(|(_, scope, stat)| (*scope, stat))
        .chain(tls)
}

/// Duration histograms (seconds in weir, milliseconds in Envoy).
const HISTOGRAM_RULES: &[(&str, Scope, &str)] = &[
    (
        "weir_cluster_upstream_request_duration_seconds",
        Scope::Cluster,
        "upstream_rq_time",
    ),
    (
        "weir_http_downstream_request_duration_seconds",
        Scope::Http,
        "downstream_rq_time",
    ),
];

/// DNS families: the STRICT_DNS cluster stat (`cluster.<c>.update_attempt`)
/// and the DYNAMIC_FORWARD_PROXY cache stat (`dns_cache.<name>.dns_query_attempt`).
const DNS_RULES: &[(&str, Option<&str>, &str)] = &[
    (
        "weir_dns_query_attempts_total",
        Some("update_attempt"),
        "dns_query_attempt",
    ),
    (
        "weir_dns_query_successes_total",
        Some("update_success"),
        "dns_query_success",
    ),
    (
        "weir_dns_query_failures_total",
        Some("update_failure"),
        "dns_query_failure",
    ),
    ("weir_dns_hosts_added_total", None, "host_added"),
    ("weir_dns_hosts_removed_total", None, "host_removed"),
];

/// One stat under its Envoy name.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyStat {
    /// Dotted, as Envoy's `/stats` prints it.
    pub name: String,
    pub value: Value,
    /// Prometheus family and tags, as Envoy's tag extraction gives them.
    family: String,
    tags: Vec<(&'static str, String)>,
}

/// A stat's value, by Envoy's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(u64),
    Histogram(Histogram),
}

/// A histogram in Envoy's unit (milliseconds): cumulative bucket counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// (upper bound in ms, observations at or below it), ascending.
    pub buckets: Vec<(f64, u64)>,
    pub sum_ms: f64,
    pub count: u64,
}

impl EnvoyStat {
    /// Envoy's `usedonly`: ever written. weir's counters and histograms
    /// say so by being non-zero.
    pub fn used(&self) -> bool {
        match &self.value {
            Value::Counter(v) | Value::Gauge(v) => *v > 0,
            Value::Histogram(h) => h.count > 0,
        }
    }

    fn add(&mut self, value: &Value) {
        match (&mut self.value, value) {
            (Value::Counter(a), Value::Counter(b)) | (Value::Gauge(a), Value::Gauge(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) => {
                a.sum_ms += b.sum_ms;
                a.count += b.count;
                for ((_, n), (_, m)) in a.buckets.iter_mut().zip(&b.buckets) {
                    *n += m;
                }
            }
            _ => {}
        }
    }
}

/// What the stats need beyond the metric families.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The DNS cache name of each DYNAMIC_FORWARD_PROXY cluster (other
    /// clusters with DNS stats are STRICT_DNS).
    pub dns_caches: HashMap<String, String>,
    /// Each listener's configured address, which names its `listener.` stats.
    pub listener_addresses: HashMap<String, SocketAddr>,
    /// Each cluster's endpoints now: (cluster, total, healthy).
    pub membership: Vec<(String, u64, u64)>,
}

/// Every stat the rules produce from `families`, sorted by name.
pub fn stats(families: &[MetricFamily], inputs: &Inputs) -> Vec<EnvoyStat> {
    let mut out: BTreeMap<String, EnvoyStat> = BTreeMap::new();
    let mut put = |stat: EnvoyStat| match out.get_mut(&stat.name) {
        Some(have) => have.add(&stat.value),
        None => {
            out.insert(stat.name.clone(), stat);
        }
    };
    for family in families {
        dns_stats(family, &inputs.dns_caches, &mut put);
        histogram_stats(family, &mut put);
        let gauge = family.get_field_type() == MetricType::GAUGE;
        for (scope, stat) in rules_for(family.name()) {
            for metric in family.get_metric() {
                let Some(owner) = label(metric, scope.label()) else {
                    continue;
                };
                let owner = match scope {
                    Scope::Listener => match inputs.listener_addresses.get(owner) {
                        Some(addr) => listener_address(*addr),
                        None => continue,
                    },
                    _ => owner.to_owned(),
                };
                let (suffix, tag) = match stat {
                    Stat::Fixed(s) => ((*s).to_owned(), None),
                    Stat::ByClass(prefix) => match label(metric, "response_code_class") {
                        Some(c) => (
                            format!("{prefix}{c}"),
                            Some(("envoy_response_code_class", c[..1].to_owned())),
                        ),
                        None => continue,
                    },
                    Stat::ByCode(prefix) => match label(metric, "response_code") {
                        Some(c) => (
                            format!("{prefix}{c}"),
                            Some(("envoy_response_code", c.to_owned())),
                        ),
                        None => continue,
                    },
                    Stat::ByValue(name, map) => {
                        match map.iter().find(|(v, _)| Some(*v) == label(metric, name)) {
                            Some((_, s)) => ((*s).to_owned(), None),
                            None => continue,
                        }
                    }
                };
                let value = if gauge {
                    Value::Gauge(metric.get_gauge().get_value().max(0.0) as u64)
                } else {
                    Value::Counter(metric.get_counter().get_value().max(0.0) as u64)
                };
                // Envoy creates a cluster's `upstream_rq_<N>xx` and
                // `retry.upstream_rq_<N>xx` when it first charges that
                // class, so a class never charged is not listed (checked
                // against Envoy 1.40); a listener's five
                // `downstream_rq_<N>xx` are declared up front and listed at 0.
                if matches!((scope, stat), (Scope::Cluster, Stat::ByClass(_)))
                    && value == Value::Counter(0)
                {
                    continue;
                }
                put(scoped(scope, &owner, &suffix, tag, value));
            }
        }
    }
    for (cluster, total, healthy) in &inputs.membership {
        put(scoped(
            Scope::Cluster,
            cluster,
            "membership_total",
            None,
            Value::Gauge(*total),
        ));
        put(scoped(
            Scope::Cluster,
            cluster,
            "membership_healthy",
            None,
            Value::Gauge(*healthy),
        ));
    }
    out.into_values().collect()
}

/// A stat of `scope`'s `owner`, named and tagged as Envoy does.
fn scoped(
    scope: Scope,
    owner: &str,
    suffix: &str,
    tag: Option<(&'static str, String)>,
    value: Value,
) -> EnvoyStat {
    let (family, tags) = prometheus_form(scope, owner, suffix, tag);
    EnvoyStat {
        name: format!("{}.{owner}.{suffix}", scope.dotted()),
        value,
        family,
        tags,
    }
}

/// Envoy's listener stat name part for an address: `127.0.0.1_8443`,
/// `[__1]_8443` (colons become underscores).
fn listener_address(addr: SocketAddr) -> String {
    addr.to_string().replace(':', "_")
}

/// The value of `metric`'s label `name`.
fn label<'m>(metric: &'m Metric, name: &str) -> Option<&'m str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

fn histogram_stats(family: &MetricFamily, put: &mut impl FnMut(EnvoyStat)) {
    let Some((_, scope, suffix)) = HISTOGRAM_RULES
        .iter()
        .find(|(weir, ..)| *weir == family.name())
    else {
        return;
    };
    for metric in family.get_metric() {
        let Some(owner) = label(metric, scope.label()) else {
            continue;
        };
        let h = metric.get_histogram();
        let histogram = Histogram {
            buckets: h
                .get_bucket()
                .iter()
                .filter(|b| b.upper_bound().is_finite())
                .map(|b| (b.upper_bound() * 1000.0, b.cumulative_count()))
                .collect(),
            sum_ms: h.get_sample_sum() * 1000.0,
            count: h.get_sample_count(),
        };
        put(scoped(
            *scope,
            owner,
            suffix,
            None,
            Value::Histogram(histogram),
        ));
    }
}

fn dns_stats(
    family: &MetricFamily,
    dns_caches: &HashMap<String, String>,
    put: &mut impl FnMut(EnvoyStat),
) {
    let Some((_, strict, cache)) = DNS_RULES.iter().find(|(weir, ..)| *weir == family.name())
    else {
        return;
    };
    for metric in family.get_metric() {
        let Some(cluster) = label(metric, "cluster") else {
            continue;
        };
        let value = Value::Counter(metric.get_counter().get_value().max(0.0) as u64);
        match (dns_caches.get(cluster), strict) {
            // Envoy's Prometheus output keeps the cache name in the family name.
            (Some(cache_name), _) => put(EnvoyStat {
                name: format!("dns_cache.{cache_name}.{cache}"),
                value,
                family: format!("envoy_dns_cache_{}_{cache}", prometheus_safe(cache_name)),
                tags: Vec::new(),
            }),
            (None, Some(strict)) => put(scoped(Scope::Cluster, cluster, strict, None, value)),
            (None, None) => {}
        }
    }
}

/// Envoy's tag extraction for these names: the scope's name becomes a
/// tag; a trailing `_<digit>xx` becomes `_xx` with
/// `envoy_response_code_class`, a trailing `_<code>` is dropped for
/// `envoy_response_code`. Envoy's name regexes take a cluster or prefix
/// name up to its first dot, so a dotted name (`outbound|80||httpbin.org`)
/// is cut there and the rest joins the family name
/// (`envoy_cluster_org_upstream_rq_total{envoy_cluster_name="outbound|80||httpbin"}`,
/// checked against Envoy 1.40); listener addresses keep their dots.
fn prometheus_form(
    scope: Scope,
    owner: &str,
    suffix: &str,
    tag: Option<(&'static str, String)>,
) -> (String, Vec<(&'static str, String)>) {
    let (tag_value, rest) = match (scope, owner.split_once('.')) {
        (Scope::Listener, _) | (_, None) => (owner, None),
        (_, Some((head, rest))) => (head, Some(rest)),
    };
    let mut stem = match rest {
        Some(rest) => format!("{rest}.{suffix}"),
        None => suffix.to_owned(),
    };
    let mut tags = Vec::with_capacity(2);
    if let Some((name, value)) = tag {
        if name == "envoy_response_code_class" {
            // `upstream_rq_2xx` -> `upstream_rq_xx`
            stem.truncate(stem.len() - "2xx".len());
            stem.push_str("xx");
        } else {
            // `upstream_rq_503` -> `upstream_rq`
            stem.truncate(stem.len() - value.len() - 1);
        }
        tags.push((name, value));
    }
    tags.push((scope.tag(), tag_value.to_owned()));
    (
        format!("envoy_{}_{}", scope.dotted(), prometheus_safe(&stem)),
        tags,
    )
}

/// A name part as Envoy's Prometheus output writes it: every character
/// outside `[A-Za-z0-9_]` becomes `_` (`egress-proxy` -> `egress_proxy`).
fn prometheus_safe(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests;
