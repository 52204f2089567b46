//! `GET /graph` (a page) and `GET /graph.json` (what it draws): who calls
//! whom on this node, with request counts, 5xx counts and latency
//! histograms, from weir's own metrics (Kiali's graph is the reference; no
//! Prometheus server needed). `/graph.json` holds totals since the process
//! started; the page turns two of them into rates, error rates and p99.
//!
//! Nodes are pods (`pod:<namespace>/<name>`), services (`service:<listener>`:
//! what a pod's outbound connections went to, a claiming listener's name or
//! an original `ip:port`) and clusters (`cluster:<name>`). Edges:
//!
//! - pod -> service: the pod's outbound requests
//!   (`weir_intercept_requests_total{direction="outbound"}`), timed by their
//!   own histogram (`weir_intercept_request_duration_seconds`, by source and
//!   destination), else the listener's (every source of it together);
//! - service -> cluster: a listener's routes to a cluster, with the
//!   cluster's requests and its upstream histogram (a cluster shared by
//!   listeners shows its totals on each);
//! - cluster -> pod: a pod's inbound requests to an address that is an
//!   endpoint of the cluster (the first cluster by name when several list
//!   it), timed by their own histogram, else by the cluster's when the pod
//!   is its only endpoint; inbound requests to no cluster's endpoint come
//!   from their source pod (`unknown` when weir could not tell).
//!
//! The metrics are read by their documented names (docs/metrics.md): the
//! engine does not know interception, only the families it registered.

mod page;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prometheus::proto::{Metric, MetricFamily};
use serde::Serialize;

use super::super::metrics::DURATION_BUCKETS_SECONDS;
use super::super::runtime::Runtime;
use crate::config::RouteAction;

pub use page::page;

/// Nodes drawn at most; edges carrying the fewest requests go first.
pub const MAX_NODES: usize = 100;
/// Edges drawn at most.
pub const MAX_EDGES: usize = 200;

const REQUESTS: &str = "weir_intercept_requests_total";
const LISTENER_DURATION: &str = "weir_http_downstream_request_duration_seconds";
const CLUSTER_REQUESTS: &str = "weir_cluster_upstream_requests_total";
const CLUSTER_DURATION: &str = "weir_cluster_upstream_request_duration_seconds";
const PAIR_DURATION: &str = "weir_intercept_request_duration_seconds";

/// The `/graph.json` document.
#[derive(Debug, Serialize)]
pub struct Graph {
    /// Upper bounds (seconds) of every edge's `latency` counts.
    pub bounds: &'static [f64],
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Edges left out by [`MAX_NODES`] and [`MAX_EDGES`].
    pub dropped_edges: usize,
    pub max_nodes: usize,
    pub max_edges: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
    /// `pod`, `service` or `cluster`.
    pub kind: &'static str,
    pub name: String,
    /// A pod's workload (its controller), when the metrics name it.
    pub workload: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// Requests since the process started.
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// Cumulative counts at `bounds`, then the count of every sample, of
    /// the histogram that times this edge; empty when none does.
    pub latency: Vec<u64>,
    /// Whose histogram `latency` is: `pair` (the edge's own requests),
    /// `listener` or `cluster`.
    pub latency_of: Option<&'static str>,
}

/// What the config and the clusters say beyond the metrics.
#[derive(Debug, Default)]
pub struct Topology {
    /// Each listener and the clusters its routes forward to.
    pub routes: Vec<(String, Vec<String>)>,
    /// Each cluster's endpoint addresses (`ip:port`).
    pub endpoints: Vec<(String, Vec<String>)>,
}

