//! Interception without eBPF: the interception API takes a plain TcpStream,
//! so a loopback accept loop stands in for the per-pod listeners and the
//! original destination is passed explicitly. Everything on 127.0.0.1.

mod common;
#[path = "common/upgrade.rs"]
mod upgrade;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir::addr::OrigDst;
use weir::intercept::{AppConnector, Interceptor, PodIdentity, RequestShare};
use weir::proxy::metrics::Metrics;
use weir::proxy::{Egress, MakingSocket, SocketMaker};

struct Harness {
    rt: Arc<weir::proxy::runtime::Runtime>,
    ic: Interceptor,
    admin: SocketAddr,
}

/// The clients here always speak first; a descheduled client on a loaded
/// machine must not be taken for a server-first protocol by the default
/// 100 ms detection timeout. A config that sets its own timeout keeps it.
fn patient(yaml: &str) -> String {
    if yaml.contains("protocol_detection_timeout:") {
        yaml.to_owned()
    } else {
        format!("protocol_detection_timeout: 10s\n{yaml}")
    }
}

impl Harness {
    async fn new(yaml: &str) -> Harness {
        let cfg = weir::config::parse_str(&patient(yaml), "test.yaml").expect("config");
        let ic = Interceptor::new(Arc::new(Metrics::new().unwrap())).unwrap();
        let rt = ic.runtime().clone();
        rt.apply(cfg).await.expect("apply");
        let admin = weir::proxy::admin::start("127.0.0.1:0".parse().unwrap(), rt.clone())
            .await
            .unwrap();
        Harness { rt, ic, admin }
    }

    async fn reload(&self, yaml: &str) {
        let cfg = weir::config::parse_str(&patient(yaml), "test.yaml").expect("config");
        self.rt.apply(cfg).await.expect("apply");
    }

    /// Stands in for the eBPF redirect of `pod`'s outbound connections to `orig_dst`.
    async fn outbound(&self, orig_dst: SocketAddr, pod: PodIdentity) -> SocketAddr {
        self.outbound_within(orig_dst, pod, None).await
    }

    /// [`Harness::outbound`], the pod's requests within `share`.
    async fn outbound_within(
        &self,
        orig_dst: SocketAddr,
        pod: PodIdentity,
        share: Option<Arc<dyn RequestShare>>,
    ) -> SocketAddr {
        self.outbound_from(orig_dst, pod, share, None).await
    }

    /// [`Harness::outbound_within`], the pod's upstream connections made
    /// from `egress` (the pod's network namespace, in the agent).
    async fn outbound_from(
        &self,
        orig_dst: SocketAddr,
        pod: PodIdentity,
        share: Option<Arc<dyn RequestShare>>,
        egress: Option<Egress>,
    ) -> SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let ic = self.ic.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = tcp.accept().await {
                let (ic, pod, share) = (ic.clone(), pod.clone(), share.clone());
                let egress = egress.clone();
                tokio::spawn(async move {
                    ic.serve_outbound(s, OrigDst(orig_dst), pod, share, egress)
                        .await
                });
            }
        });
        addr
    }

    /// Stands in for pod `pod`'s inbound listener: connections "to `dst`".
    async fn inbound(
        &self,
        dst: SocketAddr,
        pod: PodIdentity,
        app: Arc<dyn AppConnector>,
    ) -> SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let ic = self.ic.clone();
        tokio::spawn(async move {
            while let Ok((s, peer)) = tcp.accept().await {
                let (ic, pod, app) = (ic.clone(), pod.clone(), app.clone());
                tokio::spawn(async move { ic.serve_inbound(s, dst, peer, pod, app).await });
            }
        });
        addr
    }

    async fn metrics(&self) -> String {
        get(&format!("http://{}/stats/prometheus", self.admin))
            .await
            .1
    }

    async fn metric(&self, series: &str) -> f64 {
        mv(&self.metrics().await, series)
    }
}

/// The sum of the series of `series`' family that carry all of its labels,
/// in any order (the exposition sorts them, and the families carry Istio's
/// labels beside the ones a test names).
fn mv(text: &str, series: &str) -> f64 {
    let Some((name, labels)) = series.split_once('{') else {
        return metric_value(text, series);
    };
    let wanted: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| l.rsplit_once("} "))
        .filter(|(have, _)| {
            let have: Vec<&str> = have.split(',').collect();
            wanted.iter().all(|w| have.contains(w))
        })
        .map(|(_, v)| v.trim().parse::<f64>().unwrap_or(0.0))
        .sum()
}

fn pod(ns: &str, name: &str) -> PodIdentity {
    PodIdentity {
        namespace: ns.into(),
        name: name.into(),
        service_account: "default".into(),
        workload: "w".into(),
    }
}

/// The application of a pod, reached at `target` whatever `dst` the
/// interceptor asks for (asserted); counts connections.
struct TestApp {
    expect_dst: SocketAddr,
    target: SocketAddr,
    connects: AtomicUsize,
}

impl AppConnector for TestApp {
    fn connect_app(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
        assert_eq!(addr, self.expect_dst);
        self.connects.fetch_add(1, Ordering::SeqCst);
        Box::pin(TcpStream::connect(self.target))
    }
}

