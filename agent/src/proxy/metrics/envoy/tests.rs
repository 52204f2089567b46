//! Envoy's names and forms, from weir's families.

use super::super::Metrics;
use super::render::short;
use super::*;

fn sample() -> Vec<EnvoyStat> {
    let m = Metrics::new().unwrap();
    let l = m.listener("egress_http");
    l.response(200);
    l.response(204);
    l.response(404);
    let c = m.cluster("proxy_cluster");
    c.cx_total.inc();
    stats(&m.gather(), &Inputs::default())
}

fn value(stats: &[EnvoyStat], name: &str) -> Option<u64> {
    stats
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) => Some(v),
            Value::Histogram(_) => None,
        })
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
fn cluster_classes_are_listed_once_charged_as_envoy_creates_them() {
    let m = Metrics::new().unwrap();
    let c = m.cluster("proxy_cluster");
    c.response(200);
    c.retried_response(503);
    m.listener("egress_http");
    let s = stats(&m.gather(), &Inputs::default());
    assert_eq!(value(&s, "cluster.proxy_cluster.upstream_rq_2xx"), Some(1));
    assert_eq!(
        value(&s, "cluster.proxy_cluster.retry.upstream_rq_5xx"),
        Some(1)
    );
    for class in ["1xx", "3xx", "4xx", "5xx"] {
        let name = format!("cluster.proxy_cluster.upstream_rq_{class}");
        assert_eq!(value(&s, &name), None, "{name}");
    }
    for class in ["1xx", "2xx", "3xx", "4xx"] {
        let name = format!("cluster.proxy_cluster.retry.upstream_rq_{class}");
        assert_eq!(value(&s, &name), None, "{name}");
    }
    // A listener's classes are Envoy's declared stats: all five, at 0.
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        let name = format!("http.egress_http.downstream_rq_{class}");
        assert_eq!(value(&s, &name), Some(0), "{name}");
    }
    let p = prometheus(&s);
    assert_eq!(p.matches("envoy_cluster_upstream_rq_xx{").count(), 1, "{p}");
}

#[test]
fn breakers_envoy_counts_together_are_summed() {
    let m = Metrics::new().unwrap();
    let c = m.cluster("up");
    c.overflow_pending.inc();
    c.overflow_requests.inc_by(2);
    let s = stats(&m.gather(), &Inputs::default());
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
    let inputs = Inputs {
        dns_caches: caches,
        ..Inputs::default()
    };
    let s = stats(&m.gather(), &inputs);
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
        p.contains("\nenvoy_dns_cache_proxy_dns_cache_dns_query_attempt{} 2\n"),
        "{p}"
    );
    assert!(p.contains("envoy_cluster_update_attempt{envoy_cluster_name=\"films\"} 1\n"));
    // A valid Prometheus name whatever the cache is called.
    assert!(
        p.contains("\nenvoy_dns_cache_egress_proxy_dns_query_attempt{} 1\n"),
        "{p}"
    );
}

#[test]
fn dotted_names_are_cut_at_the_first_dot_as_envoy_does() {
    let m = Metrics::new().unwrap();
    let c = m.cluster("outbound|80||httpbin.org");
    c.response(503);
    c.retried_response(503);
    c.rq_sent.inc();
    let s = stats(&m.gather(), &Inputs::default());
    assert_eq!(
        value(&s, "cluster.outbound|80||httpbin.org.upstream_rq_503"),
        Some(1)
    );
    let p = prometheus(&s);
    for line in [
        "envoy_cluster_org_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"outbound|80||httpbin\"} 1\n",
        "envoy_cluster_org_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"outbound|80||httpbin\"} 1\n",
        "envoy_cluster_org_upstream_rq_total{envoy_cluster_name=\"outbound|80||httpbin\"} 1\n",
        "envoy_cluster_org_retry_upstream_rq_xx{envoy_response_code_class=\"5\",envoy_cluster_name=\"outbound|80||httpbin\"} 1\n",
    ] {
        assert!(p.contains(line), "{line} in:\n{p}");
    }
}

#[test]
fn tls_stats_by_listener_address_membership_and_order() {
    let m = Metrics::new().unwrap();
    let t = m.tls_listener("ingress");
    t.handshakes.inc();
    t.failure(super::super::HandshakeFailure::NotTls);
    t.failure(super::super::HandshakeFailure::PeerAlert);
    t.failure(super::super::HandshakeFailure::VerifyFailed);
    m.tls_listener("unknown_to_config").handshakes.inc();
    m.cluster("up").rq_duration.observe(0.003);
    let inputs = Inputs {
        listener_addresses: HashMap::from([(
            "ingress".to_owned(),
            "127.0.0.1:8443".parse().unwrap(),
        )]),
        membership: vec![("up".to_owned(), 3, 2)],
        ..Inputs::default()
    };
    let s = stats(&m.gather(), &inputs);
    assert_eq!(value(&s, "listener.127.0.0.1_8443.ssl.handshake"), Some(1));
    assert_eq!(
        value(&s, "listener.127.0.0.1_8443.ssl.connection_error"),
        Some(2)
    );
    assert_eq!(
        value(&s, "listener.127.0.0.1_8443.ssl.fail_verify_error"),
        Some(1)
    );
    assert!(!s.iter().any(|s| s.name.contains("unknown_to_config")));
    assert_eq!(value(&s, "cluster.up.membership_total"), Some(3));
    assert_eq!(value(&s, "cluster.up.membership_healthy"), Some(2));
    let p = prometheus(&s);
    assert!(
        p.contains("envoy_listener_ssl_handshake{envoy_listener_address=\"127.0.0.1_8443\"} 1\n")
    );
    assert!(
        p.contains(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"up\",le=\"0.5\"} 0\n"
        ),
        "{p}"
    );
    assert!(
        p.contains("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"up\",le=\"5\"} 1\n"),
        "{p}"
    );
    assert!(p.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"up\"} 1\n"));
    // Counters, then gauges, then histograms, as Envoy orders them.
    let at = |needle: &str| p.find(needle).unwrap_or_else(|| panic!("{needle} in {p}"));
    assert!(at(" counter\n") < at(" gauge\n"));
    assert!(at(" gauge\n") < at(" histogram\n"));
    assert!(p.rfind(" counter\n") < p.find(" gauge\n"));
    // Text: quantiles estimated within the bucket (3 ms lies in 1..5 ms).
    let t = text(&s);
    let line = t
        .lines()
        .find(|l| l.starts_with("cluster.up.upstream_rq_time: "))
        .unwrap();
    assert!(line.contains(" P50(nan,"), "{line}");
    assert!(line.ends_with(" P100(nan,5)"), "{line}");
}

#[test]
fn histogram_quantiles_interpolate_within_buckets() {
    let h = Histogram {
        buckets: vec![(1.0, 0), (5.0, 4), (10.0, 4)],
        sum_ms: 12.0,
        count: 4,
    };
    assert_eq!(h.quantile(0.5), 3.0);
    assert_eq!(h.quantile(1.0), 5.0);
    let over = Histogram {
        buckets: vec![(1.0, 1)],
        sum_ms: 100.0,
        count: 2,
    };
    assert_eq!(over.quantile(1.0), 1.0, "above the last bound: that bound");
    assert_eq!(short(4.0), "4");
    assert_eq!(short(3.05), "3.05");
}