/// The topology of the running config.
pub async fn topology(rt: &Runtime) -> Topology {
    let effective = rt.effective.load();
    let routes = effective.as_deref().map_or_else(Vec::new, |cfg| {
        cfg.listeners
            .iter()
            .map(|l| {
                let mut clusters: Vec<String> = l
                    .virtual_hosts
                    .iter()
                    .flat_map(|vh| &vh.routes)
                    .filter_map(|r| match &r.action {
                        RouteAction::Route(forward) => Some(forward.target.cluster_names()),
                        _ => None,
                    })
                    .flatten()
                    .map(str::to_owned)
                    .collect();
                clusters.sort();
                clusters.dedup();
                (l.name.clone(), clusters)
            })
            .collect()
    });
    let endpoints = rt
        .clusters()
        .await
        .iter()
        .map(|c| {
            let endpoints = c.endpoints.load();
            let addrs = endpoints.iter().map(|e| e.addr.to_string());
            (c.name.to_string(), addrs.collect())
        })
        .collect();
    Topology { routes, endpoints }
}

/// The value of `metric`'s label `name`, `unknown` when absent.
fn label<'m>(metric: &'m Metric, name: &str) -> &'m str {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("unknown", |l| l.value())
}

/// A histogram's cumulative counts at its finite bounds, then its total.
fn cumulative(metric: &Metric) -> Vec<u64> {
    let h = metric.get_histogram();
    let mut counts: Vec<u64> = h
        .get_bucket()
        .iter()
        .filter(|b| b.upper_bound().is_finite())
        .map(|b| b.cumulative_count())
        .collect();
    counts.push(h.get_sample_count());
    counts
}

/// Each series of the histogram family `name`, by its label `by`.
fn histograms(families: &[MetricFamily], name: &str, by: &str) -> HashMap<String, Vec<u64>> {
    families
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| (label(m, by).to_owned(), cumulative(m)))
        .collect()
}

#[derive(Default)]
struct Builder {
    nodes: BTreeMap<String, Node>,
    edges: BTreeMap<(String, String), Edge>,
}

impl Builder {
    fn node(&mut self, kind: &'static str, name: &str, workload: Option<&str>) -> String {
        let id = format!("{kind}:{name}");
        let node = self.nodes.entry(id.clone()).or_insert_with(|| Node {
            id: id.clone(),
            kind,
            name: name.to_owned(),
            workload: None,
        });
        if let Some(w) = workload.filter(|w| *w != "unknown") {
            node.workload.get_or_insert_with(|| w.to_owned());
        }
        id
    }

    fn pod(&mut self, m: &Metric, side: &str) -> String {
        let name = format!(
            "{}/{}",
            label(m, &format!("{side}_namespace")),
            label(m, &format!("{side}_pod"))
        );
        self.node("pod", &name, Some(label(m, &format!("{side}_workload"))))
    }

    fn edge(&mut self, from: String, to: String) -> &mut Edge {
        self.edges
            .entry((from.clone(), to.clone()))
            .or_insert_with(|| Edge {
                from,
                to,
                ..Edge::default()
            })
    }
}