/// A TCP echo server: echoes until EOF, then closes its write side.
async fn echo_server() -> SocketAddr {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

const DUMMY_LISTENER: &str = "
listeners:
  - name: unused
    address: 127.0.0.1:0
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";

const OUT: &str = "direction=\"outbound\",source_namespace=\"shop\",source_pod=\"web-1\"";
const UNKNOWN_DST: &str = "destination_namespace=\"unknown\",destination_pod=\"unknown\"";

/// HTTP to an original destination claimed by a `bind_to_port: false`
/// listener goes through its routes: an 80/20 split over 1000 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_routed_by_original_destination() {
    let v1 = Backend::named("v1").await;
    let v2 = Backend::named("v2").await;
    let cfg = format!(
        "listeners:
  - name: reviews
    address: {}
    bind_to_port: false
    virtual_hosts:
      - name: reviews
        domains: [\"*\"]
        routes:
          - match: {{prefix: /}}
            route:
              weighted_clusters:
                - {{name: reviews_v1, weight: 80}}
                - {{name: reviews_v2, weight: 20}}
clusters:
{}
{}",
        v1.addr,
        static_cluster("reviews_v1", &[v1.port()], ""),
        static_cluster("reviews_v2", &[v2.port()], ""),
    );
    let h = Harness::new(&cfg).await;
    // not bound: nothing listens for it but the interception
    assert!(h.rt.listeners().await.is_empty());
    let entry = h.outbound(v1.addr, pod("shop", "web-1")).await;
    let c = client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..1000 {
        // the application cannot claim another identity
        let r = send(
            &c,
            req(
                "GET",
                &format!("http://{entry}/r/{i}"),
                &[("x-weir-source", "evil/pod")],
                "",
            ),
        )
        .await;
        assert_eq!(r.status, 200);
        // a token only this process can read, naming the enrolled pod
        let token = &r.headers["x-echo-x-weir-source"];
        assert_eq!(h.ic.source_of(token), Some(pod("shop", "web-1")));
        *counts.entry(r.body).or_default() += 1;
    }
    let n2 = counts.get("v2").copied().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 1000);
    assert!((150..=250).contains(&n2), "v2 got {n2}/1000");
    let text = h.metrics().await;
    let series = format!(
        "weir_intercept_requests_total{{{OUT},destination=\"reviews\",{UNKNOWN_DST},response_code_class=\"2xx\"}}"
    );
    assert_eq!(mv(&text, &series), 1000.0, "{text}");
    // every connection the client opened was detected as HTTP/1 and counted with its identity
    let detected = mv(
        &text,
        "weir_intercept_protocol_detected_total{direction=\"outbound\",protocol=\"http1\"}",
    );
    let opened = mv(
        &text,
        &format!(
            "weir_intercept_tcp_connections_opened_total{{{OUT},destination=\"reviews\",{UNKNOWN_DST}}}"
        ),
    );
    assert!(detected >= 1.0 && detected == opened, "{detected} {opened}");
    // the listener's own engine metrics count it too
    assert_eq!(
        mv(
            &text,
            "weir_http_downstream_requests_total{listener=\"reviews\",response_code_class=\"2xx\"}"
        ),
        1000.0
    );
}

/// At most `max` requests in flight, as enrolment's budget counts them.
struct InFlight {
    max: usize,
    now: Arc<AtomicUsize>,
    shed: Option<tokio::sync::watch::Receiver<u64>>,
}

struct InFlightPlace(Arc<AtomicUsize>);

impl Drop for InFlightPlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RequestShare for InFlight {
    fn admit(&self) -> Result<Box<dyn Send + Sync>, &'static str> {
        if self.now.fetch_add(1, Ordering::SeqCst) < self.max {
            Ok(Box::new(InFlightPlace(self.now.clone())))
        } else {
            self.now.fetch_sub(1, Ordering::SeqCst);
            Err("pod_requests")
        }
    }

    fn shed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.shed.clone()
    }
}

/// A pod's share of requests in flight: beyond it a request gets Envoy's
/// overload 503 at once, naming the reason, counted against the pod; the
/// places come back with the responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_pods_share_get_an_overload_503() {
    let gate = Gate::closed();
    let slow = gate.backend("slow").await;
    let cfg = format!(
        "listeners:
  - name: svc
    address: {}
    bind_to_port: false
    virtual_hosts: [{{name: v, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: slow}}}}]}}]
