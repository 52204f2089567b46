//! Egress decided in the kernel at `connect()` (issue 15 items 2 and 3), on
//! a simulated node served by the real `weir run`, as root:
//! - under REGISTRY_ONLY, an enrolled pod's TCP (opaque, HTTP, TLS) and
//!   connected UDP to a destination no listener claims and no allow entry
//!   names fail with EPERM before any packet leaves, counted per pod and
//!   destination and logged, and so does a datagram sent there by sendto()
//!   without connect() (but a UDP server in the pod still answers its
//!   clients); claimed destinations still go through weir,
//!   allowed ones and the cluster's DNS go direct, counted;
//! - after a reload to ALLOW_ANY with `egress.unclaimed: direct`, unclaimed
//!   TCP goes direct (no proxy hop: weir detects no protocol for it) and is
//!   counted with its bytes, except for a pod whose
//!   `weir.dev/unclaimed-traffic: proxy` keeps the hop.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use weir_tests::agent::{AgentProcess, metric_sample};
use weir_tests::pins::PinRoot;
use weir_tests::service::ServiceServer;
use weir_tests::support::{TempDir, require_root, sim_client, sim_server};
use weir_tests::{PodProcess, SimNode, SimPod, wait};

/// Claimed by weir, routed to the destination pod's application.
const SERVICE: &str = "198.51.100.30:80";
const APP_PORT: u16 = 8080;
const OPAQUE_PORT: u16 = 9000;
const UDP_ECHO_PORT: u16 = 5300;

fn config(policy: &str, egress: &str, app: SocketAddr) -> String {
    format!(
        r#"admin:
  address: "{{admin}}"
outbound_traffic_policy: {policy}
{egress}
listeners:
  - name: dest
    address: {SERVICE}
    bind_to_port: false
    virtual_hosts:
      - name: dest
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            route: {{ cluster: dest }}
clusters:
  - name: dest
    connect_timeout: 5s
    endpoints: [{{ address: "{}", port: {} }}]
"#,
        app.ip(),
        app.port()
    )
}

struct Setup {
    agent: AgentProcess,
    _servers: Vec<PodProcess>,
    _opaque: ServiceServer,
    client: SimPod,
    proxied: SimPod,
    dest: SimPod,
    node: SimNode,
    _pins: PinRoot,
}

impl Setup {
    fn start() -> Result<Self> {
        let pins = PinRoot::new();
        let node = SimNode::new()?;
        let client = node.add_pod("client")?;
        let proxied = node.add_pod("proxied")?;
        let dest = node.add_pod("dest")?;
        let mut servers: Vec<PodProcess> = [&client, &proxied, &dest]
            .iter()
            .map(|p| p.start_pause())
            .collect::<Result<_>>()?;
        let app = format!("0.0.0.0:{APP_PORT}");
        servers.push(dest.start_server(&sim_server(), &["http", "dest", &app], APP_PORT)?);
        let opaque = ServiceServer::start_app(dest.netns(), ([0, 0, 0, 0], OPAQUE_PORT).into())?;
        let pods = format!(
            "pods:\n{}{}{}",
            client.pods_file_entry(&[("weir.dev/enroll", "true")]),
            proxied.pods_file_entry(&[
                ("weir.dev/enroll", "true"),
                ("weir.dev/unclaimed-traffic", "proxy")
            ]),
            dest.pods_file_entry(&[("weir.dev/enroll", "false")]),
        );
        let egress = format!(
            "egress:\n  allow: [{{ cidr: \"{}/32\", ports: [{OPAQUE_PORT}] }}]\n  dns_servers: [\"{}\"]",
            dest.ip4, dest.ip4
        );
        let app = SocketAddr::new(dest.ip4.into(), APP_PORT);
        let agent = AgentProcess::start(
            &node,
            &config("REGISTRY_ONLY", &egress, app),
            &pods,
            pins.path(),
        )?;
        agent.wait_ready(&node, Duration::from_secs(20))?;
        Ok(Self {
            agent,
            _servers: servers,
            _opaque: opaque,
            client,
            proxied,
            dest,
            node,
            _pins: pins,
        })
    }

    fn dest_addr(&self, port: u16) -> String {
        SocketAddr::new(self.dest.ip4.into(), port).to_string()
    }

