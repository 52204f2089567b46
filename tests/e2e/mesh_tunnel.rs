//! The mesh between nodes (issue 14 item 3), on two simulated nodes whose
//! agents hold node CAs of one mesh root: an enrolled pod's connections to
//! an enrolled pod of the other node go through the mutual-TLS tunnel to
//! that pod's port 15008, and the far agent names the source by the
//! workload in the tunnel's certificate. A NetworkPolicy-style rule in the
//! destination pod lets its application port be reached only from weir's
//! in-pod address (127.0.0.6), so a request that went around the tunnel
//! would time out. A pod outside the mesh gets plain text, counted, unless
//! the tunnel is required; an agent of another mesh (a root nobody trusts)
//! gets nothing at all.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use weir::mesh::testing::{MeshRoot, NODE_CA_CERT_FILE, NODE_CA_KEY_FILE, TRUST_BUNDLE_FILE};
use weir_tests::agent::{
    AgentOptions, AgentProcess, MINIMAL_CONFIG, claiming_config, metric_sample,
};
use weir_tests::nft::AllowOnlyFrom;
use weir_tests::pins::PinRoot;
use weir_tests::support::{require_root, sim_client, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod};

/// Claimed by node A's agent: to the enrolled pod of node B.
const TO_MESH: &str = "198.51.100.50:80";
/// Claimed by node A's agent: to the pod of node B outside the mesh.
const TO_PLAIN: &str = "198.51.100.51:80";
const APP_PORT: u16 = 8080;
const ECHO_PORT: u16 = 9000;
const TRUST_DOMAIN: &str = "cluster.local";
/// Both nodes' pod networks (`PodNet::FIRST`, `PodNet::SECOND`).
const POD_CIDRS: &str = "192.0.2.0/24,203.0.113.0/25,2001:db8:1::/64,2001:db8:2::/64";

fn node_a_config(mesh: SocketAddr, plain: SocketAddr) -> String {
    claiming_config(&[("mesh", TO_MESH, mesh), ("plain", TO_PLAIN, plain)])
}

/// A node's mesh credentials: the root's certificate and a node CA it signed.
fn mesh_args(root: &MeshRoot, dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    root.write_mesh(dir, TRUST_DOMAIN, Duration::from_secs(3600))?;
    let path = |file: &str| dir.join(file).display().to_string();
    Ok(vec![
        "--mesh-trust-domain".into(),
        TRUST_DOMAIN.into(),
        "--mesh-trust-bundle".into(),
        path(TRUST_BUNDLE_FILE),
        "--mesh-node-ca-cert".into(),
        path(NODE_CA_CERT_FILE),
        "--mesh-node-ca-key".into(),
        path(NODE_CA_KEY_FILE),
        "--mesh-pod-cidrs".into(),
        POD_CIDRS.into(),
    ])
}

/// `weir run` on `node` for `pods`, in the node's own agent cgroup, with the mesh.
fn agent(
    node: &SimNode,
    config: &str,
    pods: &str,
    pins: &PinRoot,
    mesh: Vec<String>,
) -> Result<AgentProcess> {
    let options = AgentOptions {
        cgroup: Some(node.agent_cgroup()?),
        extra_args: mesh,
        ..AgentOptions::default()
    };
    let agent = AgentProcess::start_with_options(node, config, pods, pins.path(), options)?;
    agent.wait_ready(node, Duration::from_secs(20))?;
    Ok(agent)
}

fn run_client(pod: &SimPod, args: &[&str]) -> Result<(bool, String)> {
    let mut cmd = Command::new(sim_client());
    cmd.args(args);
    let out = pod.spawn(cmd)?.wait_output(Duration::from_secs(60))?;
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_owned()
    };
    Ok((out.status.success(), text))
}

fn gets(pod: &SimPod, target: &str, count: usize) -> Result<String> {
    let (ok, text) = run_client(pod, &["http", target, "svc.test", "/", &count.to_string()])?;
    anyhow::ensure!(ok, "sim-client: {text}");
    Ok(text)
}