clusters:
{}",
        slow.addr,
        static_cluster("slow", &[slow.port()], ""),
    );
    let h = Harness::new(&cfg).await;
    let now = Arc::new(AtomicUsize::new(0));
    let share = Arc::new(InFlight {
        max: 2,
        now: now.clone(),
        shed: None,
    });
    let entry = h
        .outbound_within(slow.addr, pod("shop", "greedy"), Some(share))
        .await;
    let held: Vec<_> = (0..2)
        .map(|i| {
            let uri = format!("http://{entry}/held/{i}");
            tokio::spawn(async move { get(&uri).await })
        })
        .collect();
    eventually("two requests in flight", Duration::from_secs(10), || {
        let now = now.clone();
        async move { now.load(Ordering::SeqCst) == 2 }
    })
    .await;
    let refused = send(
        &client(),
        req("GET", &format!("http://{entry}/third"), &[], ""),
    )
    .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["x-envoy-overloaded"], "true");
    assert_eq!(refused.headers["x-weir-overload-reason"], "pod_requests");
    assert_eq!(
        slow.requests(),
        2,
        "the refused request never reached the backend"
    );
    let counted = "weir_intercept_requests_refused_total{direction=\"outbound\",namespace=\"shop\",pod=\"greedy\",reason=\"pod_requests\"}";
    assert_eq!(h.metric(counted).await, 1.0);

    gate.open();
    for r in held {
        assert_eq!(r.await.unwrap(), (200, "slow".to_owned()));
    }
    assert_eq!(now.load(Ordering::SeqCst), 0, "places given back");
    assert_eq!(get(&format!("http://{entry}/after")).await.0, 200);
}

/// A shed (the pod over its share near the node's cap) closes the pod's
/// connections idle for a second, HTTP and opaque alike, and not one with
/// a request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_closes_the_pods_idle_connections_only() {
    let fast = Backend::named("fast").await;
    let gate = Gate::closed();
    let slow = gate.backend("slow").await;
    let echo = echo_server().await;
    let route = |name: &str, addr: SocketAddr| {
        format!(
            "  - name: {name}
    address: {addr}
    bind_to_port: false
    virtual_hosts: [{{name: v, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: {name}}}}}]}}]
"
        )
    };
    let cfg = format!(
        "listeners:\n{}{}clusters:\n{}\n{}",
        route("fast", fast.addr),
        route("slow", slow.addr),
        static_cluster("fast", &[fast.port()], ""),
        static_cluster("slow", &[slow.port()], ""),
    );
    let h = Harness::new(&cfg).await;
    let (asks, shed) = tokio::sync::watch::channel(0u64);
    let share: Arc<dyn RequestShare> = Arc::new(InFlight {
        max: 100,
        now: Arc::new(AtomicUsize::new(0)),
        shed: Some(shed),
    });
    let entry = |dst| h.outbound_within(dst, pod("shop", "heavy"), Some(share.clone()));
    let (to_fast, to_slow, to_echo) = (
        entry(fast.addr).await,
        entry(slow.addr).await,
        entry(echo).await,
    );

    let mut idle_http = TcpStream::connect(to_fast).await.unwrap();
    idle_http
        .write_all(b"GET / HTTP/1.1\r\nhost: fast\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = idle_http.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let mut idle_tcp = TcpStream::connect(to_echo).await.unwrap();
    idle_tcp.write_all(b"\x00hi").await.unwrap();
    idle_tcp.read_exact(&mut [0u8; 3]).await.unwrap();
    let in_flight = tokio::spawn(async move { get(&format!("http://{to_slow}/held")).await });
    eventually(
        "the slow request in flight",
        Duration::from_secs(10),
        || async { slow.requests() == 1 },
    )
    .await;

    // Idle for longer than a shed asks for, then the shed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    asks.send_modify(|generation| *generation += 1);
    for (what, conn) in [("HTTP", &mut idle_http), ("opaque", &mut idle_tcp)] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest));
        let closed = read.await.map(|r| r.unwrap_or(0));
        assert_eq!(
            closed.ok(),
            Some(0),
            "the idle {what} connection was not shed"
        );
    }
    gate.open();
    assert_eq!(in_flight.await.unwrap(), (200, "slow".to_owned()));
}

/// Unmatched HTTP: passed through under ALLOW_ANY (counted per request),
/// 502 under REGISTRY_ONLY; the policy follows a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_unmatched_allow_any_then_registry_only() {
    let b = Backend::named("external").await;
    let h = Harness::new(DUMMY_LISTENER).await;
    let entry = h.outbound(b.addr, pod("shop", "web-1")).await;
    for _ in 0..3 {
        let r = send(&client(), req("GET", &format!("http://{entry}/"), &[], "")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "external"));
    }
    let dst = format!("destination=\"{}\"", b.addr);
    let ok = format!(
        "weir_intercept_requests_total{{{OUT},{dst},{UNKNOWN_DST},response_code_class=\"2xx\"}}"
    );
    assert_eq!(h.metric(&ok).await, 3.0);
    assert_eq!(b.requests(), 3);

    h.reload(&format!(
        "outbound_traffic_policy: REGISTRY_ONLY\n{DUMMY_LISTENER}"
    ))
    .await;
    let r = send(&client(), req("GET", &format!("http://{entry}/"), &[], "")).await;
    assert_eq!(r.status, 502);
    assert_eq!(b.requests(), 3, "nothing reached the destination");
    let bad = format!(
        "weir_intercept_requests_total{{{OUT},{dst},{UNKNOWN_DST},response_code_class=\"5xx\"}}"
    );
    assert_eq!(h.metric(&bad).await, 1.0);

    // other protocols are closed
    let echo = echo_server().await;
    let entry = h.outbound(echo, pod("shop", "web-1")).await;
    assert_opaque_closed(entry).await;
    let denied = format!(
        "weir_intercept_tcp_connections_denied_total{{{OUT},destination=\"{echo}\",{UNKNOWN_DST}}}"
    );
    assert_eq!(h.metric(&denied).await, 1.0);
}

