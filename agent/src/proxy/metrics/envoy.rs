//! Envoy's view of the same numbers, for the admin `/stats` endpoint: the
//! listener and cluster families under the stat names an Envoy with the
//! same config would use (`http.<listener>.downstream_rq_2xx`,
//! `cluster.<cluster>.upstream_cx_total`, ...), in Envoy's text, JSON and
//! Prometheus forms (`envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",
//! envoy_cluster_name="..."}`). So checks and dashboards written against
//! Envoy read weir unchanged. Only families whose meaning is Envoy's are
//! listed; weir's own names stay at `/stats/prometheus`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use prometheus::proto::{MetricFamily, MetricType};

/// Where a family's label says the stat lives.
#[derive(Clone, Copy)]
enum Scope {
    /// `listener` label -> `http.<name>.` (the HTTP connection manager's `stat_prefix`).
    Http,
    /// `cluster` label -> `cluster.<name>.`
    Cluster,
}

impl Scope {
    fn label(self) -> &'static str {
        match self {
            Scope::Http => "listener",
            Scope::Cluster => "cluster",
        }
    }

    fn dotted(self) -> &'static str {
        match self {
            Scope::Http => "http",
            Scope::Cluster => "cluster",
        }
    }

    /// Envoy's Prometheus tag for the scope's name.
    fn tag(self) -> &'static str {
        match self {
            Scope::Http => "envoy_http_conn_manager_prefix",
            Scope::Cluster => "envoy_cluster_name",
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
}

const RULES: &[(&str, Scope, Stat)] = &[
    (
        "weir_http_downstream_requests_total",
        Scope::Http,
        Stat::ByClass("downstream_rq_"),
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
    pub value: u64,
    gauge: bool,
    /// Prometheus family and tags, as Envoy's tag extraction gives them.
    family: String,
    tags: Vec<(&'static str, String)>,
}

/// Every stat the rules produce from `families`, sorted by name.
/// `dns_caches`: the DNS cache name of each DYNAMIC_FORWARD_PROXY cluster
/// (other clusters with DNS stats are STRICT_DNS).
pub fn stats(families: &[MetricFamily], dns_caches: &HashMap<String, String>) -> Vec<EnvoyStat> {
    let mut out: BTreeMap<String, EnvoyStat> = BTreeMap::new();
    for family in families {
        dns_stats(family, dns_caches, &mut out);
        let gauge = family.get_field_type() == MetricType::GAUGE;
        for (_, scope, stat) in RULES.iter().filter(|(weir, ..)| *weir == family.name()) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value())
                };
                let Some(owner) = label(scope.label()) else {
                    continue;
                };
                let (suffix, class) = match stat {
                    Stat::Fixed(s) => ((*s).to_owned(), None),
                    Stat::ByClass(prefix) => match label("response_code_class") {
                        Some(c) => (format!("{prefix}{c}"), c.chars().next()),
                        None => continue,
                    },
                    Stat::ByValue(name, map) => {
                        match map.iter().find(|(v, _)| Some(*v) == label(name)) {
                            Some((_, s)) => ((*s).to_owned(), None),
                            None => continue,
                        }
                    }
                };
                let value = if gauge {
                    metric.get_gauge().get_value()
                } else {
                    metric.get_counter().get_value()
                };
                let name = format!("{}.{owner}.{suffix}", scope.dotted());
                let entry = out.entry(name.clone()).or_insert_with(|| {
                    let (family, tags) = prometheus_form(*scope, owner, &suffix, class);
                    EnvoyStat {
                        name,
                        value: 0,
                        gauge,
                        family,
                        tags,
                    }
                });
                entry.value += value.max(0.0) as u64;
            }
        }
    }
    out.into_values().collect()
}

