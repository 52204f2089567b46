//! DNS resolution through configured resolvers: a DNS server of the test's
//! own on loopback (a kernel-picked port, never 53), never the host's
//! resolver. STRICT_DNS follows a service as it scales, search domains and
//! `ndots` apply, `respect_dns_ttl` refreshes at the records' TTL, the
//! forward proxy's cache resolves through a cluster's `dns_resolvers`, and
//! failures are counted as Envoy counts them.

mod common;

#[path = "common/dns.rs"]
mod dns;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use dns::DnsServer;

/// Two backends on one port at 127.0.0.2 and 127.0.0.3, as two pods of a
/// service answering on the same port.
async fn two_pods() -> (Backend, Backend, u16) {
    for _ in 0..20 {
        let a = Backend::named_at("a", "127.0.0.2:0".parse().unwrap())
            .await
            .unwrap();
        let port = a.port();
        if let Some(b) = Backend::named_at("b", SocketAddr::from(([127, 0, 0, 3], port))).await {
            return (a, b, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn routed(cluster: &str) -> String {
    one_route(&format!("{{cluster: {cluster}}}"), "")
}

fn stat(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_follows_a_service_as_it_scales() {
    let dns = DnsServer::start().await;
    let (a, b, port) = two_pods().await;
    dns.set("svc.weir.test.", &[A], 30);
    let cfg = format!(
        "{}dns:\n  resolvers: [\"{}\"]\n  search_domains: []\nclusters:\n  - name: svc\n    type: STRICT_DNS\n    dns_refresh_rate: 200ms\n    endpoints: [{{address: svc.weir.test, port: {port}}}]\n",
        routed("svc"),
        dns.addr
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("main").await;
    let c = client();
    for _ in 0..4 {
        let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "a");
    }
    // The service scales out: the second pod takes traffic within a refresh.
    dns.set("svc.weir.test.", &[A, B], 30);
    eventually("the new pod gets requests", Duration::from_secs(20), || {
        let c = c.clone();
        async move {
            let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
            r.status == 200 && r.body == "b"
        }
    })
    .await;
    let (_, text) = p.admin_get("/stats").await;
    assert_eq!(stat(&text, "cluster.svc.membership_total"), 2, "{text}");
    assert!(stat(&text, "cluster.svc.update_success") >= 2, "{text}");
    // The name disappears: the last endpoints stay, the failure is counted.
    dns.set("svc.weir.test.", &[], 0);
    eventually(
        "a failed refresh is counted",
        Duration::from_secs(20),
        || {
            let p = &p;
            async move {
                let (_, text) = p.admin_get("/stats").await;
                stat(&text, "cluster.svc.update_failure") >= 1
            }
        },
    )
    .await;
    let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 200, "previous endpoints keep serving");
    assert!(a.requests() > 0 && b.requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_domains_ndots_and_ttl() {
    let dns = DnsServer::start().await;
    let (_a, _b, port) = two_pods().await;
    // A short name below ndots goes through the search list, as a pod's
    // `reviews` becomes `reviews.<ns>.svc.cluster.local`.
    dns.set("reviews.ns1.svc.weir.test.", &[A], 1);
    let cfg = format!(
        "{}dns:\n  resolvers: [\"{}\"]\n  search_domains: [ns1.svc.weir.test]\n  ndots: 5\nclusters:\n  - name: reviews\n    type: STRICT_DNS\n    dns_refresh_rate: 1h\n    respect_dns_ttl: true\n    endpoints: [{{address: reviews, port: {port}}}]\n",
        routed("reviews"),
        dns.addr
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "a");
    // A refresh rate of an hour, a TTL of a second: the TTL decides.
    let first = dns.queries_for("reviews.ns1.svc.weir.test.");
    assert!(first >= 1);
    eventually(
        "resolved again when the TTL ran out",
        Duration::from_secs(20),
        || {
            let again = dns.queries_for("reviews.ns1.svc.weir.test.") > first;
            async move { again }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_proxy_resolves_through_the_clusters_resolvers() {
    let dns = DnsServer::start().await;
    let (_a, b, port) = two_pods().await;
    dns.set("app.weir.test.", &[B], 30);
    let cfg = format!(
        "{}clusters:\n  - name: egress\n    type: DYNAMIC_FORWARD_PROXY\n    dns_resolvers: [\"{}\"]\n    dns_cache: {{name: egress_cache}}\n",
        routed("egress"),
        dns.addr
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("main").await;
    let c = client();
    let host = format!("app.weir.test:{port}");
    let r = send(
        &c,
        req("GET", &format!("http://{l}/"), &[("host", &host)], ""),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "b");
    assert_eq!(b.requests(), 1);
    let missing = format!("missing.weir.test:{port}");
    let r = send(
        &c,
        req("GET", &format!("http://{l}/"), &[("host", &missing)], ""),
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "DNS resolution failure");
    let (_, text) = p.admin_get("/stats").await;
    assert_eq!(
        stat(&text, "dns_cache.egress_cache.dns_query_attempt"),
        2,
        "{text}"
    );
    assert_eq!(
        stat(&text, "dns_cache.egress_cache.dns_query_success"),
        1,
        "{text}"
    );
    assert_eq!(
        stat(&text, "dns_cache.egress_cache.dns_query_failure"),
        1,
        "{text}"
    );
}