/// Opaque TCP: 1 MiB of random bytes echoed byte for byte, half-close passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_opaque_tcp_echo_1mib() {
    let echo = echo_server().await;
    let h = Harness::new(DUMMY_LISTENER).await;
    let entry = h.outbound(echo, pod("shop", "web-1")).await;
    let mut data: Vec<u8> = (0..1 << 20).map(|_| fastrand::u8(..)).collect();
    data[0] = 0; // not a method nor a TLS record: opaque at once
    let s = TcpStream::connect(entry).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let out = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&out).await.unwrap();
        w.shutdown().await.unwrap(); // half-close: the echo server sees EOF
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut back))
        .await
        .expect("echo finished")
        .unwrap();
    writer.await.unwrap();
    assert!(back == data, "echo differs");
    let ids = format!("{OUT},destination=\"{echo}\",{UNKNOWN_DST}");
    eventually("connection closed", Duration::from_secs(5), || async {
        h.metric(&format!(
            "weir_intercept_tcp_connections_closed_total{{{ids}}}"
        ))
        .await
            == 1.0
    })
    .await;
    let text = h.metrics().await;
    let v = |name: &str| mv(&text, &format!("{name}{{{ids}}}"));
    assert_eq!(v("weir_intercept_tcp_connections_opened_total"), 1.0);
    assert_eq!(
        v("weir_intercept_tcp_received_bytes_total"),
        (1 << 20) as f64
    );
    assert_eq!(v("weir_intercept_tcp_sent_bytes_total"), (1 << 20) as f64);
    assert_eq!(
        mv(
            &text,
            "weir_intercept_protocol_detected_total{direction=\"outbound\",protocol=\"opaque\"}"
        ),
        1.0
    );
}

/// `protocol_detection_timeout` reaches detection: a client silent for
/// longer than the 100 ms default is still taken as HTTP and routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_detected_within_the_configured_timeout() {
    let backend = Backend::named("routed").await;
    let h = Harness::new(&format!(
        "protocol_detection_timeout: 5s
listeners:
  - name: svc
    address: {}
    bind_to_port: false
    virtual_hosts: [{{name: v, domains: [\"*\"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200, body: routed}}}}]}}]
",
        backend.addr
    ))
    .await;
    let entry = h.outbound(backend.addr, pod("shop", "web-1")).await;
    let mut s = TcpStream::connect(entry).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("routed"), "{answer}");
    assert_eq!(
        backend.requests(),
        0,
        "routed by the listener, not passed through"
    );
}

/// A client silent past detection towards a destination an HTTP listener
/// claims is served as HTTP: closed at the listener's request-headers
/// deadline if it stays silent (the destination never sees it), routed if
/// its request comes late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_towards_an_http_listener_ends_at_the_request_headers_deadline() {
    let destination = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = destination.local_addr().unwrap();
    let h = Harness::new(&format!(
        "protocol_detection_timeout: 100ms
listeners:
  - name: svc
    address: {addr}
    bind_to_port: false
    timeouts: {{request_headers: 1s}}
    virtual_hosts: [{{name: v, domains: [\"*\"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200, body: routed}}}}]}}]
"
    ))
    .await;
    let entry = h.outbound(addr, pod("shop", "web-1")).await;

    let opened = std::time::Instant::now();
    let mut silent = TcpStream::connect(entry).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
        .await
        .expect("closed within the deadline")
        .unwrap_or(0);
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );

    let mut late = TcpStream::connect(entry).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    late.write_all(b"GET / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), late.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.ends_with("routed"), "{answer}");
    let reached = tokio::time::timeout(Duration::from_millis(200), destination.accept()).await;
    assert!(
        reached.is_err(),
        "a connection was spliced to the destination"
    );
}

/// `opaque_idle_timeout` closes a spliced connection that moves no byte
/// either way, on both sides, while one that keeps talking stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_opaque_splice_is_closed_on_both_sides() {
    let destination = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = destination.local_addr().unwrap();
    let h = Harness::new(&format!("opaque_idle_timeout: 1s\n{DUMMY_LISTENER}")).await;
    let entry = h.outbound(addr, pod("shop", "web-1")).await;

    let mut client = TcpStream::connect(entry).await.unwrap();
    client.write_all(b"\x00hello").await.unwrap();
    let (mut upstream, _) = destination.accept().await.unwrap();
    let mut hello = [0u8; 6];
    upstream.read_exact(&mut hello).await.unwrap();
    let spliced = std::time::Instant::now();
    // Talk past the timeout: a byte every 300 ms for 1.5 s keeps it open.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        upstream.write_all(b"x").await.unwrap();
        client.read_exact(&mut [0u8; 1]).await.unwrap();
    }
    for side in [&mut client, &mut upstream] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), side.read_to_end(&mut rest));
        let n = read.await.expect("closed by the idle timeout").unwrap_or(0);
        assert_eq!(n, 0);
    }
    let open_for = spliced.elapsed();
    assert!(
        open_for >= Duration::from_millis(2400),
        "closed {open_for:?} after the splice began, before a second of silence"
    );
}