/// The graph of `families` over `topo`, within [`MAX_NODES`] and [`MAX_EDGES`].
pub fn build(families: &[MetricFamily], topo: &Topology) -> Graph {
    let listener_latency = histograms(families, LISTENER_DURATION, "listener");
    let cluster_latency = histograms(families, CLUSTER_DURATION, "cluster");
    // Which cluster an inbound address is an endpoint of, and whether it is
    // that cluster's only one (then the cluster's histogram times it alone).
    let mut owner: HashMap<&str, (&str, bool)> = HashMap::new();
    for (cluster, addrs) in &topo.endpoints {
        for a in addrs {
            owner.entry(a).or_insert((cluster, addrs.len() == 1));
        }
    }
    let mut b = Builder::default();
    // The edge a series of the identity families belongs to, and the
    // listener's or cluster's histogram that times it when its own does not.
    let ends = |b: &mut Builder, m: &Metric| {
        let destination = label(m, "destination");
        match label(m, "direction") {
            "outbound" => {
                let from = b.pod(m, "source");
                let to = b.node("service", destination, None);
                let timed = listener_latency.get(destination).map(|h| ("listener", h));
                Some((from, to, timed))
            }
            "inbound" => {
                let to = b.pod(m, "destination");
                Some(match owner.get(destination) {
                    Some(&(cluster, only)) => {
                        let from = b.node("cluster", cluster, None);
                        let timed = cluster_latency.get(cluster).filter(|_| only);
                        (from, to, timed.map(|h| ("cluster", h)))
                    }
                    None => (b.pod(m, "source"), to, None),
                })
            }
            _ => None,
        }
    };
    // Each edge's own histogram: its series summed (several sources reach
    // a cluster's pod through the same edge).
    let mut own: HashMap<(String, String), Vec<u64>> = HashMap::new();
    for m in families
        .iter()
        .filter(|f| f.name() == PAIR_DURATION)
        .flat_map(|f| f.get_metric())
        .filter(|m| m.get_histogram().get_sample_count() > 0)
    {
        let Some((from, to, _)) = ends(&mut b, m) else {
            continue;
        };
        let counts = cumulative(m);
        let sum = own
            .entry((from, to))
            .or_insert_with(|| vec![0; counts.len()]);
        for (total, count) in sum.iter_mut().zip(counts) {
            *total += count;
        }
    }
    for m in families
        .iter()
        .filter(|f| f.name() == REQUESTS)
        .flat_map(|f| f.get_metric())
    {
        let count = m.get_counter().get_value().max(0.0) as u64;
        if count == 0 {
            continue;
        }
        let Some((from, to, shared)) = ends(&mut b, m) else {
            continue;
        };
        let latency = match own.get(&(from.clone(), to.clone())) {
            Some(h) => Some(("pair", h)),
            None => shared,
        };
        let edge = b.edge(from, to);
        edge.requests += count;
        if label(m, "response_code_class") == "5xx" {
            edge.errors += count;
        }
        if let Some((of, h)) = latency {
            edge.latency_of = Some(of);
            edge.latency.clone_from(h);
        }
    }
    let mut cluster_requests: HashMap<&str, (u64, u64)> = HashMap::new();
    for m in families
        .iter()
        .filter(|f| f.name() == CLUSTER_REQUESTS)
        .flat_map(|f| f.get_metric())
    {
        let count = m.get_counter().get_value().max(0.0) as u64;
        let totals = cluster_requests.entry(label(m, "cluster")).or_default();
        totals.0 += count;
        if label(m, "response_code_class") == "5xx" {
            totals.1 += count;
        }
    }
    for (listener, clusters) in &topo.routes {
        for cluster in clusters {
            let from = b.node("service", listener, None);
            let to = b.node("cluster", cluster, None);
            let (requests, errors) = cluster_requests
                .get(cluster.as_str())
                .copied()
                .unwrap_or_default();
            let latency = cluster_latency.get(cluster.as_str());
            let edge = b.edge(from, to);
            edge.requests = requests;
            edge.errors = errors;
            edge.latency_of = latency.map(|_| "cluster");
            edge.latency = latency.cloned().unwrap_or_default();
        }
    }
    bounded(b)
}

/// The busiest edges that fit [`MAX_EDGES`] and [`MAX_NODES`], and their nodes.
fn bounded(b: Builder) -> Graph {
    let mut all: Vec<Edge> = b.edges.into_values().collect();
    // Busiest first; ties in id order, so that the page is stable.
    all.sort_by_key(|e| std::cmp::Reverse(e.requests));
    let mut ids = BTreeSet::new();
    let mut edges = Vec::new();
    let mut dropped_edges = 0;
    for e in all {
        let new = usize::from(!ids.contains(&e.from))
            + usize::from(e.to != e.from && !ids.contains(&e.to));
        if edges.len() >= MAX_EDGES || ids.len() + new > MAX_NODES {
            dropped_edges += 1;
            continue;
        }
        ids.insert(e.from.clone());
        ids.insert(e.to.clone());
        edges.push(e);
    }
    let nodes = b
        .nodes
        .into_values()
        .filter(|n| ids.contains(&n.id))
        .collect();
    Graph {
        bounds: DURATION_BUCKETS_SECONDS,
        nodes,
        edges,
        dropped_edges,
        max_nodes: MAX_NODES,
        max_edges: MAX_EDGES,
    }
}

#[cfg(test)]
mod tests;
