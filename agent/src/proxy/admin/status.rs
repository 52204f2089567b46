//! `GET /status`: one JSON document with what an operator checks first
//! (`weir status` renders it; `cilium status` and `istioctl ztunnel-config
//! workloads` are the references): version, readiness, the config's
//! generation and last refusal, the data path, the node's pods (enrolled, or
//! why not), listeners and clusters with their health.

use serde::Serialize;
use serde_json::Value;

use super::super::cluster::outlier::now_ms;
use super::super::runtime::{ConfigHistory, Runtime};

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub ready: bool,
    pub config: ConfigHistory,
    /// What the data path detected and loaded; `null` under `weir proxy`.
    pub datapath: Value,
    /// The node's pods (`run::status`); `null` under `weir proxy`.
    pub pods: Value,
    /// `ALLOW_ANY` or `REGISTRY_ONLY`, as in the config.
    pub outbound_traffic_policy: Value,
    pub listeners: Vec<ListenerStatus>,
    pub clusters: Vec<ClusterStatus>,
}

#[derive(Debug, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    /// The bound address, or, for `bind_to_port: false`, the destination
    /// it claims.
    pub address: String,
    pub bind_to_port: bool,
}

#[derive(Debug, Serialize)]
pub struct ClusterStatus {
    pub name: String,
    /// `STATIC`, `STRICT_DNS`, `DYNAMIC_FORWARD_PROXY`, as in the config.
    #[serde(rename = "type")]
    pub kind: Value,
    pub endpoints: usize,
    /// Endpoints not ejected by outlier detection.
    pub healthy: usize,
    /// False until the first resolution finished (DNS clusters).
    pub initialized: bool,
}

pub async fn status(rt: &Runtime) -> Status {
    let bound = rt.listeners().await;
    let effective = rt.effective.load();
    let config = effective.as_deref();
    let mut listeners: Vec<ListenerStatus> = bound
        .into_iter()
        .map(|(name, addr)| ListenerStatus {
            name,
            address: addr.to_string(),
            bind_to_port: true,
        })
        .collect();
    let mut kinds = std::collections::HashMap::new();
    if let Some(cfg) = config {
        listeners.extend(cfg.listeners.iter().filter(|l| !l.bind_to_port).map(|l| {
            ListenerStatus {
                name: l.name.clone(),
                address: l.address.to_string(),
                bind_to_port: false,
            }
        }));
        for c in &cfg.clusters {
            kinds.insert(c.name.clone(), as_config_says(c.discovery_type));
        }
    }
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    let now = now_ms();
    let clusters = rt
        .clusters()
        .await
        .iter()
        .map(|c| {
            let endpoints = c.endpoints.load();
            ClusterStatus {
                name: c.name.to_string(),
                kind: kinds.get(&*c.name).cloned().unwrap_or(Value::Null),
                endpoints: endpoints.len(),
                healthy: endpoints
                    .iter()
                    .filter(|e| !e.outlier.is_ejected(now))
                    .count(),
                initialized: c.is_initialized(),
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: rt.uptime().as_secs(),
        ready: rt.is_ready().await,
        config: rt.config_history(),
        datapath: rt
            .datapath_status
            .get()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or(Value::Null),
        pods: serde_json::from_str(&rt.pods_status.load()).unwrap_or(Value::Null),
        outbound_traffic_policy: config
            .map_or(Value::Null, |c| as_config_says(c.outbound_traffic_policy)),
        listeners,
        clusters,
    }
}

/// A config enum as its YAML spells it.
fn as_config_says(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
