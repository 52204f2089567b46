//! Outbound from the pod (issue 14 item 1), on a simulated node served by
//! the real `weir run`, as root: an enrolled pod's upstream connections are
//! opened inside its own network namespace, so a destination that is not an
//! enrolled pod (a pod of this node outside the mesh, a pod on another
//! node) sees the pod's address and not the node's, and an nftables rule
//! in the destination's namespace that admits only that pod's address
//! (a NetworkPolicy's effect) lets weir's connections through; the
//! connections are pooled per pod, never carrying another pod's request;
//! and an un-enrolled pod's pooled connections close at once, its next
//! request on a connection it kept open to weir answered 503 and counted.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_tests::agent::{AgentProcess, metric_sample};
use weir_tests::nft::AllowOnlyFrom;
use weir_tests::pins::PinRoot;
use weir_tests::scenario::{loop_lines, start_loop};
use weir_tests::service::ServiceServer;
use weir_tests::support::{require_root, sim_client, sim_server};
use weir_tests::{PodNet, PodProcess, SimNode, SimNodeOptions, SimPod, wait};

/// Claimed by weir, routed to the destination pod's application.
const TO_POD: &str = "198.51.100.30:80";
/// Claimed by weir, routed to the other node's server.
const TO_REMOTE: &str = "198.51.100.31:80";
/// Claimed by weir, routed to the destination pod too, by a cluster of its own.
const TO_POD_AGAIN: &str = "198.51.100.32:80";
const APP_PORT: u16 = 8080;
const OPAQUE_PORT: u16 = 9000;

/// Three listeners claiming service addresses, each with its own cluster;
/// anything else passes through (`ALLOW_ANY`, the default).
fn config(pod_app: SocketAddr, remote_app: SocketAddr) -> String {
    let listener = |name: &str, address: &str| {
        format!(
            r#"  - name: {name}
    address: {address}
    bind_to_port: false
    virtual_hosts:
      - name: {name}
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            route: {{ cluster: {name} }}
"#
        )
    };
    let cluster = |name: &str, to: SocketAddr| {
        format!(
            "  - name: {name}\n    connect_timeout: 0.5s\n    endpoints: [{{ address: \"{}\", port: {} }}]\n",
            to.ip(),
            to.port()
        )
    };
    format!(
        "admin:\n  address: \"{{admin}}\"\nprotocol_detection_timeout: 5s\nlisteners:\n{}{}{}clusters:\n{}{}{}",
        listener("dest", TO_POD),
        listener("remote", TO_REMOTE),
        listener("dest_again", TO_POD_AGAIN),
        cluster("dest", pod_app),
        cluster("remote", remote_app),
        cluster("dest_again", pod_app),
    )
}

/// A node with two enrolled client pods, a destination pod outside the
/// mesh (HTTP on :8080 answering `dest from <peer>`, opaque TCP on :9000
/// answering `app at ... saw <peer>`), and a pod on another node
/// (`remote from <peer>`, no agent there), reached through both nodes'
/// routers.
struct Setup {
    agent: AgentProcess,
    _servers: Vec<PodProcess>,
    _opaque: ServiceServer,
    a: SimPod,
    b: SimPod,
    dest: SimPod,
    _remote: SimPod,
    node: SimNode,
    _other_node: SimNode,
    _pins: PinRoot,
}

impl Setup {
    fn start() -> Result<Self> {
        let pins = PinRoot::new();
        let node = SimNode::new()?;
        let a = node.add_pod("client-a")?;
        let b = node.add_pod("client-b")?;
        let dest = node.add_pod("dest")?;
        let other_node = SimNode::with_options(SimNodeOptions {
            net: PodNet::SECOND,
            ..SimNodeOptions::default()
        })?;
        node.link(&other_node)?;
        let remote = other_node.add_pod("remote")?;
        let mut servers: Vec<PodProcess> = [&a, &b, &dest, &remote]
            .iter()
            .map(|p| p.start_pause())
            .collect::<Result<_>>()?;
        let app = format!("0.0.0.0:{APP_PORT}");
        servers.push(dest.start_server(&sim_server(), &["http", "dest", &app], APP_PORT)?);
        servers.push(remote.start_server(&sim_server(), &["http", "remote", &app], APP_PORT)?);
        let remote_app = SocketAddr::new(remote.ip4.into(), APP_PORT);
        let opaque = ServiceServer::start_app(dest.netns(), ([0, 0, 0, 0], OPAQUE_PORT).into())?;
        let enroll = [("weir.dev/enroll", "true")];
        let pods = format!(
            "pods:\n{}{}{}",
            a.pods_file_entry(&enroll),
            b.pods_file_entry(&enroll),
            dest.pods_file_entry(&[("weir.dev/enroll", "false")]),
        );
        let pod_app = SocketAddr::new(dest.ip4.into(), APP_PORT);
        let agent = AgentProcess::start(&node, &config(pod_app, remote_app), &pods, pins.path())?;
        agent.wait_ready(&node, Duration::from_secs(20))?;
        Ok(Self {
            agent,
            _servers: servers,
            _opaque: opaque,
            a,
            b,
            dest,
            _remote: remote,
            node,
            _other_node: other_node,
            _pins: pins,
        })
    }

