//! The pod source: which pods exist on this node and how each is configured.
//!
//! A [`PodSpec`] is what the agent knows about one pod, wherever it came from:
//! a YAML file ([`load_pods_file`], watched by [`watch_pods_file`]) or the
//! Kubernetes API ([`watch_node_pods`]); both feed the same enrollment code. [`PodSpec::policy`]
//! reads the `weir.dev/*` annotations, and [`resolve`] finds the pod's cgroup
//! directory and network namespace on this node.
//! Format reference: `docs/pods.md`.

mod dir_changes;
mod file;
mod kubernetes;
mod policy;
mod resolve;
mod spec;
mod validate;
mod watch;

pub use file::{PodsFileError, load_pods_file, parse_pods_str};
pub use kubernetes::{
    KubernetesError, KubernetesOptions, KubernetesPods, NotEnrollable, pod_spec, watch_node_pods,
};
pub use policy::{
    ANNOTATION_BYPASSED_CONNECTIONS, ANNOTATION_ENROLL, ANNOTATION_EXCLUDE_OUTBOUND_PORTS,
    ANNOTATION_FAIL_MODE, ANNOTATION_INBOUND_PORTS, ANNOTATION_MAX_CONNECTION_RATE,
    ANNOTATION_MAX_CONNECTIONS, ANNOTATION_MAX_CPU, ANNOTATION_MAX_REQUESTS,
    ANNOTATION_UNCLAIMED_TRAFFIC, BypassedConnections, ConnectionLimits, FailMode, InboundPorts,
    MAX_EXCLUDED_OUTBOUND_PORTS, MAX_INBOUND_PORTS, PodPolicy, PolicyError, Unclaimed,
};
pub use resolve::{ResolveError, ResolvedPod, resolve};
pub use spec::{DEFAULT_SERVICE_ACCOUNT, PodLocation, PodSpec, Workload};
pub use watch::{PodsWatch, watch_pods_file};
