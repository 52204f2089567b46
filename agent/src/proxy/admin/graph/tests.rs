use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::*;

/// The labels of `weir_intercept_requests_total` the graph reads (the real
/// family has more; they are looked up by name).
const ID: [&str; 9] = [
    "direction",
    "source_namespace",
    "source_pod",
    "source_workload",
    "destination",
    "destination_namespace",
    "destination_pod",
    "destination_workload",
    "response_code_class",
];

struct Families {
    registry: Registry,
    requests: IntCounterVec,
    listener: HistogramVec,
    cluster: HistogramVec,
    cluster_requests: IntCounterVec,
}

impl Families {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(Opts::new(REQUESTS, "h"), &ID).unwrap();
        let histogram = |name: &str, by: &str| {
            let opts = HistogramOpts::new(name, "h").buckets(DURATION_BUCKETS_SECONDS.to_vec());
            HistogramVec::new(opts, &[by]).unwrap()
        };
        let listener = histogram(LISTENER_DURATION, "listener");
        let cluster = histogram(CLUSTER_DURATION, "cluster");
        let cluster_requests = IntCounterVec::new(
            Opts::new(CLUSTER_REQUESTS, "h"),
            &["cluster", "response_code_class"],
        )
        .unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        registry.register(Box::new(listener.clone())).unwrap();
        registry.register(Box::new(cluster.clone())).unwrap();
        registry
            .register(Box::new(cluster_requests.clone()))
            .unwrap();
        Self {
            registry,
            requests,
            listener,
            cluster,
            cluster_requests,
        }
    }

    fn outbound(&self, pod: &str, destination: &str, class: &str, n: u64) {
        let labels = [
            "outbound",
            "default",
            pod,
            pod,
            destination,
            "unknown",
            "unknown",
            "unknown",
            class,
        ];
        self.requests.with_label_values(&labels).inc_by(n);
    }

    fn inbound(&self, from: &str, pod: &str, destination: &str, class: &str, n: u64) {
        let labels = [
            "inbound",
            "default",
            from,
            from,
            destination,
            "default",
            pod,
            "backend",
            class,
        ];
        self.requests.with_label_values(&labels).inc_by(n);
    }

    fn cluster(&self, name: &str, class: &str, n: u64, seconds: f64) {
        let c = self.cluster_requests.with_label_values(&[name, class]);
        c.inc_by(n);
        for _ in 0..n {
            self.cluster.with_label_values(&[name]).observe(seconds);
        }
    }
}

fn edge<'g>(g: &'g Graph, from: &str, to: &str) -> &'g Edge {
    g.edges
        .iter()
        .find(|e| e.from == from && e.to == to)
        .unwrap_or_else(|| panic!("no edge {from} -> {to} in {g:#?}"))
}

fn split_topology() -> Topology {
    Topology {
        routes: vec![(
            "backend".into(),
            vec!["backend_v1".into(), "backend_v2".into()],
        )],
        endpoints: vec![
            ("backend_v1".into(), vec!["192.0.2.2:8080".into()]),
            (
                "backend_v2".into(),
                vec!["192.0.2.3:8080".into(), "192.0.2.4:8080".into()],
            ),
        ],
    }
}

#[test]
fn a_split_service_is_pod_to_service_to_clusters_to_pods() {
    let f = Families::new();
    f.outbound("client", "backend", "2xx", 10);
    f.outbound("client", "backend", "5xx", 2);
    f.listener.with_label_values(&["backend"]).observe(0.003);
    f.inbound("client", "backend-v1", "192.0.2.2:8080", "2xx", 8);
    f.inbound("client", "backend-v2", "192.0.2.3:8080", "2xx", 2);
    f.inbound("client", "backend-v2", "192.0.2.3:8080", "5xx", 2);
    // An address no cluster has: the edge comes from the source pod.
    f.inbound("client", "other", "192.0.2.9:80", "2xx", 1);
    // A series at zero draws nothing.
    f.inbound("client", "idle", "192.0.2.10:80", "2xx", 0);
    f.cluster("backend_v1", "2xx", 8, 0.002);
    f.cluster("backend_v2", "2xx", 2, 0.004);
    f.cluster("backend_v2", "5xx", 2, 0.004);

    let g = build(&f.registry.gather(), &split_topology());
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "cluster:backend_v1",
            "cluster:backend_v2",
            "pod:default/backend-v1",
            "pod:default/backend-v2",
            "pod:default/client",
            "pod:default/other",
            "service:backend",
        ]
    );
    let client = g.nodes.iter().find(|n| n.id == "pod:default/client");
    assert_eq!(client.unwrap().workload.as_deref(), Some("client"));

    let e = edge(&g, "pod:default/client", "service:backend");
    assert_eq!(
        (e.requests, e.errors, e.latency_of),
        (12, 2, Some("listener"))
    );
    assert_eq!(e.latency.len(), DURATION_BUCKETS_SECONDS.len() + 1);
    assert_eq!(e.latency.last(), Some(&1));

    let e = edge(&g, "service:backend", "cluster:backend_v2");
    assert_eq!(
        (e.requests, e.errors, e.latency_of),
        (4, 2, Some("cluster"))
    );
    assert_eq!(e.latency.last(), Some(&4));

    // backend_v1's only endpoint: timed by the cluster's histogram.
    let e = edge(&g, "cluster:backend_v1", "pod:default/backend-v1");
    assert_eq!((e.requests, e.latency_of), (8, Some("cluster")));
    // backend_v2 has two endpoints: its histogram does not time one of them.
    let e = edge(&g, "cluster:backend_v2", "pod:default/backend-v2");
    assert_eq!((e.requests, e.errors, e.latency_of), (4, 2, None));
    assert!(e.latency.is_empty());

    let e = edge(&g, "pod:default/client", "pod:default/other");
    assert_eq!(e.requests, 1);
    assert_eq!(g.edges.len(), 6);
    assert_eq!(g.dropped_edges, 0);

    // The busiest first.
    assert!(g.edges.windows(2).all(|w| w[0].requests >= w[1].requests));
    let json = serde_json::to_value(&g).unwrap();
    assert_eq!(json["bounds"][0], 0.0005);
    assert_eq!(json["edges"][0]["from"], "pod:default/client");
}