/// A server-first protocol (SMTP-like): the client says nothing until greeted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_server_first_protocol() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = tcp.accept().await.unwrap();
        s.write_all(b"220 ready\r\n").await.unwrap();
        let mut line = [0u8; 6];
        s.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"QUIT\r\n");
        s.write_all(b"221 bye\r\n").await.unwrap();
    });
    // The timeout is what lets the server speak first.
    let h = Harness::new(&format!(
        "protocol_detection_timeout: 100ms\n{DUMMY_LISTENER}"
    ))
    .await;
    let entry = h.outbound(server, pod("shop", "web-1")).await;
    let mut s = TcpStream::connect(entry).await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut greeting))
        .await
        .expect("greeting")
        .unwrap();
    assert_eq!(&greeting, b"220 ready\r\n");
    s.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"221 bye\r\n");
}

/// Opaque bytes through `entry` get no answer: the connection is closed.
async fn assert_opaque_closed(entry: SocketAddr) {
    let mut s = TcpStream::connect(entry).await.unwrap();
    s.write_all(b"\x00hello").await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// A TLS server for `names` (signed by a fresh test CA) that answers
/// "ping" with "pong", and a connector that trusts only that CA.
async fn tls_ping_server(names: &[&str]) -> (SocketAddr, tokio_rustls::TlsConnector) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();

    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = tcp.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = tcp.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = acceptor.accept(s).await.unwrap();
                let mut buf = [0u8; 4];
                tls.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"ping");
                tls.write_all(b"pong").await.unwrap();
                tls.shutdown().await.unwrap();
            });
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client_cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        server,
        tokio_rustls::TlsConnector::from(Arc::new(client_cfg)),
    )
}

/// A TLS client asking for `sni` through `entry`: Ok when its "ping" got "pong".
async fn tls_ping(
    entry: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    sni: &str,
) -> Result<(), String> {
    let tcp = TcpStream::connect(entry).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake ends in time")
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    assert_eq!(&buf, b"pong");
    Ok(())
}

/// TLS is passed through untouched (the client verifies the server's
/// certificate against the test CA) and counted by SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_tls_passthrough_counted_by_sni() {
    let (server, connector) = tls_ping_server(&["secure.example"]).await;
    let h = Harness::new(DUMMY_LISTENER).await;
    let entry = h.outbound(server, pod("shop", "web-1")).await;
    tls_ping(entry, &connector, "secure.example")
        .await
        .expect("certificate verifies against the test CA");

    let text = h.metrics().await;
    let series = format!(
        "weir_intercept_tls_connections_total{{{OUT},destination=\"{server}\",{UNKNOWN_DST},sni=\"secure.example\"}}"
    );
    assert_eq!(mv(&text, &series), 1.0, "{text}");
    assert_eq!(
        mv(
            &text,
            "weir_intercept_protocol_detected_total{direction=\"outbound\",protocol=\"tls\"}"
        ),
        1.0
    );
}