/// A pods file entry of `pod` running as service account `sa`.
fn entry(pod: &SimPod, enrolled: bool, sa: &str) -> String {
    let enroll = if enrolled { "true" } else { "false" };
    format!(
        "{}    service_account: {sa}\n",
        pod.pods_file_entry(&[("weir.dev/enroll", enroll)])
    )
}

/// Node B's pods file: the enrolled server (`backend`) and the plain pod.
fn server_and_plain(t: &TwoNodes) -> String {
    format!(
        "pods:\n{}{}",
        entry(&t.server, true, "backend"),
        entry(&t.plain, false, "default")
    )
}

/// Connections node A's agent sent in plain text to pod addresses.
fn plaintext(agent: &AgentProcess, node: &SimNode) -> Result<f64> {
    sample(agent, node, "weir_mesh_plaintext_connections_total", &[])
}

struct TwoNodes {
    node_a: SimNode,
    node_b: SimNode,
    client: SimPod,
    server: SimPod,
    plain: SimPod,
    _processes: Vec<PodProcess>,
}

fn two_nodes() -> Result<TwoNodes> {
    let (node_a, node_b) = SimNode::linked_pair()?;
    let client = node_a.add_pod("client")?;
    let server = node_b.add_pod("server")?;
    let plain = node_b.add_pod("plain")?;
    let app = format!("0.0.0.0:{APP_PORT}");
    let echo = format!("0.0.0.0:{ECHO_PORT}");
    let processes = vec![
        client.start_pause()?,
        server.start_pause()?,
        plain.start_pause()?,
        server.start_server(&sim_server(), &["http", "server", &app], APP_PORT)?,
        server.start_server(&sim_server(), &["echo", &echo], ECHO_PORT)?,
        plain.start_server(&sim_server(), &["http", "plain", &app], APP_PORT)?,
    ];
    Ok(TwoNodes {
        node_a,
        node_b,
        client,
        server,
        plain,
        _processes: processes,
    })
}

/// The agents of both nodes: node B's with node CA of `root_b` serving
/// `pods_b` with `config_b`, node A's with one of `root_a` serving the client
/// and claiming `TO_MESH` (the server's application) and `TO_PLAIN` (the
/// plain pod's). The agents go first when dropped, then their pins and
/// certificates.
struct Agents {
    a: AgentProcess,
    b: AgentProcess,
    _dir: tempfile::TempDir,
    _pins: (PinRoot, PinRoot),
}

impl Agents {
    fn start(
        t: &TwoNodes,
        (root_a, root_b): (&MeshRoot, &MeshRoot),
        (config_b, pods_b): (&str, &str),
        extra_args: &[&str],
    ) -> Result<Self> {
        let (pins_a, pins_b) = (PinRoot::new(), PinRoot::new());
        let dir = tempfile::tempdir()?;
        let with_extra = |mut args: Vec<String>| {
            args.extend(extra_args.iter().map(|a| a.to_string()));
            args
        };
        let b = agent(
            &t.node_b,
            config_b,
            pods_b,
            &pins_b,
            with_extra(mesh_args(root_b, &dir.path().join("b"))?),
        )?;
        let to_app = |pod: &SimPod| SocketAddr::new(pod.ip4.into(), APP_PORT);
        let a = agent(
            &t.node_a,
            &node_a_config(to_app(&t.server), to_app(&t.plain)),
            // The client's workload is not its pod's name: node B learns it
            // only from the stream's baggage.
            &format!(
                "pods:\n{}    workload: storefront\n",
                entry(&t.client, true, "frontend")
            ),
            &pins_a,
            with_extra(mesh_args(root_a, &dir.path().join("a"))?),
        )?;
        Ok(Self {
            a,
            b,
            _dir: dir,
            _pins: (pins_a, pins_b),
        })
    }

    fn logs(&self) -> String {
        format!("node A:\n{}\nnode B:\n{}", self.a.log(), self.b.log())
    }
}