#[test]
fn routes_show_before_any_traffic() {
    let g = build(&Families::new().registry.gather(), &split_topology());
    assert_eq!(g.nodes.len(), 3);
    let e = edge(&g, "service:backend", "cluster:backend_v1");
    assert_eq!((e.requests, e.latency_of), (0, None));
}

#[test]
fn nodes_and_edges_are_bounded_keeping_the_busiest() {
    let f = Families::new();
    // 300 pods, each calling a service of its own: 600 nodes, 300 edges.
    for i in 0..300u64 {
        f.outbound(&format!("p{i}"), &format!("s{i}"), "2xx", i + 1);
    }
    let g = build(&f.registry.gather(), &Topology::default());
    assert_eq!(g.nodes.len(), MAX_NODES);
    assert_eq!(g.edges.len(), MAX_NODES / 2);
    assert_eq!(g.dropped_edges, 300 - MAX_NODES / 2);
    assert_eq!(g.edges[0].requests, 300);
    assert!(g.edges.iter().all(|e| e.requests > 300 - 50));

    // One pod calling 300 services: the edges' bound, then the nodes'.
    let f = Families::new();
    for i in 0..300u64 {
        f.outbound("hub", &format!("s{i}"), "2xx", 1);
    }
    let g = build(&f.registry.gather(), &Topology::default());
    assert!(g.edges.len() <= MAX_EDGES && g.nodes.len() <= MAX_NODES);
    assert_eq!(g.edges.len(), MAX_NODES - 1);
    assert_eq!(g.dropped_edges, 300 - (MAX_NODES - 1));
}

#[test]
fn an_edge_with_its_own_histogram_is_timed_by_it() {
    let f = Families::new();
    // The identity families' duration histogram: their labels less the class.
    let opts = HistogramOpts::new(PAIR_DURATION, "h").buckets(DURATION_BUCKETS_SECONDS.to_vec());
    let pair = HistogramVec::new(opts, &ID[..ID.len() - 1]).unwrap();
    f.registry.register(Box::new(pair.clone())).unwrap();
    f.outbound("client", "backend", "2xx", 3);
    f.listener.with_label_values(&["backend"]).observe(0.003);
    let outbound = [
        "outbound", "default", "client", "client", "backend", "unknown", "unknown", "unknown",
    ];
    for _ in 0..3 {
        pair.with_label_values(&outbound).observe(0.2);
    }
    // Two sources to backend_v2's first endpoint: one edge from the
    // cluster, timed by both sources' requests together.
    f.inbound("client", "backend-v2", "192.0.2.3:8080", "2xx", 2);
    f.inbound("batch", "backend-v2", "192.0.2.3:8080", "2xx", 1);
    for (from, n) in [("client", 2), ("batch", 1)] {
        let labels = [
            "inbound",
            "default",
            from,
            from,
            "192.0.2.3:8080",
            "default",
            "backend-v2",
            "backend",
        ];
        for _ in 0..n {
            pair.with_label_values(&labels).observe(0.0007);
        }
    }

    let g = build(&f.registry.gather(), &split_topology());
    let e = edge(&g, "pod:default/client", "service:backend");
    assert_eq!(e.latency_of, Some("pair"));
    // All three under 0.25 s, none under 0.1 s: its own, not the listener's.
    let bound = |b: f64| {
        DURATION_BUCKETS_SECONDS
            .iter()
            .position(|x| *x == b)
            .unwrap()
    };
    assert_eq!(e.latency[bound(0.1)], 0);
    assert_eq!(e.latency[bound(0.25)], 3);
    let e = edge(&g, "cluster:backend_v2", "pod:default/backend-v2");
    assert_eq!((e.requests, e.latency_of), (3, Some("pair")));
    assert_eq!(e.latency.last(), Some(&3));
    assert_eq!(e.latency[bound(0.001)], 3);
}
