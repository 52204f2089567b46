//! Another node as this node's pods see it: a network namespace ("that
//! node's host") with an address of its own, linked to this node's router
//! by a veth pair and routed both ways, so a pod of this node reaches it
//! through its node, as it would reach a pod on another node. A test serves
//! on its address from inside it. (Two whole simulated nodes, each with its
//! agent, are issue 14 item 2.)

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use weir::netns::NetNs;

use crate::cmd::{ip, run};
use crate::pod::spawn_in;
use crate::{PodProcess, SimNode, SimPod, wait};

/// The link between the two nodes and the other node's address on it.
pub const REMOTE_NET_V4: &str = "203.0.113.0/24";
const LOCAL_SIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const REMOTE_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

pub struct RemoteNode {
    ns_name: String,
    netns: NetNs,
    /// Its address, as this node's pods reach it.
    pub ip4: Ipv4Addr,
}

impl RemoteNode {
    /// Links a new namespace to `node`'s router, which forwards between its
    /// pods and the other node from then on.
    pub fn attach(node: &SimNode) -> Result<Self> {
        let ns_name = format!("{}-remote", node.id());
        ip(&["netns", "add", &ns_name])?;
        let netns = match NetNs::open(format!("/run/netns/{ns_name}")) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = ip(&["netns", "del", &ns_name]);
                return Err(e.into());
            }
        };
        let remote = Self {
            ns_name,
            netns,
            ip4: REMOTE_ADDR,
        };
        remote
            .wire(node)
            .context("linking the other node to the simulated node")?;
        Ok(remote)
    }

    fn wire(&self, node: &SimNode) -> Result<()> {
        let router = node.inner.router_ns_name.as_str();
        let ns = self.ns_name.as_str();
        let link = format!("{}-rmt", node.id());
        ip(&[
            "-n", router, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&[
            "-n",
            router,
            "addr",
            "add",
            &format!("{LOCAL_SIDE}/24"),
            "dev",
            &link,
        ])?;
        ip(&["-n", router, "link", "set", &link, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", self.ip4),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        // Back to the node's pods through the node, as a real network routes
        // a pod subnet to its node.
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            &LOCAL_SIDE.to_string(),
        ])?;
        // The router forwards between its bridge and the link (in its own
        // namespace only: the sysctl is per network namespace).
        run(
            "ip",
            &[
                "netns",
                "exec",
                router,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
        )
    }

    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// `sim-server http NAME` on `port` of its address (it answers
    /// `NAME from <peer address>`), once it accepts.
    pub fn start_http(&self, name: &str, port: u16) -> Result<(PodProcess, SocketAddr)> {
        let addr = SocketAddr::new(self.ip4.into(), port);
        let mut cmd = Command::new(crate::support::sim_server());
        cmd.args(["http", name, &addr.to_string()])
            .stdout(std::process::Stdio::null());
        let process = spawn_in(&self.netns, None, cmd)?;
        let listening = wait::until(Duration::from_secs(10), || {
            self.netns
                .run(move || std::net::TcpStream::connect(addr).is_ok())
                .unwrap_or(false)
        });
        anyhow::ensure!(listening, "sim-server did not listen on {addr}");
        Ok((process, addr))
    }

    /// Lets `pod` reach the other node, through its node (the simulated
    /// pods have no default route).
    pub fn route_from(&self, pod: &SimPod) -> Result<()> {
        ip(&[
            "-n",
            pod.netns_name(),
            "route",
            "add",
            REMOTE_NET_V4,
            "via",
            "192.0.2.1",
        ])
    }
}

impl Drop for RemoteNode {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        if let Err(e) = ip(&["netns", "del", &self.ns_name]) {
            eprintln!("simnode: {e}");
        }
    }
}
