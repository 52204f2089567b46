//! One pod as the agent sees it, and the document that lists them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::node::cgroup::QosClass;
use serde::de::{self, Deserializer, Visitor};

/// The pods file: `namespaces: [...]` (optional) and `pods: [...]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PodsDocument {
    #[serde(default)]
    pub(super) namespaces: Vec<NamespaceSpec>,
    pub(super) pods: Vec<PodSpec>,
}

/// A namespace's defaults for its pods, as the file states them: what a
/// Namespace's `weir.dev/` annotations and labels are in a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawNamespace")]
pub(super) struct NamespaceSpec {
    pub(super) name: String,
    pub(super) annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, AnnotationValue>,
}

impl From<RawNamespace> for NamespaceSpec {
    fn from(raw: RawNamespace) -> Self {
        NamespaceSpec {
            name: raw.name,
            annotations: strings(raw.annotations),
        }
    }
}

fn strings(annotations: BTreeMap<String, AnnotationValue>) -> BTreeMap<String, String> {
    annotations
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect()
}

/// One pod on this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPod")]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    /// The pod's UID, its identity ([`PodSpec::key`]).
    pub uid: String,
    /// The pod's own addresses (at least one; none shared with another pod).
    pub ips: Vec<IpAddr>,
    /// Kubernetes-style annotations; `weir.dev/*` ones are read by [`PodSpec::policy`].
    pub annotations: BTreeMap<String, String>,
    pub location: PodLocation,
    /// The service account the pod runs as (Kubernetes' `default` when
    /// unset): with its namespace, what its mesh identity names
    /// (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`).
    pub service_account: String,
    /// The workload the pod belongs to, as Istio names it in metrics
    /// (`source_workload`): its controller (a Deployment's name for a pod
    /// of its ReplicaSet), else the pod's own name.
    pub workload_name: String,
}

/// Who a pod runs as: what its mesh identity names
/// (`spiffe://<trust-domain>/ns/<namespace>/sa/<service_account>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub namespace: Arc<str>,
    pub service_account: Arc<str>,
    /// The workload's own name (its controller's, or the pod's): said to
    /// other nodes with its tunnel streams, for their metrics.
    pub name: Arc<str>,
}

impl PodSpec {
    pub fn workload(&self) -> Workload {
        Workload {
            namespace: Arc::from(self.namespace.as_str()),
            service_account: Arc::from(self.service_account.as_str()),
            name: Arc::from(self.workload_name.as_str()),
        }
    }
}

/// Kubernetes' service account for a pod that names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Where to find the pod on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodLocation {
    /// The pod's cgroup v2 directory: absolute, or relative to the cgroup2 root.
    Cgroup(PathBuf),
    /// A process in the pod.
    Pid(u32),
    /// Where the kubelet puts the pod with this UID: `kubepods/...pod<uid>`
    /// (cgroupfs driver) or `kubepods.slice/...-pod<uid>.slice` (systemd),
    /// under the QoS class's parent when known, else under any.
    Kubelet { qos: Option<QosClass> },
}

impl PodSpec {
    /// The pod's identity across updates: its UID.
    pub fn key(&self) -> &str {
        &self.uid
    }

    /// Adds its namespace's `defaults` under the pod's own annotations: a
    /// value the pod sets itself wins.
    pub(super) fn inherit(&mut self, defaults: &BTreeMap<String, String>) {
        for (key, value) in defaults {
            self.annotations
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }

    /// `namespace/name`, as errors and logs name the pod.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A pod as written, before `cgroup`/`pid` become a [`PodLocation`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    namespace: String,
    name: String,
    uid: String,
    ips: Vec<IpAddr>,
    #[serde(default)]
    annotations: BTreeMap<String, AnnotationValue>,
    #[serde(default)]
    cgroup: Option<PathBuf>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    service_account: Option<String>,
    #[serde(default)]
    workload: Option<String>,
}

impl TryFrom<RawPod> for PodSpec {
    type Error = String;

    fn try_from(raw: RawPod) -> Result<Self, String> {
        let location = match (raw.cgroup, raw.pid) {
            (Some(dir), None) => PodLocation::Cgroup(dir),
            (None, Some(pid)) => PodLocation::Pid(pid),
            (Some(_), Some(_)) => {
                return Err("a pod has either `cgroup` or `pid`, not both".to_owned());
            }
            (None, None) => {
                return Err(
                    "a pod needs `cgroup` (its cgroup v2 directory) or `pid` (a process in it)"
                        .to_owned(),
                );
            }
        };
        let service_account = match raw.service_account {
            Some(sa) => {
                crate::config::check_service_account(&sa)?;
                sa
            }
            None => DEFAULT_SERVICE_ACCOUNT.to_owned(),
        };
        let workload_name = match raw.workload {
            Some(w) => {
                crate::config::check_service_account(&w)
                    .map_err(|_| format!("workload {w:?} is not a Kubernetes name"))?;
                w
            }
            None => raw.name.clone(),
        };
        Ok(PodSpec {
            service_account,
            workload_name,
            namespace: raw.namespace,
            name: raw.name,
            uid: raw.uid,
            ips: raw.ips,
            annotations: strings(raw.annotations),
            location,
        })
    }
}

/// An annotation value: a string, as in Kubernetes. An unquoted `true` or `80`
/// is refused with a hint rather than silently turned into text.
struct AnnotationValue(String);

impl<'de> Deserialize<'de> for AnnotationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnnotationVisitor)
    }
}

struct AnnotationVisitor;

impl AnnotationVisitor {
    fn unquoted<E: de::Error>(value: impl fmt::Display) -> E {
        E::custom(format!(
            "annotation values are strings; quote it: \"{value}\""
        ))
    }
}

impl Visitor<'_> for AnnotationVisitor {
    type Value = AnnotationValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<AnnotationValue, E> {
        Ok(AnnotationValue(value.to_owned()))
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<AnnotationValue, E> {
        Err(Self::unquoted(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<AnnotationValue, E> {
        Err(Self::unquoted(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<AnnotationValue, E> {
        Err(Self::unquoted(value))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<AnnotationValue, E> {
        Err(Self::unquoted(value))
    }
}
