//! The node: a router namespace with a bridge every pod plugs into, and a
//! private cgroup subtree laid out like the kubelet's. Two nodes with pod
//! networks of their own can be linked ([`SimNode::link`]): their routers
//! then route each other's pods, as a cluster network does.

use std::net::{Ipv4Addr, Ipv6Addr};
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
    /// The node's pod network.
    pub net: PodNet,
}

impl Default for SimNodeOptions {
    fn default() -> Self {
        Self {
            driver: CgroupDriver::Cgroupfs,
            qos: QosClass::BestEffort,
            net: PodNet::FIRST,
        }
    }
}

/// A node's pod network: the subnets of its bridge, whose first address is
/// the node's (the pods' gateway), and where pod N gets address N (counted
/// from the subnet's start). Two plans, from documentation ranges, so two
/// nodes can be linked, and a large one for a node of hundreds of pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodNet {
    /// The IPv4 subnet's first address.
    v4: u32,
    v4_len: u8,
    v6: u16,
    /// Pod indexes stay below this (the subnet's size).
    pub(crate) end: u32,
}

impl PodNet {
    /// 192.0.2.0/24 and 2001:db8:1::/64 (the node of most tests).
    pub const FIRST: PodNet = PodNet {
        v4: u32::from_be_bytes([192, 0, 2, 0]),
        v4_len: 24,
        v6: 1,
        end: 250,
    };
    /// 203.0.113.0/25 and 2001:db8:2::/64, for a second node.
    pub const SECOND: PodNet = PodNet {
        v4: u32::from_be_bytes([203, 0, 113, 0]),
        v4_len: 25,
        v6: 2,
        end: 127,
    };
    /// 198.18.0.0/22 (RFC 2544's benchmarking range) and 2001:db8:3::/64:
    /// 1,020 pods, for `cargo xtask bench node`. Never linked to another node.
    pub const LARGE: PodNet = PodNet {
        v4: u32::from_be_bytes([198, 18, 0, 0]),
        v4_len: 22,
        v6: 3,
        end: 1022,
    };
    /// The plans two nodes can be linked with ([`SimNode::link`]).
    const LINKABLE: [PodNet; 2] = [PodNet::FIRST, PodNet::SECOND];

    /// Address `index` (1: the node's own, the pods' gateway).
    pub fn v4(&self, index: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.v4 + index)
    }

    pub fn v6(&self, index: u32) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, self.v6, 0, 0, 0, 0, index as u16)
    }

    pub fn cidr_v4(&self) -> String {
        format!("{}/{}", self.v4(0), self.v4_len)
    }

    pub fn cidr_v6(&self) -> String {
        format!("{}/64", self.v6(0))
    }

    /// How many pods a node with this network holds.
    pub fn capacity(&self) -> u32 {
        self.end - 2
    }

    /// The other plans: the pod networks a linked node may have (none for
    /// a plan that is never linked).
    pub(crate) fn others(&self) -> impl Iterator<Item = PodNet> + '_ {
        let linkable = Self::LINKABLE.contains(self);
        Self::LINKABLE
            .into_iter()
            .filter(move |n| linkable && n != self)
    }
}

/// The link between two nodes' routers (203.0.113.128/30, 2001:db8:ff::/64).
const LINK_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 129),
    Ipv4Addr::new(203, 0, 113, 130),
];
const LINK_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2),
];