fn dns_stats(
    family: &MetricFamily,
    dns_caches: &HashMap<String, String>,
    out: &mut BTreeMap<String, EnvoyStat>,
) {
    let Some((_, strict, cache)) = DNS_RULES.iter().find(|(weir, ..)| *weir == family.name())
    else {
        return;
    };
    for metric in family.get_metric() {
        let Some(cluster) = metric
            .get_label()
            .iter()
            .find(|l| l.name() == "cluster")
            .map(|l| l.value())
        else {
            continue;
        };
        let (name, family, tags) = match (dns_caches.get(cluster), strict) {
            // Envoy's Prometheus output keeps the cache name in the family name.
            (Some(cache_name), _) => (
                format!("dns_cache.{cache_name}.{cache}"),
                format!("envoy_dns_cache_{}_{cache}", prometheus_safe(cache_name)),
                Vec::new(),
            ),
            (None, Some(strict)) => {
                let (family, tags) = prometheus_form(Scope::Cluster, cluster, strict, None);
                (format!("cluster.{cluster}.{strict}"), family, tags)
            }
            (None, None) => continue,
        };
        let value = metric.get_counter().get_value().max(0.0) as u64;
        out.entry(name.clone())
            .or_insert_with(|| EnvoyStat {
                name,
                value: 0,
                gauge: false,
                family,
                tags,
            })
            .value += value;
    }
}

/// Envoy's tag extraction for these names: the scope's name becomes a tag,
/// a trailing `_<digit>xx` becomes `_xx` with `envoy_response_code_class`.
fn prometheus_form(
    scope: Scope,
    owner: &str,
    suffix: &str,
    class: Option<char>,
) -> (String, Vec<(&'static str, String)>) {
    let mut tags = Vec::with_capacity(2);
    let mut stem = suffix.replace('.', "_");
    if let Some(c) = class {
        stem.truncate(stem.len() - "2xx".len());
        stem.push_str("xx");
        tags.push(("envoy_response_code_class", c.to_string()));
    }
    tags.push((scope.tag(), owner.to_owned()));
    (format!("envoy_{}_{stem}", scope.dotted()), tags)
}

/// A name part as Envoy's Prometheus output writes it: every character
/// outside `[A-Za-z0-9_]` becomes `_` (`egress-proxy` -> `egress_proxy`).
fn prometheus_safe(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `name: value` lines, Envoy's `/stats` text.
pub fn text(stats: &[EnvoyStat]) -> String {
    let mut s = String::with_capacity(stats.len() * 48);
    for stat in stats {
        let _ = writeln!(s, "{}: {}", stat.name, stat.value);
    }
    s
}

/// Envoy's `/stats?format=json`.
pub fn json(stats: &[EnvoyStat]) -> String {
    let list: Vec<_> = stats
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "value": s.value}))
        .collect();
    serde_json::json!({ "stats": list }).to_string()
}