/// A `bind_to_port: false` listener with `server_names` (Istio's per-SNI
/// filter chains of a ServiceEntry's HTTPS port) takes TLS for those names
/// only; under REGISTRY_ONLY other names and plain text to the same
/// destination are refused, under ALLOW_ANY they pass through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_tls_claimed_by_server_names() {
    let (server, connector) = tls_ping_server(&["api.example.com", "evil.example.org"]).await;
    let config = |policy: &str| {
        format!(
            "outbound_traffic_policy: {policy}
listeners:
  - name: external-api
    address: {server}
    bind_to_port: false
    server_names: [\"*.example.com\"]
    virtual_hosts: [{{name: v, domains: [\"*\"], routes: []}}]
"
        )
    };
    let h = Harness::new(&config("REGISTRY_ONLY")).await;
    let entry = h.outbound(server, pod("shop", "web-1")).await;
    tls_ping(entry, &connector, "api.example.com")
        .await
        .expect("a listed name passes");
    let refused = tls_ping(entry, &connector, "evil.example.org").await;
    assert!(refused.is_err(), "an unlisted name is closed: {refused:?}");
    let text = h.metrics().await;
    let ids = |dst: &str| format!("{OUT},destination=\"{dst}\",{UNKNOWN_DST}");
    let tls = |dst: &str, sni: &str| {
        mv(
            &text,
            &format!(
                "weir_intercept_tls_connections_total{{{},sni=\"{sni}\"}}",
                ids(dst)
            ),
        )
    };
    assert_eq!(tls("external-api", "api.example.com"), 1.0, "{text}");
    assert_eq!(tls(&server.to_string(), "evil.example.org"), 1.0, "{text}");
    let denied = |text: &str, dst: &str| {
        mv(
            text,
            &format!(
                "weir_intercept_tcp_connections_denied_total{{{}}}",
                ids(dst)
            ),
        )
    };
    assert_eq!(denied(&text, &server.to_string()), 1.0, "{text}");
    assert_eq!(denied(&text, "external-api"), 0.0, "{text}");

    // Not TLS at all: not the listener's either; plain HTTP gets the black hole.
    assert_opaque_closed(entry).await;
    assert_eq!(denied(&h.metrics().await, &server.to_string()), 2.0);
    let r = send(&client(), req("GET", &format!("http://{entry}/"), &[], "")).await;
    assert_eq!(r.status, 502);

    h.reload(&config("ALLOW_ANY")).await;
    tls_ping(entry, &connector, "evil.example.org")
        .await
        .expect("ALLOW_ANY passes an unlisted name through");
}

/// HTTP whose Host no virtual host of the claiming listener serves gets
/// Istio's catch-all: passed through to the original destination under
/// ALLOW_ANY (`allow_any`), 502 under REGISTRY_ONLY (`block_all`), where
/// Envoy alone would answer 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_unserved_host_follows_the_policy() {
    let original = Backend::named("original").await;
    let routed = Backend::named("routed").await;
    let config = |policy: &str| {
        format!(
            "outbound_traffic_policy: {policy}
listeners:
  - name: registry
    address: {}
    bind_to_port: false
    virtual_hosts:
      - name: registered
        domains: [registered.example]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: registered}}
clusters:
{}",
            original.addr,
            static_cluster("registered", &[routed.port()], ""),
        )
    };
    let h = Harness::new(&config("ALLOW_ANY")).await;
    let entry = h.outbound(original.addr, pod("shop", "web-1")).await;
    // A new connection each time: the policy in force is read per connection.
    let get = |host: &'static str| async move {
        send(
            &client(),
            req("GET", &format!("http://{entry}/"), &[("host", host)], ""),
        )
        .await
    };
    let r = get("registered.example").await;
    assert_eq!((r.status, r.body.as_str()), (200, "routed"));
    let r = get("unregistered.example").await;
    assert_eq!((r.status, r.body.as_str()), (200, "original"));
    assert_eq!(original.requests(), 1);
    let text = h.metrics().await;
    let passthrough = "weir_cluster_upstream_requests_total{cluster=\"PassthroughCluster\",response_code_class=\"2xx\"}";
    assert_eq!(mv(&text, passthrough), 1.0, "{text}");
    let listener_2xx =
        "weir_http_downstream_requests_total{listener=\"registry\",response_code_class=\"2xx\"}";
    assert_eq!(mv(&text, listener_2xx), 2.0, "{text}");

    h.reload(&config("REGISTRY_ONLY")).await;
    let r = get("unregistered.example").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        original.requests(),
        1,
        "nothing more reached the destination"
    );
    let r = get("registered.example").await;
    assert_eq!((r.status, r.body.as_str()), (200, "routed"));
    let by_pod = format!(
        "weir_intercept_requests_total{{{OUT},destination=\"registry\",{UNKNOWN_DST},response_code_class=\"5xx\"}}"
    );
    assert_eq!(h.metric(&by_pod).await, 1.0);
}

/// WebSocket through interception works as through Istio's sidecars, which
/// allow the upgrade on every port: outbound on a claiming listener and on
/// the passthrough route, and inbound to the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_both_ways() {
    let server = upgrade::UpgradeServer::start().await;
    let claimed = format!(
        "listeners:
  - name: chat
    address: {}
    bind_to_port: false
    virtual_hosts:
      - name: chat
        domains: [chat.local]
        routes: [{{match: {{prefix: /}}, route: {{cluster: chat}}}}]
clusters:
{}",
        server.addr,
        static_cluster("chat", &[server.addr.port()], ""),
    );
    let h = Harness::new(&claimed).await;
    let entry = h.outbound(server.addr, pod("shop", "web-1")).await;
    // Routed by the claiming listener, then the passthrough for another Host.
    for host in ["chat.local", "elsewhere.local"] {
        let up = upgrade::upgrade_and_echo(entry, host).await;
        assert!(up.head.starts_with("HTTP/1.1 101"), "{host}: {}", up.head);
        assert_eq!(
            up.echoed,
            Some((upgrade::TUNNEL_MESSAGE.to_vec(), true)),
            "{host}"
        );
    }
    let dst: SocketAddr = "10.1.2.3:9080".parse().unwrap();
    let app = Arc::new(TestApp {
        expect_dst: dst,
        target: server.addr,
        connects: AtomicUsize::new(0),
    });
    let entry = h.inbound(dst, pod("chat", "chat-1"), app.clone()).await;
    let up = upgrade::upgrade_and_echo(entry, "chat.local").await;
    assert!(up.head.starts_with("HTTP/1.1 101"), "{}", up.head);
    assert_eq!(up.echoed, Some((upgrade::TUNNEL_MESSAGE.to_vec(), true)));
    assert_eq!(server.upgrades.load(Ordering::SeqCst), 3);
    let inbound_1xx = format!(
        "weir_intercept_requests_total{{direction=\"inbound\",source_namespace=\"unknown\",source_pod=\"unknown\",destination=\"{dst}\",destination_namespace=\"chat\",destination_pod=\"chat-1\",response_code_class=\"1xx\"}}"
    );
    assert_eq!(h.metric(&inbound_1xx).await, 1.0);
}

