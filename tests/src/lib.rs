//! A simulated Kubernetes node for weir's tests and demo, following the network
//! rules of DESIGN.md: every "pod" is a network namespace with a veth into a
//! per-node bridge, a kubelet-style cgroup v2 directory and real processes.
//! Addresses come from documentation ranges and there is no default route, so a
//! mistake fails here instead of leaving the machine. Everything is removed on
//! drop, also while a test panics.

pub mod agent;
pub mod browser;
mod cmd;
pub mod dashboard;
pub mod exchange;
pub mod iptables;
pub mod kube;
pub mod nft;
mod node;
pub mod pins;
mod pod;
pub mod probe;
pub mod scenario;
pub mod service;
pub mod sidecar;
pub mod support;
pub mod wait;

pub use node::{PodNet, SimNode, SimNodeOptions};
pub use pod::{PodProcess, SimPod};

/// The addresses "services" have on a simulated node. They live on the node's
/// router namespace, reachable from every pod through the pod's gateway.
pub const SERVICE_NET_V4: &str = "198.51.100.0/24";
pub const SERVICE_NET_V6: &str = "2001:db8::/64";