    fn metrics(&self) -> Result<String> {
        let (status, text) = self.agent.admin_get(&self.node, "/stats/prometheus")?;
        anyhow::ensure!(status == 200, "metrics answered {status}");
        Ok(text)
    }

    /// The value of `name` for `pod`'s outbound traffic to `destination`,
    /// once it reaches `want` (the agent exports the kernel's counts every
    /// couple of seconds).
    fn wait_metric(
        &self,
        name: &str,
        pod: &str,
        destination: &str,
        security: &str,
        want: impl Fn(f64) -> bool,
    ) -> f64 {
        let labels = [
            ("direction", "outbound"),
            ("source_pod", pod),
            ("destination", destination),
            ("connection_security_policy", security),
        ];
        let mut last = None;
        let reached = wait::until(Duration::from_secs(15), || {
            last = self
                .metrics()
                .ok()
                .and_then(|text| metric_sample(&text, name, &labels));
            last.is_some_and(&want)
        });
        assert!(
            reached,
            "{name}{labels:?} stayed {last:?}\n{}\nweir's log:\n{}",
            self.metrics().unwrap_or_default(),
            self.agent.log()
        );
        last.unwrap_or_default()
    }
}

/// `sim-client reach KIND ADDR` from `pod`: `EPERM` or `connected ...`.
fn reach(pod: &SimPod, kind: &str, addr: &str, agent: &AgentProcess) -> String {
    let mut cmd = Command::new(sim_client());
    cmd.args(["reach", kind, addr]);
    let out = pod
        .spawn(cmd)
        .and_then(|p| p.wait_output(Duration::from_secs(30)))
        .expect("sim-client ran");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "sim-client reach {kind} {addr}: {stdout} {}\nweir's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    stdout
}

fn detected_outbound(metrics: &str) -> f64 {
    ["http1", "tls", "opaque"]
        .iter()
        .filter_map(|p| {
            metric_sample(
                metrics,
                "weir_intercept_protocol_detected_total",
                &[("direction", "outbound"), ("protocol", p)],
            )
        })
        .sum()
}

