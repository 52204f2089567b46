//! Two simulated nodes (issue 14 item 2), each with its own `weir run` in
//! its own host network namespace and its own pods, their routers linked
//! and routing each other's pod networks, as root. A pod of node A calls
//! through its agent: to an enrolled pod of node B, the request crosses the
//! nodes from the pod's own address and node B's agent takes it inbound and
//! delivers it (from 127.0.0.6), with node A's source header gone (identity
//! across nodes is not carried yet: node B counts the source as `unknown`);
//! to a pod of node B outside the mesh, which sees the calling pod's address.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use weir_tests::agent::{
    AgentOptions, AgentProcess, MINIMAL_CONFIG, claiming_config, metric_sample,
};
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_client, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod};

/// Claimed by node A's agent: to the enrolled pod of node B.
const TO_MESH: &str = "198.51.100.50:80";
/// Claimed by node A's agent: to the pod of node B outside the mesh.
const TO_PLAIN: &str = "198.51.100.51:80";
const APP_PORT: u16 = 8080;

fn node_a_config(mesh: SocketAddr, plain: SocketAddr) -> String {
    claiming_config(&[("mesh", TO_MESH, mesh), ("plain", TO_PLAIN, plain)])
}

/// `weir run` on `node` for `pods`, in the node's own agent cgroup.
fn agent(node: &SimNode, config: &str, pods: &str, pins: &PinRoot) -> Result<AgentProcess> {
    let options = AgentOptions {
        cgroup: Some(node.agent_cgroup()?),
        ..AgentOptions::default()
    };
    let agent = AgentProcess::start_with_options(node, config, pods, pins.path(), options)?;
    agent.wait_ready(node, Duration::from_secs(20))?;
    Ok(agent)
}

fn gets(pod: &SimPod, target: &str, count: usize) -> Result<String> {
    let mut cmd = Command::new(sim_client());
    cmd.args(["http", target, "svc.test", "/", &count.to_string()]);
    let out = pod.spawn(cmd)?.wait_output(Duration::from_secs(60))?;
    anyhow::ensure!(
        out.status.success(),
        "sim-client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_pods_request_crosses_to_the_other_nodes_agent_from_the_pods_address() -> Result<()> {
    require_root();
    let (pins_a, pins_b) = (PinRoot::new(), PinRoot::new());
    let (node_a, node_b) = SimNode::linked_pair()?;
    let client = node_a.add_pod("client")?;
    let server = node_b.add_pod("server")?;
    let plain = node_b.add_pod("plain")?;
    let app = format!("0.0.0.0:{APP_PORT}");
    let _processes: Vec<PodProcess> = vec![
        client.start_pause()?,
        server.start_pause()?,
        plain.start_pause()?,
        server.start_server(&sim_server(), &["http", "server", &app], APP_PORT)?,
        plain.start_server(&sim_server(), &["http", "plain", &app], APP_PORT)?,
    ];
    let enroll = [("weir.dev/enroll", "true")];
    let (mesh, outside) = (
        SocketAddr::new(server.ip4.into(), APP_PORT),
        SocketAddr::new(plain.ip4.into(), APP_PORT),
    );
    let agent_b = agent(
        &node_b,
        MINIMAL_CONFIG,
        &format!(
            "pods:\n{}{}",
            server.pods_file_entry(&enroll),
            plain.pods_file_entry(&[("weir.dev/enroll", "false")])
        ),
        &pins_b,
    )?;
    let agent_a = agent(
        &node_a,
        &node_a_config(mesh, outside),
        &format!("pods:\n{}", client.pods_file_entry(&enroll)),
        &pins_a,
    )?;

    // To the enrolled pod of node B: node B's agent delivers it.
    assert_eq!(
        gets(&client, TO_MESH, 5)?,
        "5 200 server from 127.0.0.6",
        "node A's log:\n{}\nnode B's log:\n{}",
        agent_a.log(),
        agent_b.log()
    );
    // Node A's source header (a token only node A believes) never reaches
    // the application; node B counts the request with an unknown source.
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-i", "--max-time", "10"])
        .arg(format!("http://{TO_MESH}/"));
    let out = client.spawn(curl)?.wait_output(Duration::from_secs(20))?;
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        out.status.success() && head.contains("x-app-saw-weir-headers: \r\n"),
        "{head}"
    );
    let (_, metrics_b) = agent_b.admin_get(&node_b, "/stats/prometheus")?;
    let inbound = metric_sample(
        &metrics_b,
        "weir_intercept_requests_total",
        &[
            ("direction", "inbound"),
            ("source_pod", "unknown"),
            ("destination_pod", "server"),
            ("response_code_class", "2xx"),
        ],
    );
    assert_eq!(inbound, Some(6.0), "node B's metrics:\n{metrics_b}");
    let (_, metrics_a) = agent_a.admin_get(&node_a, "/stats/prometheus")?;
    let outbound = metric_sample(
        &metrics_a,
        "weir_intercept_requests_total",
        &[
            ("direction", "outbound"),
            ("source_pod", "client"),
            ("destination", "mesh"),
            ("response_code_class", "2xx"),
        ],
    );
    assert_eq!(outbound, Some(6.0), "node A's metrics:\n{metrics_a}");

    // To node B's pod outside the mesh: it sees the client pod's address.
    assert_eq!(
        gets(&client, TO_PLAIN, 3)?,
        format!("3 200 plain from {}", client.ip4)
    );
    drop((agent_a, agent_b));
    Ok(())
}