/// Inbound HTTP to the application through the AppConnector: one kept-alive
/// application connection for the downstream connection's requests; a
/// forged `x-weir-source` from a non-weir peer is stripped and not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_http_and_tcp_via_app_connector() {
    let backend = Backend::named("app").await;
    let h = Harness::new(DUMMY_LISTENER).await;
    let dst: SocketAddr = "10.1.2.3:9080".parse().unwrap();
    let app = Arc::new(TestApp {
        expect_dst: dst,
        target: backend.addr,
        connects: AtomicUsize::new(0),
    });
    let entry = h
        .inbound(dst, pod("bookinfo", "reviews-1"), app.clone())
        .await;
    // one downstream connection, five requests on it
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(entry).await.unwrap());
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        tx.ready().await.unwrap();
        let r = tx
            .send_request(req(
                "GET",
                "/x",
                &[("host", "reviews"), ("x-weir-source", "evil/pod")],
                "",
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("x-echo-x-weir-source").is_none(),
            "header reached the app"
        );
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"app");
    }
    assert_eq!(
        app.connects.load(Ordering::SeqCst),
        1,
        "app connection kept alive"
    );
    assert_eq!(backend.connections(), 1);
    let series = format!(
        "weir_intercept_requests_total{{direction=\"inbound\",source_namespace=\"unknown\",source_pod=\"unknown\",destination=\"{dst}\",destination_namespace=\"bookinfo\",destination_pod=\"reviews-1\",response_code_class=\"2xx\"}}"
    );
    assert_eq!(h.metric(&series).await, 5.0);

    // non-HTTP: spliced to the application
    let echo = echo_server().await;
    let tcp_app = Arc::new(TestApp {
        expect_dst: dst,
        target: echo,
        connects: AtomicUsize::new(0),
    });
    let entry = h.inbound(dst, pod("bookinfo", "db-0"), tcp_app).await;
    let mut s = TcpStream::connect(entry).await.unwrap();
    s.write_all(b"\x00\x01binary").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"\x00\x01binary");
    assert_eq!(
        h.metric(
            "weir_intercept_protocol_detected_total{direction=\"inbound\",protocol=\"opaque\"}"
        )
        .await,
        1.0
    );
}

/// Pod A -> weir outbound -> (pod B's address) -> weir inbound -> B's app:
/// the inbound side knows A, for HTTP (trusted header from weir's own
/// upstream socket, stripped before the app) and for opaque TCP (peers map).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_flows_from_outbound_to_inbound() {
    let backend = Backend::named("reviews-app").await;
    let echo = echo_server().await;
    let pod_b_http: SocketAddr = "10.9.0.7:9080".parse().unwrap();
    let pod_b_tcp: SocketAddr = "10.9.0.7:5432".parse().unwrap();
    let h0 = Harness::new(DUMMY_LISTENER).await;
    let b = pod("bookinfo", "reviews-1");
    let http_app = Arc::new(TestApp {
        expect_dst: pod_b_http,
        target: backend.addr,
        connects: AtomicUsize::new(0),
    });
    let tcp_app = Arc::new(TestApp {
        expect_dst: pod_b_tcp,
        target: echo,
        connects: AtomicUsize::new(0),
    });
    // "pod B's address" as the eBPF side would redirect it: the inbound entries
    let b_http = h0.inbound(pod_b_http, b.clone(), http_app).await;
    let b_tcp = h0.inbound(pod_b_tcp, b.clone(), tcp_app).await;
    // the same interceptor (one proxy per node) routes A's outbound to B
    h0.reload(&format!(
        "listeners:
  - name: reviews
    address: {b_http}
    bind_to_port: false
    virtual_hosts:
      - name: reviews
        domains: [\"*\"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: reviews}}
clusters:
{}",
        static_cluster("reviews", &[b_http.port()], "")
    ))
    .await;
    let a = pod("shop", "web-1");
    let out_http = h0.outbound(b_http, a.clone()).await;
    let c = client();
    for _ in 0..3 {
        let r = send(&c, req("GET", &format!("http://{out_http}/"), &[], "")).await;
        assert_eq!((r.status, r.body.as_str()), (200, "reviews-app"));
        assert!(
            r.headers.get("x-echo-x-weir-source").is_none(),
            "header reached the app"
        );
    }
    let inb = "destination_namespace=\"bookinfo\",destination_pod=\"reviews-1\"";
    let series = format!(
        "weir_intercept_requests_total{{direction=\"inbound\",source_namespace=\"shop\",source_pod=\"web-1\",destination=\"{pod_b_http}\",{inb},response_code_class=\"2xx\"}}"
    );
    assert_eq!(h0.metric(&series).await, 3.0, "{}", h0.metrics().await);

    let out_tcp = h0.outbound(b_tcp, a).await;
    let mut s = TcpStream::connect(out_tcp).await.unwrap();
    s.write_all(b"\x00sql").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"\x00sql");
    let series = format!(
        "weir_intercept_tcp_connections_opened_total{{direction=\"inbound\",source_namespace=\"shop\",source_pod=\"web-1\",destination=\"{pod_b_tcp}\",{inb}}}"
    );
    assert_eq!(h0.metric(&series).await, 1.0, "{}", h0.metrics().await);
}