#[test]
fn registry_only_refuses_at_connect_and_allow_any_can_skip_the_proxy_hop() -> Result<()> {
    require_root();
    let s = Setup::start()?;
    let (client, agent) = (&s.client, &s.agent);

    // Claimed: through weir as ever.
    let answer = reach(client, "http", SERVICE, agent);
    assert!(
        answer.starts_with("connected HTTP/1.1 200"),
        "{answer}\nthe cluster's connection counts:\n{}\nweir's log:\n{}",
        s.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("upstream_cx") && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
        agent.log()
    );

    // Unclaimed and not allowed: refused in the kernel, whatever the protocol.
    let refused_tcp = s.dest_addr(APP_PORT);
    for kind in ["http", "tcp", "tls"] {
        assert_eq!(reach(client, kind, &refused_tcp, agent), "EPERM", "{kind}");
    }
    let refused_udp = s.dest_addr(5353);
    assert_eq!(reach(client, "udp", &refused_udp, agent), "EPERM");
    // Without connect(): the datagram is addressed at sendto().
    let refused_sendto = s.dest_addr(5354);
    assert_eq!(reach(client, "udp-sendto", &refused_sendto, agent), "EPERM");
    // The same from an IPv6 socket, to an IPv6 address and to an IPv4 one
    // through its mapped form (judged by sendmsg4, as the IPv4 address it is).
    let refused_sendto6 = SocketAddr::new(s.dest.ip6.into(), 5355).to_string();
    assert_eq!(
        reach(client, "udp-sendto", &refused_sendto6, agent),
        "EPERM"
    );
    let mapped = format!("[::ffff:{}]:5356", s.dest.ip4);
    assert_eq!(reach(client, "udp-sendto", &mapped, agent), "EPERM");
    // Allowed: direct, to the application itself (it names the pod's address).
    let allowed = s.dest_addr(OPAQUE_PORT);
    let answer = reach(client, "tcp", &allowed, agent);
    assert!(
        answer.contains(&format!(" saw {}:", s.client.ip4)),
        "{answer}"
    );
    // The cluster's DNS, over UDP: the socket connects and sends, and so
    // does a resolver that addresses each query (sendto()).
    assert!(reach(client, "udp", &s.dest_addr(53), agent).starts_with("connected"));
    assert!(reach(client, "udp-sendto", &s.dest_addr(53), agent).starts_with("sent"));

    // A UDP server in the pod answers clients the policy would not let it
    // reach: they reached it first. Dual-stack, so an IPv4 client arrives
    // v4-mapped and is answered through sendmsg4.
    let logs = TempDir::new("weir-udp-echo")?;
    let log = logs.path().join("udp-echo.log");
    let mut echo = Command::new(sim_server());
    echo.args(["udp-echo", &format!("[::]:{UDP_ECHO_PORT}")]);
    let _echo = client.spawn_logged(echo, &log)?;
    let listening = wait::until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening"))
    });
    assert!(listening, "udp-echo: {}", std::fs::read_to_string(&log)?);
    for server in [
        SocketAddr::new(client.ip4.into(), UDP_ECHO_PORT),
        SocketAddr::new(client.ip6.into(), UDP_ECHO_PORT),
    ] {
        let answer = reach(&s.dest, "udp-sendto", &server.to_string(), agent);
        assert_eq!(
            answer,
            "sent hello from the pod",
            "{server}: {}",
            std::fs::read_to_string(&log)?
        );
    }

    // Counted against the pod, by destination, under the proxied labels.
    let denied = "weir_intercept_tcp_connections_denied_total";
    s.wait_metric(denied, "client", &refused_tcp, "none", |v| v == 3.0);
    s.wait_metric(denied, "client", &refused_udp, "none", |v| v == 1.0);
    s.wait_metric(denied, "client", &refused_sendto, "none", |v| v == 1.0);
    s.wait_metric(denied, "client", &refused_sendto6, "none", |v| v == 1.0);
    s.wait_metric(denied, "client", &s.dest_addr(5356), "none", |v| v == 1.0);
    let opened = "weir_intercept_tcp_connections_opened_total";
    s.wait_metric(opened, "client", &allowed, "none", |v| v == 1.0);
    assert!(
        agent
            .log()
            .contains("refused at connect()/sendto() by outbound_traffic_policy REGISTRY_ONLY"),
        "{}",
        agent.log()
    );

    // ALLOW_ANY, unclaimed TCP direct by default; pod "proxied" keeps the hop.
    let app = SocketAddr::new(s.dest.ip4.into(), APP_PORT);
    std::fs::write(
        &agent.config_file,
        config("ALLOW_ANY", "egress:\n  unclaimed: direct", app)
            .replace("{admin}", &agent.admin.to_string()),
    )?;
    let reloaded = wait::until(Duration::from_secs(15), || {
        reach(client, "http", &refused_tcp, agent).starts_with("connected HTTP/1.1 200")
    });
    assert!(reloaded, "ALLOW_ANY never applied:\n{}", agent.log());
    let answer = reach(client, "udp-sendto", &refused_sendto, agent);
    assert!(answer.starts_with("sent"), "{answer}");
    let detected_before = detected_outbound(&s.metrics()?);
    let answer = reach(client, "tcp", &allowed, agent);
    assert!(answer.contains(" saw "), "{answer}");
    let answer = reach(client, "http", SERVICE, agent);
    assert!(answer.starts_with("connected HTTP/1.1 200"), "{answer}");
    // Only the claimed connection met weir's detector.
    assert_eq!(detected_outbound(&s.metrics()?), detected_before + 1.0);
    // The direct connections are counted, bytes included once closed.
    s.wait_metric(opened, "client", &allowed, "none", |v| v == 2.0);
    let closed = "weir_intercept_tcp_connections_closed_total";
    s.wait_metric(closed, "client", &allowed, "none", |v| v >= 1.0);
    let sent = "weir_intercept_tcp_sent_bytes_total";
    s.wait_metric(sent, "client", &allowed, "none", |v| v > 0.0);

    let answer = reach(&s.proxied, "tcp", &allowed, agent);
    assert!(answer.contains(" saw "), "{answer}");
    assert_eq!(detected_outbound(&s.metrics()?), detected_before + 2.0);
    Ok(())
}
