//! The node: a router namespace with a bridge every pod plugs into, and a
//! private cgroup subtree laid out like the kubelet's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use weir::netns::NetNs;
use weir::node::cgroup::{CgroupDriver, QosClass, cgroup2_root, pod_cgroup_relpath};

use crate::cmd::ip;
use crate::pod::SimPod;

static NEXT_NODE: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Debug)]
pub struct SimNodeOptions {
    pub driver: CgroupDriver,
    pub qos: QosClass,
}

impl Default for SimNodeOptions {
    fn default() -> Self {
        Self {
            driver: CgroupDriver::Cgroupfs,
            qos: QosClass::BestEffort,
        }
    }
}

pub struct SimNode {
    pub(crate) inner: Arc<NodeInner>,
    next_pod: AtomicU32,
}

/// What every pod of the node shares; removed after the last pod is gone.
pub(crate) struct NodeInner {
    /// Short unique prefix for every name this node creates.
    pub(crate) id: String,
    pub(crate) router_ns_name: String,
    pub(crate) router: NetNs,
    /// `<cgroup2>/weir-sim-<id>`: the node's own subtree, so parallel tests and a
    /// real kubelet never share a directory.
    pub(crate) cgroup_root: PathBuf,
    pub(crate) options: SimNodeOptions,
}

impl SimNode {
    pub fn new() -> Result<Self> {
        Self::with_options(SimNodeOptions::default())
    }

    pub fn with_options(options: SimNodeOptions) -> Result<Self> {
        let id = format!(
            "w{}n{}",
            std::process::id(),
            NEXT_NODE.fetch_add(1, Ordering::SeqCst)
        );
        let router_ns_name = format!("{id}-node");
        let cgroup_root = cgroup2_root()?.join(format!("weir-sim-{id}"));
        ip(&["netns", "add", &router_ns_name])?;
        // From here on, dropping the partial node cleans up what exists.
        let router = match NetNs::open(format!("/run/netns/{router_ns_name}")) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = ip(&["netns", "del", &router_ns_name]);
                return Err(e.into());
            }
        };
        let node = Self {
            inner: Arc::new(NodeInner {
                id,
                router_ns_name,
                router,
                cgroup_root,
                options,
            }),
            next_pod: AtomicU32::new(0),
        };
        node.setup_router()
            .context("setting up the simulated node's router namespace")?;
        std::fs::create_dir_all(&node.inner.cgroup_root)
            .with_context(|| format!("creating {}", node.inner.cgroup_root.display()))?;
        Ok(node)
    }

    fn setup_router(&self) -> Result<()> {
        let ns = self.inner.router_ns_name.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", ns, "addr", "add", "192.0.2.1/24", "dev", "br0"])?;
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            "br0",
            "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", "br0", "up"])
    }

    /// A unique prefix of every name this node creates (namespaces, links, cgroups).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The cgroup v2 directory under which this node's kubelet layout lives.
    pub fn cgroup_root(&self) -> &Path {
        &self.inner.cgroup_root
    }

    /// The router namespace, where "services" outside any pod live.
    pub fn router(&self) -> &NetNs {
        &self.inner.router
    }

    /// Gives the router a service address (inside SERVICE_NET_V4/V6), so that
    /// unredirected connections to it reach a real server the test runs there.
    pub fn add_service_address(&self, addr: std::net::IpAddr) -> Result<()> {
        let cidr = match addr {
            std::net::IpAddr::V4(v4) => format!("{v4}/32"),
            std::net::IpAddr::V6(v6) => format!("{v6}/128"),
        };
        let mut args = vec![
            "-n",
            self.inner.router_ns_name.as_str(),
            "addr",
            "add",
            &cidr,
            "dev",
            "lo",
        ];
        if addr.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)
    }

    /// Adds a pod: namespace, veth into the bridge, addresses, routes to the
    /// service ranges through the router, and its kubelet-style cgroup.
    pub fn add_pod(&self, name: &str) -> Result<SimPod> {
        self.add_pod_with(name, None)
    }

    /// Adds a pod whose UID the API server gave (its cgroup is named after it).
    pub fn add_pod_with_uid(&self, name: &str, uid: &str) -> Result<SimPod> {
        self.add_pod_with(name, Some(uid))
    }

    fn add_pod_with(&self, name: &str, uid: Option<&str>) -> Result<SimPod> {
        let index = self.next_pod.fetch_add(1, Ordering::SeqCst) + 2;
        anyhow::ensure!(index < 250, "a simulated node holds at most 248 pods");
        let uid = uid
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), index));
        let cgroup_dir = self.inner.cgroup_root.join(pod_cgroup_relpath(
            self.inner.options.driver,
            self.inner.options.qos,
            &uid,
        ));
        SimPod::create(Arc::clone(&self.inner), name, &uid, index, cgroup_dir)
    }
}

impl Drop for NodeInner {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.router_ns_name]) {
            eprintln!("simnode: {e}");
        }
        remove_cgroup_tree(&self.cgroup_root);
    }
}

/// Removes a cgroup directory and its (empty) descendants, deepest first.
pub(crate) fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    if dir.exists()
        && let Err(e) = std::fs::remove_dir(dir)
    {
        eprintln!("simnode: removing cgroup {}: {e}", dir.display());
    }
}
