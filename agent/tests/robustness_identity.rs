//! Issue 10, item 2: identity no client can forge. A client that is not
//! enrolled sends `x-weir-*` headers to a bound listener whose cluster is an
//! enrolled pod's inbound side: nothing of it reaches the application, the
//! request is counted as `unknown`, and 1,000 forged names add no series.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use common::*;
use tokio::net::{TcpListener, TcpStream};
use weir::addr::OrigDst;
use weir::intercept::{AppConnector, Interceptor, PodIdentity};
use weir::proxy::metrics::Metrics;

/// The pod's application, reached at `target`.
struct App(SocketAddr);

impl AppConnector for App {
    fn connect_app(
        &self,
        _addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
        Box::pin(TcpStream::connect(self.0))
    }
}

fn pod(ns: &str, name: &str) -> PodIdentity {
    PodIdentity {
        namespace: ns.into(),
        name: name.into(),
        service_account: "default".into(),
        workload: "w".into(),
    }
}

/// Stands in for `pod`'s inbound listener (the eBPF side's sk_lookup).
async fn inbound(ic: &Interceptor, dst: SocketAddr, pod: PodIdentity, app: Arc<App>) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let ic = ic.clone();
    tokio::spawn(async move {
        while let Ok((s, peer)) = tcp.accept().await {
            let (ic, pod, app) = (ic.clone(), pod.clone(), app.clone());
            tokio::spawn(async move { ic.serve_inbound(s, dst, peer, pod, app).await });
        }
    });
    addr
}

/// Stands in for the eBPF redirect of `pod`'s outbound connections.
async fn outbound(ic: &Interceptor, orig_dst: SocketAddr, pod: PodIdentity) -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let ic = ic.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = tcp.accept().await {
            let (ic, pod) = (ic.clone(), pod.clone());
            tokio::spawn(async move {
                ic.serve_outbound(s, OrigDst(orig_dst), pod, None, None)
                    .await
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_are_stripped_and_counted_unknown() {
    let backend = Backend::named("reviews-app").await;
    let pod_b: SocketAddr = "10.9.0.7:9080".parse().unwrap();
    let ic = Interceptor::new(Arc::new(Metrics::new().unwrap())).unwrap();
    let rt = ic.runtime().clone();
    let b_inbound = inbound(
        &ic,
        pod_b,
        pod("bookinfo", "reviews-1"),
        Arc::new(App(backend.addr)),
    )
    .await;
    // A bound listener (reachable by anyone who can reach the node) and an
    // intercepted one, both routing to pod B's inbound side.
    let yaml = format!(
        "protocol_detection_timeout: 10s
listeners:
  - name: edge
    address: 127.0.0.1:0
    virtual_hosts:
      - {{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: reviews}}}}]}}
  - name: reviews
    address: {b_inbound}
    bind_to_port: false
    virtual_hosts:
      - {{name: all, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: reviews}}}}]}}
clusters:
{}",
        static_cluster("reviews", &[b_inbound.port()], "")
    );
    rt.apply(weir::config::parse_str(&yaml, "t.yaml").unwrap())
        .await
        .unwrap();
    let edge = rt.listeners().await[0].1;
    let admin = weir::proxy::admin::start("127.0.0.1:0".parse().unwrap(), rt.clone())
        .await
        .unwrap();
    let c = client();
    for i in 0..1000 {
        let forged = format!("victim-ns/victim-pod-{i}");
        let headers = [("x-weir-source", forged.as_str()), ("x-weir-other", "1")];
        let r = send(&c, req("GET", &format!("http://{edge}/"), &headers, "")).await;
        assert_eq!(r.status, 200);
        assert!(
            !r.headers
                .keys()
                .any(|k| k.as_str().starts_with("x-echo-x-weir-")),
            "an x-weir- header reached the application: {:?}",
            r.headers
        );
    }
    // An enrolled pod's outbound request still carries its identity, and a
    // header its application forged is replaced.
    let a_out = outbound(&ic, b_inbound, pod("shop", "web-1")).await;
    for _ in 0..3 {
        let headers = [("x-weir-source", "victim-ns/victim-pod")];
        let r = send(&c, req("GET", &format!("http://{a_out}/"), &headers, "")).await;
        assert_eq!(r.status, 200);
        assert!(!r.headers.contains_key("x-echo-x-weir-source"));
    }
    let metrics = get(&format!("http://{admin}/stats/prometheus")).await.1;
    assert!(!metrics.contains("victim"), "a forged name became a label");
    let inbound_requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weir_intercept_requests_total{") && l.contains("inbound"))
        .collect();
    let total = |src: &str| -> f64 {
        inbound_requests
            .iter()
            .filter(|l| l.contains(&format!("source_namespace=\"{src}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(total("unknown"), 1000.0, "{inbound_requests:#?}");
    assert_eq!(total("shop"), 3.0, "{inbound_requests:#?}");
    // Two identities only, whatever the 1,000 forged values said.
    let mut sources: Vec<&str> = inbound_requests
        .iter()
        .filter_map(|l| l.split("source_namespace=\"").nth(1)?.split('"').next())
        .collect();
    sources.sort_unstable();
    sources.dedup();
    assert_eq!(sources, ["shop", "unknown"], "{inbound_requests:#?}");
}
