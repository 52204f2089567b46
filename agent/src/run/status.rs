//! The pods part of `GET /status` (what `weir status` shows): every pod the
//! source lists for this node, enrolled or why not, so "why is this pod not
//! intercepted" has an answer in one place. Bounded by the node's pods.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::enroll::Enroller;
use crate::pods::{FailMode, InboundPorts, PodPolicy, PodSpec};

/// Where a pod stands with this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// Its connections go through the proxy.
    Enrolled,
    /// No `weir.dev/enroll: "true"`: not meant to be.
    NotAnnotated,
    /// Its `weir.dev/*` annotations are invalid (`reason` says which).
    InvalidAnnotation,
    /// Meant to be, but enrolling failed (`reason`: e.g. waiting for its
    /// sandbox); retried.
    Failing,
    /// A new agent on this node serves it now.
    HandedOver,
}

#[derive(Debug, Serialize)]
pub struct PodStatus {
    /// `namespace/name`.
    pub pod: String,
    pub uid: String,
    pub state: PodState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub ips: Vec<IpAddr>,
    /// The annotations in effect (enrolled pods only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySummary>,
}

/// A pod's `weir.dev/*` annotations as the agent applies them.
#[derive(Debug, Serialize)]
pub struct PolicySummary {
    /// `open` or `closed`: what its connections do while no proxy serves it.
    pub fail_mode: &'static str,
    /// `all`, or the listed ports.
    pub inbound_ports: String,
    pub exclude_outbound_ports: Vec<u16>,
    pub max_connections: u32,
    pub max_connection_rate: u32,
    pub max_requests: u32,
    /// `None`: the node's default.
    pub max_cpu_millicores: Option<u32>,
}

impl From<&PodPolicy> for PolicySummary {
    fn from(p: &PodPolicy) -> Self {
        Self {
            fail_mode: match p.fail_mode {
                FailMode::Open => "open",
                FailMode::Closed => "closed",
            },
            inbound_ports: match &p.inbound_ports {
                InboundPorts::All => "all".to_owned(),
                InboundPorts::Listed(ports) => ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            },
            exclude_outbound_ports: p.exclude_outbound_ports.clone(),
            max_connections: p.limits.max_open,
            max_connection_rate: p.limits.per_second,
            max_requests: p.limits.max_requests,
            max_cpu_millicores: p.max_cpu_millicores,
        }
    }
}

/// Every pod of `desired`, sorted by `namespace/name`. `failing`: why pods
/// failed to enroll, by label; `handing_over`: a new agent is taking the
/// node's pods over.
pub fn pods(
    desired: &[PodSpec],
    enroller: &Enroller,
    failing: &HashMap<String, String>,
    handing_over: bool,
) -> Vec<PodStatus> {
    let mut out: Vec<PodStatus> = desired
        .iter()
        .map(|spec| {
            let label = format!("{}/{}", spec.namespace, spec.name);
            let enrolled = enroller.pod(&spec.uid);
            let (state, reason) = match (spec.policy(), enrolled) {
                // An invalid change is refused: the pod keeps its last valid annotations.
                (Err(e), Some(_)) => (
                    PodState::Enrolled,
                    Some(format!(
                        "annotation change refused, previous ones kept: {e}"
                    )),
                ),
                (Err(e), None) => (PodState::InvalidAnnotation, Some(e.to_string())),
                (Ok(_), Some(_)) => (PodState::Enrolled, None),
                (Ok(p), None) if !p.enroll => (
                    PodState::NotAnnotated,
                    Some("no weir.dev/enroll: \"true\" annotation".to_owned()),
                ),
                (Ok(_), None) => match failing.get(&label) {
                    Some(why) => (PodState::Failing, Some(why.clone())),
                    None if handing_over => (PodState::HandedOver, None),
                    None => (
                        PodState::Failing,
                        Some("not enrolled yet (next attempt pending)".to_owned()),
                    ),
                },
            };
            PodStatus {
                pod: label,
                uid: spec.uid.clone(),
                state,
                reason,
                ips: enrolled.map_or_else(|| spec.ips.clone(), |p| p.ips().to_vec()),
                policy: enrolled.map(|p| PolicySummary::from(p.policy())),
            }
        })
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}