    fn metrics(&self) -> Result<String> {
        let (status, text) = self.agent.admin_get(&self.node, "/stats/prometheus")?;
        anyhow::ensure!(status == 200, "metrics answered {status}");
        Ok(text)
    }

    fn cluster_metric(&self, name: &str, cluster: &str) -> Option<f64> {
        let text = self.metrics().ok()?;
        metric_sample(&text, name, &[("cluster", cluster)])
    }
}

/// `count` GETs of `target` from `pod` on one keep-alive connection: the
/// `sim-client http` tally (`N STATUS BODY` lines).
fn gets(pod: &SimPod, target: &str, count: usize) -> Result<PodProcess> {
    let mut cmd = Command::new(sim_client());
    cmd.args(["http", target, "dest.test", "/", &count.to_string()]);
    pod.spawn(cmd)
}

fn tally(process: PodProcess, agent: &AgentProcess) -> Result<String> {
    let out = process.wait_output(Duration::from_secs(60))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "sim-client failed: {}\n{text}\nweir's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    Ok(text)
}

#[test]
fn destinations_outside_the_mesh_see_the_pods_address_and_policies_hold() -> Result<()> {
    require_root();
    let s = Setup::start()?;
    let (a, b) = (&s.a, &s.b);

    // A pod of this node outside the mesh, through a cluster: the
    // application sees pod A's address, not the node's 192.0.2.1.
    let seen = tally(gets(a, TO_POD, 3)?, &s.agent)?;
    assert_eq!(seen.trim(), format!("3 200 dest from {}", a.ip4), "{seen}");

    // A pod on another node, reached through both nodes' routers.
    let seen = tally(gets(a, TO_REMOTE, 3)?, &s.agent)?;
    assert_eq!(
        seen.trim(),
        format!("3 200 remote from {}", a.ip4),
        "{seen}"
    );

    // ALLOW_ANY passthrough: HTTP to the pod's own address (no listener
    // claims it), and opaque TCP.
    let direct = SocketAddr::new(s.dest.ip4.into(), APP_PORT).to_string();
    let seen = tally(gets(b, &direct, 2)?, &s.agent)?;
    assert_eq!(seen.trim(), format!("2 200 dest from {}", b.ip4), "{seen}");
    let mut cmd = Command::new(sim_client());
    cmd.args([
        &SocketAddr::new(s.dest.ip4.into(), OPAQUE_PORT).to_string(),
        "opaque bytes",
    ]);
    let out = b.spawn(cmd)?.wait_output(Duration::from_secs(30))?;
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.contains(&format!(" saw {}:", b.ip4)),
        "the opaque server saw: {reply} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every one of them went through weir, counted as pod A's or B's.
    let metrics = s.metrics()?;
    for (pod, destination) in [("client-a", "dest"), ("client-a", "remote")] {
        let counted = metric_sample(
            &metrics,
            "weir_intercept_requests_total",
            &[
                ("direction", "outbound"),
                ("source_pod", pod),
                ("destination", destination),
                ("response_code_class", "2xx"),
            ],
        );
        assert_eq!(counted, Some(3.0), "{pod} -> {destination}:\n{metrics}");
    }

    // A NetworkPolicy's effect: the destination admits TCP to its
    // application only from pod A. Through weir, pod A gets in; pod B does
    // not (its connect times out: weir answers 503), on new connections as
    // on pooled ones (pod B's, opened before the rule, would pass: closed
    // first by a request that finds no pooled connection of its own).
    let _policy = AllowOnlyFrom::install(&s.dest, APP_PORT, a.ip4)?;
    let seen = tally(gets(a, TO_POD_AGAIN, 3)?, &s.agent)?;
    assert_eq!(seen.trim(), format!("3 200 dest from {}", a.ip4), "{seen}");
    let out = gets(b, TO_POD_AGAIN, 1)?.wait_output(Duration::from_secs(30))?;
    let refused = String::from_utf8_lossy(&out.stdout);
    assert!(
        refused.trim().starts_with("1 503 "),
        "pod B passed a policy that admits only pod A: {refused}"
    );
    Ok(())
}

