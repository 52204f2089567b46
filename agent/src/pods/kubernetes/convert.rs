//! A Kubernetes Pod object -> what the agent needs of it ([`PodSpec`]), or why
//! it cannot be enrolled yet.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use crate::node::cgroup::QosClass;

use super::super::spec::{DEFAULT_SERVICE_ACCOUNT, PodLocation, PodSpec};

/// Why a pod on this node is not handed to enrolment (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotEnrollable {
    /// No UID, name or namespace: not a real API object.
    Incomplete,
    /// Shares the node's network namespace: intercepting it would intercept the node.
    HostNetwork,
    /// Scheduled, but the kubelet has not reported its sandbox's IP yet.
    NoPodIp,
    /// Succeeded or Failed: its sandbox is gone or going.
    Finished(String),
    /// `status.podIPs` holds something that is not an IP address.
    BadPodIp(String),
}

impl std::fmt::Display for NotEnrollable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Incomplete => f.write_str("the object has no uid, name or namespace"),
            Self::HostNetwork => f.write_str(
                "hostNetwork pods share the node's network namespace and are never enrolled",
            ),
            Self::NoPodIp => f.write_str("waiting for its sandbox (no pod IP yet)"),
            Self::Finished(phase) => write!(f, "phase {phase}: its containers have ended"),
            Self::BadPodIp(ip) => write!(f, "status.podIPs holds {ip:?}, not an IP address"),
        }
    }
}

/// The pod as enrolment sees it. Its cgroup is found from its UID and QoS
/// class the way the kubelet names it ([`PodLocation::Kubelet`]).
pub fn pod_spec(pod: &Pod) -> Result<PodSpec, NotEnrollable> {
    let meta = &pod.metadata;
    let (Some(uid), Some(name), Some(namespace)) = (&meta.uid, &meta.name, &meta.namespace) else {
        return Err(NotEnrollable::Incomplete);
    };
    if pod
        .spec
        .as_ref()
        .and_then(|spec| spec.host_network)
        .unwrap_or(false)
    {
        return Err(NotEnrollable::HostNetwork);
    }
    let status = pod.status.as_ref();
    if let Some(phase) = status.and_then(|s| s.phase.as_deref())
        && (phase == "Succeeded" || phase == "Failed")
    {
        return Err(NotEnrollable::Finished(phase.to_owned()));
    }
    let ips = pod_ips(pod)?;
    if ips.is_empty() {
        return Err(NotEnrollable::NoPodIp);
    }
    let qos = status
        .and_then(|s| s.qos_class.as_deref())
        .and_then(qos_class);
    Ok(PodSpec {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
        ips,
        annotations: meta.annotations.clone().unwrap_or_default(),
        location: PodLocation::Kubelet { qos },
        service_account: pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned()),
        workload_name: workload_name(pod, name),
    })
}

/// The pod's workload as Istio names it: its controlling owner, a
/// ReplicaSet read as its Deployment (the ReplicaSet's name without the
/// pod-template hash Kubernetes appends); no controller: the pod itself.
fn workload_name(pod: &Pod, pod_name: &str) -> String {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => match o.name.rsplit_once('-') {
            Some((deployment, _hash)) if !deployment.is_empty() => deployment.to_owned(),
            _ => o.name.clone(),
        },
        Some(o) => o.name.clone(),
        None => pod_name.to_owned(),
    }
}

/// `status.podIPs` (dual stack), else `status.podIP`; duplicates removed.
fn pod_ips(pod: &Pod) -> Result<Vec<IpAddr>, NotEnrollable> {
    let Some(status) = pod.status.as_ref() else {
        return Ok(Vec::new());
    };
    let listed = status.pod_ips.iter().flatten().map(|ip| ip.ip.as_str());
    let texts: Vec<&str> = match status.pod_ips.as_deref() {
        Some(list) if !list.is_empty() => listed.collect(),
        _ => status.pod_ip.as_deref().into_iter().collect(),
    };
    let mut ips = Vec::with_capacity(texts.len());
    for text in texts.into_iter().filter(|t| !t.is_empty()) {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| NotEnrollable::BadPodIp(text.to_owned()))?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

fn qos_class(text: &str) -> Option<QosClass> {
    match text {
        "Guaranteed" => Some(QosClass::Guaranteed),
        "Burstable" => Some(QosClass::Burstable),
        "BestEffort" => Some(QosClass::BestEffort),
        _ => None,
    }
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