/// Envoy's `/stats?format=prometheus`: families sorted, one `# TYPE` each.
pub fn prometheus(stats: &[EnvoyStat]) -> String {
    let mut by_family: BTreeMap<&str, Vec<&EnvoyStat>> = BTreeMap::new();
    for stat in stats {
        by_family.entry(&stat.family).or_default().push(stat);
    }
    let mut s = String::with_capacity(stats.len() * 96);
    for (family, members) in by_family {
        let kind = if members[0].gauge { "gauge" } else { "counter" };
        let _ = writeln!(s, "# TYPE {family} {kind}");
        for stat in members {
            let tags: Vec<String> = stat
                .tags
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if tags.is_empty() {
                let _ = writeln!(s, "{family} {}", stat.value);
            } else {
                let _ = writeln!(s, "{family}{{{}}} {}", tags.join(","), stat.value);
            }
        }
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

    fn sample() -> Vec<EnvoyStat> {
        let m = Metrics::new().unwrap();
        let l = m.listener("egress_http");
        l.response(200);
        l.response(204);
        l.response(404);
        let c = m.cluster("proxy_cluster");
        c.cx_total.inc();
        stats(&m.gather(), &HashMap::new())
    }

    fn value(stats: &[EnvoyStat], name: &str) -> Option<u64> {
        stats.iter().find(|s| s.name == name).map(|s| s.value)
    }

    #[test]
    fn envoy_names_and_values() {
        let s = sample();
        assert_eq!(value(&s, "http.egress_http.downstream_rq_2xx"), Some(2));
        assert_eq!(value(&s, "http.egress_http.downstream_rq_4xx"), Some(1));
        assert_eq!(value(&s, "http.egress_http.downstream_rq_5xx"), Some(0));
        assert_eq!(
            value(&s, "cluster.proxy_cluster.upstream_cx_total"),
            Some(1)
        );
        assert_eq!(
            value(
                &s,
                "cluster.proxy_cluster.outlier_detection.ejections_enforced_total"
            ),
            Some(0)
        );
        let names: Vec<_> = s.iter().map(|s| s.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "sorted as Envoy prints them");
        assert!(text(&s).contains("\nhttp.egress_http.downstream_rq_2xx: 2\n"));
        let json: serde_json::Value = serde_json::from_str(&json(&s)).unwrap();
        assert!(json["stats"].as_array().unwrap().contains(
            &serde_json::json!({"name": "cluster.proxy_cluster.upstream_cx_total", "value": 1})
        ));
    }

    #[test]
    fn prometheus_form_follows_envoy_tag_extraction() {
        let p = prometheus(&sample());
        assert!(
            p.contains("# TYPE envoy_http_downstream_rq_xx counter\n"),
            "{p}"
        );
        assert!(p.contains(
            "envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"egress_http\"} 2\n"
        ));
        assert!(
            p.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"proxy_cluster\"} 1\n")
        );
        assert!(p.contains(
            "envoy_cluster_outlier_detection_ejections_enforced_total{envoy_cluster_name=\"proxy_cluster\"} 0\n"
        ));
        assert!(
            p.contains("# TYPE envoy_cluster_upstream_cx_active gauge\n"),
            "{p}"
        );
        assert_eq!(p.matches("# TYPE envoy_http_downstream_rq_xx ").count(), 1);
    }

    #[test]
    fn breakers_envoy_counts_together_are_summed() {
        let m = Metrics::new().unwrap();
        let c = m.cluster("up");
        c.overflow_pending.inc();
        c.overflow_requests.inc_by(2);
        let s = stats(&m.gather(), &HashMap::new());
        assert_eq!(
            value(&s, "cluster.up.upstream_rq_pending_overflow"),
            Some(3)
        );
    }

    #[test]
    fn dns_stats_by_cluster_kind() {
        let m = Metrics::new().unwrap();
        m.cluster("films").dns.attempt.inc();
        let proxy = m.cluster("proxy_cluster");
        proxy.dns.attempt.inc_by(2);
        proxy.dns.success.inc();
        let caches = HashMap::from([
            ("proxy_cluster".to_owned(), "proxy_dns_cache".to_owned()),
            ("egress-proxy".to_owned(), "egress-proxy".to_owned()),
        ]);
        m.cluster("egress-proxy").dns.attempt.inc();
        let s = stats(&m.gather(), &caches);
        assert_eq!(value(&s, "cluster.films.update_attempt"), Some(1));
        assert_eq!(
            value(&s, "dns_cache.proxy_dns_cache.dns_query_attempt"),
            Some(2)
        );
        assert_eq!(
            value(&s, "dns_cache.proxy_dns_cache.dns_query_success"),
            Some(1)
        );
        assert_eq!(value(&s, "cluster.proxy_cluster.update_attempt"), None);
        let p = prometheus(&s);
        // As seed 000 queries it.
        assert!(
            p.contains("\nenvoy_dns_cache_proxy_dns_cache_dns_query_attempt 2\n"),
            "{p}"
        );
        assert!(p.contains("envoy_cluster_update_attempt{envoy_cluster_name=\"films\"} 1\n"));
        // A valid Prometheus name whatever the cache is called.
        assert!(
            p.contains("\nenvoy_dns_cache_egress_proxy_dns_query_attempt 1\n"),
            "{p}"
        );
    }
}