/// A sample of the agent's scrape page, 0 when absent (a counter not yet
/// counted); `labels` empty for a family without labels.
fn sample(
    agent: &AgentProcess,
    node: &SimNode,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<f64> {
    let (_, metrics) = agent.admin_get(node, "/stats/prometheus")?;
    let unlabelled = || {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    Ok(if labels.is_empty() {
        unlabelled()
    } else {
        metric_sample(&metrics, name, labels)
    }
    .unwrap_or(0.0))
}

#[test]
fn enrolled_pods_of_two_nodes_talk_through_the_mutual_tls_tunnel() -> Result<()> {
    require_root();
    let t = two_nodes()?;
    let root = MeshRoot::generate()?;
    // The server's application answers weir's in-pod address only.
    let _policy = AllowOnlyFrom::install(&t.server, APP_PORT, "127.0.0.6".parse()?)?;
    let pods_b = server_and_plain(&t);
    let agents = Agents::start(&t, (&root, &root), (MINIMAL_CONFIG, &pods_b), &[])?;
    let logs = || agents.logs();

    // HTTP to the enrolled pod of node B: through the tunnel, delivered by
    // node B's agent from 127.0.0.6 (the only address the policy admits).
    assert_eq!(
        gets(&t.client, TO_MESH, 5)?,
        "5 200 server from 127.0.0.6",
        "{}",
        logs()
    );
    // Node B names the source by the tunnel's certificate: the client's
    // namespace and service account; its workload by the stream's baggage,
    // believed within that namespace (a pod name does not cross nodes).
    let inbound = sample(
        &agents.b,
        &t.node_b,
        "weir_intercept_requests_total",
        &[
            ("direction", "inbound"),
            ("source_namespace", "default"),
            ("destination_pod", "server"),
            ("response_code_class", "2xx"),
            // Istio's names of the same facts, for Kiali-style queries.
            ("reporter", "destination"),
            ("source_workload_namespace", "default"),
            ("source_workload", "storefront"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/frontend",
            ),
            ("destination_workload", "server"),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/default/sa/backend",
            ),
            ("connection_security_policy", "mutual_tls"),
        ],
    )?;
    assert_eq!(inbound, 5.0, "{}", logs());
    // Each of them timed, by the same source and destination (Istio's
    // istio_request_duration_milliseconds).
    let timed = sample(
        &agents.b,
        &t.node_b,
        "weir_intercept_request_duration_seconds_count",
        &[
            ("reporter", "destination"),
            ("source_workload", "storefront"),
            ("destination_workload", "server"),
        ],
    )?;
    assert_eq!(timed, 5.0, "{}", logs());
    let tunnels = |agent: &AgentProcess, node: &SimNode, family: &str, direction: &str| {
        sample(agent, node, family, &[("direction", direction)])
    };
    let connections = "weir_mesh_tunnel_connections_total";
    assert_eq!(tunnels(&agents.a, &t.node_a, connections, "outbound")?, 1.0);
    assert_eq!(tunnels(&agents.b, &t.node_b, connections, "inbound")?, 1.0);

    // Opaque TCP (a 1 MiB echo that half-closes) to the same pod: another
    // stream of the same tunnel connection.
    let echo = SocketAddr::new(t.server.ip4.into(), ECHO_PORT).to_string();
    let (ok, text) = run_client(&t.client, &["echo", &echo, "1048576"])?;
    assert!(ok && text == "identical", "{text}\n{}", logs());
    assert_eq!(tunnels(&agents.a, &t.node_a, connections, "outbound")?, 1.0);
    assert!(
        tunnels(
            &agents.a,
            &t.node_a,
            "weir_mesh_tunnel_streams_total",
            "outbound"
        )? >= 2.0,
        "{}",
        logs()
    );

    // A pod outside the mesh refuses port 15008: plain text, from the
    // client's own address, counted.
    assert_eq!(
        gets(&t.client, TO_PLAIN, 3)?,
        format!("3 200 plain from {}", t.client.ip4)
    );
    assert!(plaintext(&agents.a, &t.node_a)? >= 1.0);
    drop(agents);
    Ok(())
}

#[test]
fn an_agent_of_another_mesh_gets_no_byte_not_even_in_plain_text() -> Result<()> {
    require_root();
    let t = two_nodes()?;
    let (ours, theirs) = (MeshRoot::generate()?, MeshRoot::generate()?);
    let pods_b = format!("pods:\n{}", entry(&t.server, true, "backend"));
    let agents = Agents::start(&t, (&ours, &theirs), (MINIMAL_CONFIG, &pods_b), &[])?;
    let logs = || agents.logs();
    // Envoy's answer to an upstream it could not connect to.
    let answers = gets(&t.client, TO_MESH, 2)?;
    assert!(answers.starts_with("2 503 "), "{answers}\n{}", logs());
    assert!(
        sample(
            &agents.a,
            &t.node_a,
            "weir_mesh_tunnel_failures_total",
            &[("reason", "tls")]
        )? >= 1.0,
        "{}",
        logs()
    );
    assert_eq!(plaintext(&agents.a, &t.node_a)?, 0.0);
    // Nothing reached the application: node B served no request.
    assert_eq!(
        sample(
            &agents.b,
            &t.node_b,
            "weir_intercept_requests_total",
            &[("direction", "inbound"), ("destination_pod", "server")]
        )?,
        0.0,
        "{}",
        logs()
    );
    drop(agents);
    Ok(())
}

/// `--mesh-require-tunnel` (Istio's `ISTIO_MUTUAL`): a pod address that
/// refuses port 15008 gets no plain text, so a forged reset cannot make a
/// node fall back; the tunnel to an enrolled pod works as ever.
#[test]
fn a_required_tunnel_never_falls_back_to_plain_text() -> Result<()> {
    require_root();
    let t = two_nodes()?;
    let root = MeshRoot::generate()?;
    let pods_b = server_and_plain(&t);
    let agents = Agents::start(
        &t,
        (&root, &root),
        (MINIMAL_CONFIG, &pods_b),
        &["--mesh-require-tunnel"],
    )?;
    let logs = || agents.logs();
    assert_eq!(
        gets(&t.client, TO_MESH, 2)?,
        "2 200 server from 127.0.0.6",
        "{}",
        logs()
    );
    // Twice: the second is not let through by a memory of the first refusal.
    let answers = gets(&t.client, TO_PLAIN, 2)?;
    assert!(answers.starts_with("2 503 "), "{answers}\n{}", logs());
    let failures = sample(
        &agents.a,
        &t.node_a,
        "weir_mesh_tunnel_failures_total",
        &[("reason", "no_tunnel")],
    )?;
    assert!(failures >= 2.0, "{failures}\n{}", logs());
    assert_eq!(plaintext(&agents.a, &t.node_a)?, 0.0);
    drop(agents);
    Ok(())
}

/// Node B's pod `server` (service account `backend`) takes from
/// `frontend` only GETs under `/allowed` (Istio's AuthorizationPolicy).
const POLICY: &str = r#"
authorization_policies:
  - name: server
    namespace: default
    service_account: backend
    rules:
      - from: [{ source: { principals: ["cluster.local/ns/default/sa/frontend"] } }]
        to: [{ operation: { methods: ["GET"], paths: ["/allowed*"] } }]
"#;

#[test]
fn authorization_policies_decide_by_the_identity_the_tunnel_carries() -> Result<()> {
    require_root();
    let t = two_nodes()?;
    let root = MeshRoot::generate()?;
    // A pod of node B, enrolled, running as the allowed workload: its
    // requests take the inbound side (same-node delivery would skip it).
    let neighbour = t.node_b.add_pod("neighbour")?;
    let _pause = neighbour.start_pause()?;
    let pods_b = format!(
        "pods:\n{}{}{}",
        entry(&t.server, true, "backend"),
        entry(&t.plain, false, "default"),
        entry(&neighbour, true, "frontend")
    );
    let config_b = format!("{MINIMAL_CONFIG}{POLICY}");
    let agents = Agents::start(&t, (&root, &root), (&config_b, &pods_b), &[])?;
    let logs = || agents.logs();
    let get = |pod: &SimPod, target: &str, path: &str| {
        run_client(pod, &["http", target, "svc.test", path, "1"]).map(|(_, text)| text)
    };
    // The client's workload, from its tunnel certificate: allowed paths only.
    assert_eq!(
        get(&t.client, TO_MESH, "/allowed/orders")?,
        "1 200 server from 127.0.0.6",
        "{}",
        logs()
    );
    assert_eq!(
        get(&t.client, TO_MESH, "/admin")?,
        "1 403 RBAC: access denied"
    );
    // A pod outside the mesh is not authenticated: denied even where the
    // client is allowed.
    let server_app = SocketAddr::new(t.server.ip4.into(), APP_PORT).to_string();
    assert_eq!(
        get(&t.plain, &server_app, "/allowed/orders")?,
        "1 403 RBAC: access denied"
    );
    // On the same node, the eBPF side names the neighbour; it runs as the
    // allowed workload.
    assert_eq!(
        get(&neighbour, &server_app, "/allowed/orders")?,
        "1 200 server from 127.0.0.6",
        "{}",
        logs()
    );
    assert_eq!(
        get(&neighbour, &server_app, "/admin")?,
        "1 403 RBAC: access denied"
    );
    // Opaque TCP matches no rule about HTTP requests: closed, no echo.
    let echo = SocketAddr::new(t.server.ip4.into(), ECHO_PORT).to_string();
    let (_, text) = run_client(&t.client, &["echo", &echo, "1024"])?;
    assert_ne!(text, "identical");
    let denied = |principal: &str, protocol: &str| {
        sample(
            &agents.b,
            &t.node_b,
            "weir_intercept_authz_denied_total",
            &[
                ("source_principal", principal),
                ("destination_pod", "server"),
                ("protocol", protocol),
            ],
        )
    };
    let frontend = "cluster.local/ns/default/sa/frontend";
    assert_eq!(denied(frontend, "http")?, 2.0, "{}", logs());
    assert_eq!(denied(frontend, "tcp")?, 1.0);
    assert_eq!(denied("unknown", "http")?, 1.0);
    drop(agents);
    Ok(())
}

#[test]
fn workload_certificates_rotate_and_open_connections_outlive_them() -> Result<()> {
    require_root();
    let t = two_nodes()?;
    // A second enrolled pod of node B: a destination of its own, so a
    // tunnel connection of its own, opened after the first certificates expired.
    let later = t.node_b.add_pod("later")?;
    let app = format!("0.0.0.0:{APP_PORT}");
    let _later = (
        later.start_pause()?,
        later.start_server(&sim_server(), &["http", "later", &app], APP_PORT)?,
    );
    let root = MeshRoot::generate()?;
    let pods_b = format!(
        "pods:\n{}{}",
        entry(&t.server, true, "backend"),
        entry(&later, true, "backend")
    );
    let ttl = Duration::from_secs(3);
    let agents = Agents::start(
        &t,
        (&root, &root),
        (MINIMAL_CONFIG, &pods_b),
        &["--mesh-workload-cert-ttl", "3s"],
    )?;
    let logs = || agents.logs();
    let outbound_tunnels = || {
        sample(
            &agents.a,
            &t.node_a,
            "weir_mesh_tunnel_connections_total",
            &[("direction", "outbound")],
        )
    };
    assert_eq!(
        gets(&t.client, TO_MESH, 1)?,
        "1 200 server from 127.0.0.6",
        "{}",
        logs()
    );
    assert_eq!(outbound_tunnels()?, 1.0);
    // Time itself is what this waits for: past the first certificates' end.
    std::thread::sleep(ttl + Duration::from_secs(1));
    // The tunnel connection made with them carries on.
    assert_eq!(
        gets(&t.client, TO_MESH, 1)?,
        "1 200 server from 127.0.0.6",
        "{}",
        logs()
    );
    assert_eq!(outbound_tunnels()?, 1.0, "{}", logs());
    // A new one handshakes with reissued certificates (an expired one on
    // either side would fail it: a 503 here).
    let later_app = SocketAddr::new(later.ip4.into(), APP_PORT).to_string();
    assert_eq!(
        gets(&t.client, &later_app, 1)?,
        "1 200 later from 127.0.0.6",
        "{}",
        logs()
    );
    assert_eq!(outbound_tunnels()?, 2.0, "{}", logs());
    drop(agents);
    Ok(())
}