/// A pod's sockets as the agent makes them inside its network namespace:
/// here, bound to a loopback address of its own (its "pod IP"), counted.
struct PodAddress {
    ip: std::net::IpAddr,
    made: Arc<AtomicUsize>,
}

impl SocketMaker for PodAddress {
    fn socket(&self, _remote: SocketAddr) -> MakingSocket<'_> {
        self.made.fetch_add(1, Ordering::SeqCst);
        let ip = self.ip;
        Box::pin(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            Ok(socket)
        })
    }
}

/// What an upstream saw: per request, the connection's peer and the
/// `x-weir-source` it carried.
type Seen = Arc<std::sync::Mutex<Vec<(SocketAddr, Option<http::HeaderValue>)>>>;

async fn recording_backend() -> (SocketAddr, Seen) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, peer)) = tcp.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let source = req.headers().get("x-weir-source").cloned();
                    record.lock().unwrap().push((peer, source));
                    async move { Ok::<_, std::convert::Infallible>(status(200, "ok")) }
                });
                let io = hyper_util::rt::TokioIo::new(s);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Two pods through one cluster endpoint, each from its own source
/// (`Egress`): every upstream connection carries one pod's requests only,
/// and leaves from that pod's address; connections are still reused within
/// a pod. Once a pod's source is closed (un-enrolled), its idle connection
/// closes, and its next request gets a 503 (a local reset, counted) while
/// the other pod is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_connections_are_made_and_pooled_per_source_pod() {
    let (backend, seen) = recording_backend().await;
    let cfg = format!(
        "listeners:
  - name: shared
    address: {backend}
    bind_to_port: false
    virtual_hosts:
      - name: shared
        domains: [\"*\"]
        routes:
          - match: {{prefix: /}}
            route: {{cluster: shared}}
clusters:
{}",
        static_cluster("shared", &[backend.port()], ""),
    );
    let h = Harness::new(&cfg).await;
    let pods = [
        (pod("shop", "a"), [127, 0, 0, 11]),
        (pod("shop", "b"), [127, 0, 0, 12]),
    ];
    let mut entries = Vec::new();
    let mut made = Vec::new();
    let mut egresses = Vec::new();
    for (p, ip) in &pods {
        let count = Arc::new(AtomicUsize::new(0));
        let egress = Egress::new(
            format!("{}/{}", p.namespace, p.name),
            PodAddress {
                ip: (*ip).into(),
                made: count.clone(),
            },
        );
        entries.push(
            h.outbound_from(backend, p.clone(), None, Some(egress.clone()))
                .await,
        );
        made.push(count);
        egresses.push(egress);
    }
    // Both pods at once, four clients each, on keep-alive connections.
    const EACH: usize = 100;
    let mut clients = Vec::new();
    for &entry in &entries {
        for _ in 0..4 {
            clients.push(tokio::spawn(async move {
                let c = client();
                for _ in 0..EACH {
                    let r = send(&c, req("GET", &format!("http://{entry}/"), &[], "")).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            }));
        }
    }
    for c in clients {
        c.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2 * 4 * EACH);
    let mut by_connection: HashMap<SocketAddr, PodIdentity> = HashMap::new();
    for (peer, source) in &seen {
        let source = source.as_ref().and_then(|v| h.ic.source_of(v));
        let source = source.expect("every request names its pod");
        let (_, ip) = pods.iter().find(|(p, _)| *p == source).unwrap();
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::from(*ip),
            "{source:?}'s request left from another address"
        );
        let first = by_connection.entry(*peer).or_insert_with(|| source.clone());
        assert_eq!(*first, source, "one connection carried two pods' requests");
    }
    for (count, (p, _)) in made.iter().zip(&pods) {
        let sockets = count.load(Ordering::SeqCst);
        assert!(
            (1..=8).contains(&sockets),
            "{p:?}: {sockets} sockets for {} requests",
            4 * EACH
        );
    }
    let active = "weir_cluster_upstream_connections_active{cluster=\"shared\"}";
    let open = h.metric(active).await;
    let b_sockets = made[1].load(Ordering::SeqCst) as f64;
    assert!(open > b_sockets, "{open} open, pod b made {b_sockets}");

    // Pod a is un-enrolled.
    egresses[0].close();
    eventually(
        "pod a's pooled connections closed",
        Duration::from_secs(5),
        || async { h.metric(active).await <= b_sockets },
    )
    .await;
    let r = send(
        &client(),
        req("GET", &format!("http://{}/", entries[0]), &[], ""),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.body.ends_with("reset reason: local reset"), "{}", r.body);
    let failures = "weir_intercept_pod_connect_failures_total{reason=\"unenrolled\"}";
    assert_eq!(h.metric(failures).await, 1.0);
    let before = made[0].load(Ordering::SeqCst);
    let r = send(
        &client(),
        req("GET", &format!("http://{}/", entries[1]), &[], ""),
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(made[0].load(Ordering::SeqCst), before, "a socket for pod a");
}
