//! Seed 002: weighted split between two versions, round robin over their replicas;
//! plus least-request and random balancing.

mod common;

use std::collections::HashMap;

use common::*;

async fn replicas(prefix: &str, n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Backend::named(&format!("{prefix}-{i}")).await);
    }
    v
}

fn ports(b: &[Backend]) -> Vec<u16> {
    b.iter().map(Backend::port).collect()
}

/// 1000 requests: v2 gets 20% within 5 points, and each version's 3
/// replicas share its traffic evenly (round robin). The split is random per
/// request, as Envoy's: v2's count is Binomial(1000, 0.2) (sd 12.6), so 5
/// points (4 sd) fail a correct split about once in 15,000 runs, while 4
/// points failed about once in 700; a 50/50 or 100/0 split still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_weighted_split_and_round_robin() {
    let v1 = replicas("v1", 3).await;
    let v2 = replicas("v2", 3).await;
    let cfg = format!(
        r#"listeners:
  - name: backend-envoy
    address: 127.0.0.1:0
    virtual_hosts:
      - name: backend
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            route:
              weighted_clusters:
                - {{name: backend_v1, weight: 80}}
                - {{name: backend_v2, weight: 20}}
clusters:
{}
{}"#,
        static_cluster("backend_v1", &ports(&v1), "    lb_policy: ROUND_ROBIN\n"),
        static_cluster("backend_v2", &ports(&v2), "    lb_policy: ROUND_ROBIN\n"),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("backend-envoy").await;
    let c = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..1000 {
        let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
        assert_eq!(r.status, 200);
        *counts.entry(r.body).or_default() += 1;
    }
    let total = |prefix: &str| {
        counts
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| *v)
            .sum::<usize>()
    };
    let (n1, n2) = (total("v1"), total("v2"));
    assert_eq!(n1 + n2, 1000);
    assert!(
        (150..=250).contains(&n2),
        "v2 share {n2}/1000 not within 20% +- 5 points"
    );
    for (prefix, n) in [("v1", n1), ("v2", n2)] {
        for i in 0..3 {
            let got = counts.get(&format!("{prefix}-{i}")).copied().unwrap_or(0);
            // round robin: every replica within one request of an even share
            let even = n / 3;
            assert!(
                got.abs_diff(even) <= 1,
                "{prefix}-{i}: {got} of {n}: {counts:?}"
            );
        }
    }
    assert_eq!(p.metric(r#"weir_cluster_upstream_requests_total{cluster="backend_v2",response_code_class="2xx"}"#).await, n2 as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_and_random_use_every_endpoint() {
    let lr = replicas("lr", 3).await;
    let rnd = replicas("rnd", 3).await;
    let cfg = format!(
        r#"listeners:
  - name: main
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - {{match: {{prefix: /lr}}, route: {{cluster: lr}}}}
          - {{match: {{prefix: /rnd}}, route: {{cluster: rnd}}}}
clusters:
{}
{}"#,
        static_cluster("lr", &ports(&lr), "    lb_policy: LEAST_REQUEST\n"),
        static_cluster("rnd", &ports(&rnd), "    lb_policy: RANDOM\n"),
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("main").await;
    let c = client();
    for path in ["lr", "rnd"] {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..300 {
            let r = send(&c, req("GET", &format!("http://{l}/{path}"), &[], "")).await;
            *counts.entry(r.body).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{path}: {counts:?}");
        assert!(counts.values().all(|n| *n >= 50), "{path}: {counts:?}");
    }
}