#[test]
fn pools_are_per_pod_and_an_unenrolled_pods_connections_close() -> Result<()> {
    require_root();
    let s = Setup::start()?;
    let (a, b) = (&s.a, &s.b);

    // Both pods at once through the same cluster endpoint, on keep-alive
    // connections: weir pools what they release. Every answer names the
    // pod that asked: a connection opened from one pod's namespace never
    // carried the other's request.
    const EACH: usize = 200;
    let (from_a, from_b) = (gets(a, TO_POD, EACH)?, gets(b, TO_POD, EACH)?);
    let (seen_a, seen_b) = (tally(from_a, &s.agent)?, tally(from_b, &s.agent)?);
    assert_eq!(seen_a.trim(), format!("{EACH} 200 dest from {}", a.ip4));
    assert_eq!(seen_b.trim(), format!("{EACH} 200 dest from {}", b.ip4));
    // Pooled, still: far fewer connections than requests.
    let opened = s
        .cluster_metric("weir_cluster_upstream_connections_total", "dest")
        .context("no connection count")?;
    assert!(
        (2.0..=8.0).contains(&opened),
        "{opened} upstream connections for {} requests of two pods",
        2 * EACH
    );

    // Pod A keeps one connection to weir open, a request every 20 ms, to a
    // cluster only it uses.
    let stop = std::env::temp_dir().join(format!("weir-pod-egress-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let looping = start_loop(a, "keepalive", TO_POD_AGAIN.parse()?, "20", &stop)?;
    let active = || s.cluster_metric("weir_cluster_upstream_connections_active", "dest_again");
    assert!(
        wait::until(Duration::from_secs(20), || active() == Some(1.0)),
        "pod A's keep-alive requests hold no upstream connection: {:?}\n{}",
        active(),
        s.agent.log()
    );

    // Un-enrolled (its annotation turned off): its pooled connection closes
    // at once; weir opens no new one for it, so its next request on the
    // connection it has open to weir gets a 503 ("local reset"), counted.
    let pods = format!(
        "pods:\n{}{}{}",
        a.pods_file_entry(&[("weir.dev/enroll", "false")]),
        b.pods_file_entry(&[("weir.dev/enroll", "true")]),
        s.dest.pods_file_entry(&[("weir.dev/enroll", "false")]),
    );
    s.agent.write_pods(&pods)?;
    let unenrolled = || {
        s.metrics().ok().and_then(|m| {
            metric_sample(
                &m,
                "weir_intercept_pod_connect_failures_total",
                &[("reason", "unenrolled")],
            )
        })
    };
    assert!(
        wait::until(Duration::from_secs(20), || unenrolled()
            .is_some_and(|n| n >= 1.0)),
        "no request of the un-enrolled pod was refused: {:?}\n{}",
        unenrolled(),
        s.agent.log()
    );
    assert!(
        wait::until(Duration::from_secs(10), || active() == Some(0.0)),
        "the un-enrolled pod's upstream connection is still open: {:?}",
        active()
    );
    std::fs::write(&stop, "")?;
    let lines = loop_lines(looping)?;
    let _ = std::fs::remove_file(&stop);
    // Answered through weir from pod A's address until then; then a 503
    // (after which the client reconnects, straight to the service address
    // now, which nothing serves).
    let first = lines.first().map(String::as_str).unwrap_or_default();
    assert!(
        first.ends_with(&format!("dest from {}", a.ip4)),
        "first: {first}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with("status 503")),
        "no 503 after the un-enrolment: {lines:?}"
    );
    // The agent is fine, and pod B's traffic too.
    s.agent.wait_ready(&s.node, Duration::from_secs(5))?;
    let seen = tally(gets(b, TO_POD_AGAIN, 2)?, &s.agent)?;
    assert_eq!(seen.trim(), format!("2 200 dest from {}", b.ip4), "{seen}");
    Ok(())
}