/// The router bridge's MAC (locally administered, unicast); every node's
/// bridge is in its own namespace, so they may share it.
const BRIDGE_MAC: &str = "02:77:65:69:72:01";

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
        let net = self.inner.options.net;
        let len = net.cidr_v4();
        let len = len.split('/').nth(1).unwrap_or("24");
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        // A fixed address: a bridge without one takes the lowest of its
        // ports' and changes it as pods come and go, and pods that cached
        // the gateway's old one lose their way to it.
        ip(&[
            "-n", ns, "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge",
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/{len}", net.v4(1)),
            "dev",
            "br0",
        ])?;
        ip(&[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("{}/64", net.v6(1)),
            "dev",
            "br0",
            "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", "br0", "up"])
    }

    /// The node's pod network.
    pub fn net(&self) -> PodNet {
        self.inner.options.net
    }

    /// Two nodes, `PodNet::FIRST` and `PodNet::SECOND`, linked ([`SimNode::link`]).
    pub fn linked_pair() -> Result<(SimNode, SimNode)> {
        let first = SimNode::new()?;
        let second = SimNode::with_options(SimNodeOptions {
            net: PodNet::SECOND,
            ..SimNodeOptions::default()
        })?;
        first.link(&second)?;
        Ok((first, second))
    }

    /// Links this node's router to `other`'s (a node with the other pod
    /// network) and routes each node's pods through the other's router, so
    /// a pod of one reaches a pod of the other as across a cluster network.
    /// The link goes with either node.
    pub fn link(&self, other: &SimNode) -> Result<()> {
        let (a, b) = (&self.inner, &other.inner);
        anyhow::ensure!(
            a.options.net != b.options.net,
            "two linked nodes need pod networks of their own"
        );
        anyhow::ensure!(
            PodNet::LINKABLE.contains(&a.options.net) && PodNet::LINKABLE.contains(&b.options.net),
            "only PodNet::FIRST and PodNet::SECOND nodes are linked"
        );
        let (a_dev, b_dev) = (format!("{}-x", a.id), format!("{}-x", b.id));
        let (a_ns, b_ns) = (a.router_ns_name.as_str(), b.router_ns_name.as_str());
        ip(&[
            "-n", a_ns, "link", "add", &a_dev, "type", "veth", "peer", "name", &b_dev, "netns",
            b_ns,
        ])?;
        for (ns, dev, side, other_net, via) in [
            (a_ns, &a_dev, 0, b.options.net, 1),
            (b_ns, &b_dev, 1, a.options.net, 0),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/30", LINK_V4[side]),
                "dev",
                dev,
            ])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{}/64", LINK_V6[side]),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                &other_net.cidr_v4(),
                "via",
                &LINK_V4[via].to_string(),
            ])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "route",
                "add",
                &other_net.cidr_v6(),
                "via",
                &LINK_V6[via].to_string(),
            ])?;
            // Forwarding in the router's own namespace only (the sysctls
            // are per network namespace).
            for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                crate::cmd::run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", sysctl])?;
            }
        }
        Ok(())
    }

    /// A cgroup v2 directory of this node's own for an agent process
    /// (`AgentOptions::cgroup`), beside the pods' and removed with the node:
    /// two agents must not share one.
    pub fn agent_cgroup(&self) -> Result<PathBuf> {
        let dir = self.inner.cgroup_root.join("weir-agent");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
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

    /// The name `ip netns` knows the router namespace by (where the agent's
    /// admin listener is).
    pub fn router_ns_name(&self) -> &str {
        &self.inner.router_ns_name
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
        let end = self.inner.options.net.end;
        anyhow::ensure!(
            index < end,
            "a simulated node with {} holds at most {} pods",
            self.inner.options.net.cidr_v4(),
            end - 2
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_network_plans() {
        assert_eq!(PodNet::FIRST.v4(5), Ipv4Addr::new(192, 0, 2, 5));
        assert_eq!(PodNet::FIRST.cidr_v4(), "192.0.2.0/24");
        assert_eq!(PodNet::SECOND.cidr_v4(), "203.0.113.0/25");
        assert_eq!(PodNet::FIRST.capacity(), 248);
        assert_eq!(PodNet::LARGE.cidr_v4(), "198.18.0.0/22");
        assert_eq!(PodNet::LARGE.v4(300), Ipv4Addr::new(198, 18, 1, 44));
        assert_eq!(PodNet::LARGE.v4(1021), Ipv4Addr::new(198, 18, 3, 253));
        assert_eq!(PodNet::LARGE.cidr_v6(), "2001:db8:3::/64");
        assert_eq!(
            PodNet::LARGE.v6(300),
            "2001:db8:3::12c".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(PodNet::LARGE.capacity(), 1020);
        // FIRST and SECOND route each other's pods; LARGE is never linked.
        assert_eq!(PodNet::FIRST.others().collect::<Vec<_>>(), [PodNet::SECOND]);
        assert_eq!(PodNet::LARGE.others().count(), 0);
    }
}
