//! The three setups of `weir-bench-mesh`, each its own client pod on node
//! A and server pod on node B: weir without the mesh, weir with it, and an
//! Envoy sidecar in each pod with mutual TLS between them.

use super::*;

/// What stands between the client and the server.
pub(super) enum Proxies {
    /// One `weir run` per node: (node A's, node B's).
    Weir(Box<(AgentProcess, AgentProcess)>),
    /// (the client's sidecar, the server's), with their iptables rules.
    Sidecars {
        sidecars: Vec<Sidecar>,
        /// Held for their drop, which deletes the rules.
        _rules: Vec<IptablesRedirect>,
    },
}

pub(super) struct Setup<'n> {
    /// Before the pods: fields drop in order, and the proxies and rules go
    /// while the pods' namespaces are still there.
    pub proxies: Proxies,
    pub kind: Kind,
    pub client: SimPod,
    pub server: SimPod,
    /// The pause processes and the server's `sim-server`.
    pub _processes: Vec<PodProcess>,
    pub nodes: (&'n SimNode, &'n SimNode),
}

/// A pods file entry: enrolled, its proxy CPU not capped below the
/// machine's (this measures the path, not fair shares), as service account `sa`.
fn entry(pod: &SimPod, sa: &str) -> String {
    let annotations = [("weir.dev/enroll", "true"), ("weir.dev/max-cpu", "1024")];
    format!(
        "{}    service_account: {sa}\n",
        pod.pods_file_entry(&annotations)
    )
}

/// `--mesh-*` flags of a node of `root`'s mesh, its files in `dir`.
fn mesh_args(root: &MeshRoot, dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    root.write_mesh(dir, TRUST_DOMAIN, Duration::from_secs(3600))?;
    let path = |file: &str| dir.join(file).display().to_string();
    Ok(vec![
        format!("--mesh-trust-domain={TRUST_DOMAIN}"),
        format!("--mesh-trust-bundle={}", path(TRUST_BUNDLE_FILE)),
        format!("--mesh-node-ca-cert={}", path(NODE_CA_CERT_FILE)),
        format!("--mesh-node-ca-key={}", path(NODE_CA_KEY_FILE)),
        format!("--mesh-pod-cidrs={POD_CIDRS}"),
    ])
}

impl<'n> Setup<'n> {
    pub fn start(
        (node_a, node_b): (&'n SimNode, &'n SimNode),
        kind: Kind,
        pins: &(PinRoot, PinRoot),
        envoy: Option<&Path>,
        dir: &Path,
    ) -> Result<Self> {
        let client = node_a.add_pod(&format!("client-{}", kind.name()))?;
        let server = node_b.add_pod(&format!("server-{}", kind.name()))?;
        let app = format!("0.0.0.0:{APP_PORT}");
        let processes = vec![
            client.start_pause()?,
            server.start_pause()?,
            server.start_server(&sim_server(), &["http", "server", &app], APP_PORT)?,
        ];
        let app = SocketAddr::new(server.ip4.into(), APP_PORT);
        let proxies = match kind {
            Kind::WeirPlain | Kind::WeirMesh => {
                let mesh = (kind == Kind::WeirMesh)
                    .then(MeshRoot::generate)
                    .transpose()?;
                let mut agents = Vec::new();
                for (node, config, pods, pins, side) in [
                    (
                        node_b,
                        MINIMAL_CONFIG.to_owned(),
                        format!("pods:\n{}", entry(&server, "server")),
                        pins.1.path(),
                        "b",
                    ),
                    (
                        node_a,
                        claiming_config(&[("server", SERVICE, app)]),
                        format!("pods:\n{}", entry(&client, "client")),
                        pins.0.path(),
                        "a",
                    ),
                ] {
                    let cgroup = node.cgroup_root().join(format!("agent-{}", kind.name()));
                    std::fs::create_dir_all(&cgroup)?;
                    let extra_args = match &mesh {
                        Some(root) => mesh_args(root, &dir.join(kind.name()).join(side))?,
                        None => Vec::new(),
                    };
                    let options = AgentOptions {
                        extra_args,
                        log: "warn".to_owned(),
                        cgroup: Some(cgroup),
                        ..AgentOptions::default()
                    };
                    let agent =
                        AgentProcess::start_with_options(node, &config, &pods, pins, options)?;
                    agent.wait_ready(node, Duration::from_secs(30))?;
                    println!(
                        "bench: {}: weir run (pid {}) on node {side}{}",
                        kind.name(),
                        agent.pid().unwrap_or(0),
                        if mesh.is_some() {
                            " with mesh credentials"
                        } else {
                            ""
                        }
                    );
                    agents.push(agent);
                }
                let (b, a) = (agents.remove(0), agents.remove(0));
                Proxies::Weir(Box::new((a, b)))
            }
            Kind::Sidecars => {
                let envoy = envoy.context("the sidecars-mtls setup needs --envoy")?;
                let dir = dir.join(kind.name());
                let pki = SidecarPki::generate(&dir)?;
                let spiffe = |sa: &str| format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}");
                let mut sidecars = Vec::new();
                let mut rules = Vec::new();
                for (role, pod, peer) in
                    [("server", &server, "client"), ("client", &client, "server")]
                {
                    let pem = pki.workload(role, &spiffe(role))?;
                    let config = dir.join(format!("envoy-{role}.yaml"));
                    std::fs::write(&config, envoy_mtls_config(&pem, app, &spiffe(peer)))?;
                    sidecars.push(start_envoy(envoy, &config, role, pod, &dir)?);
                    rules.extend(sidecar_rules(pod)?);
                }
                Proxies::Sidecars {
                    sidecars,
                    _rules: rules,
                }
            }
        };
        Ok(Setup {
            proxies,
            kind,
            client,
            server,
            _processes: processes,
            nodes: (node_a, node_b),
        })
    }

    /// Every proxy process (and its children) whose CPU the runs are charged.
    pub fn proxy_pids(&self) -> Vec<u32> {
        let roots: Vec<u32> = match &self.proxies {
            Proxies::Weir(agents) => agents.0.pid().into_iter().chain(agents.1.pid()).collect(),
            Proxies::Sidecars { sidecars, .. } => {
                sidecars.iter().map(|s| s.process.pid()).collect()
            }
        };
        roots.into_iter().flat_map(measure::process_tree).collect()
    }

    /// The counters that say which path the requests took and how many
    /// connections it opened (see [`Counters`]).
    pub fn counters(&self) -> Result<Counters> {
        match &self.proxies {
            Proxies::Weir(agents) => {
                let (a, b) = (
                    scrape(&agents.0, self.nodes.0)?,
                    scrape(&agents.1, self.nodes.1)?,
                );
                let out = |name: &str| {
                    metric_sample(&a, name, &[("direction", "outbound")]).unwrap_or(0.0) as u64
                };
                Ok(Counters {
                    tls_connections: out("weir_mesh_tunnel_connections_total"),
                    upstream_connections: sum(
                        &a,
                        "weir_cluster_upstream_connections_total{",
                        "cluster=\"server\"",
                    ),
                    tunnel_streams: out("weir_mesh_tunnel_streams_total"),
                    delivered: sum(
                        &b,
                        "weir_intercept_requests_total{",
                        "direction=\"inbound\"",
                    ),
                })
            }
            Proxies::Sidecars { .. } => {
                let stats = |pod: &SimPod| -> Result<String> {
                    let admin = SocketAddr::from(([127, 0, 0, 1], SIDECAR_ADMIN));
                    let (_, text) = pod.netns().run(move || http_get(admin, "/stats"))??;
                    Ok(text)
                };
                let (client, server) = (stats(&self.client)?, stats(&self.server)?);
                // The client sidecar's TLS connections to the server's.
                let tls = sum(&client, "cluster.server.upstream_cx_total:", "");
                Ok(Counters {
                    tls_connections: tls,
                    upstream_connections: tls,
                    tunnel_streams: 0,
                    // Requests the server's sidecar took out of mutual TLS.
                    delivered: sum(&server, "http.inbound_app.downstream_rq_total:", ""),
                })
            }
        }
    }

    /// The end of the proxies' logs, to explain a failure.
    pub fn log(&self) -> String {
        let text = match &self.proxies {
            Proxies::Weir(agents) => format!("{}\n{}", agents.0.log(), agents.1.log()),
            Proxies::Sidecars { sidecars, .. } => sidecars
                .iter()
                .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// The sum of the lines of `text` that start with `prefix` and contain
/// `needle`, each ending in its value (Prometheus or Envoy's `/stats`).
fn sum(text: &str, prefix: &str, needle: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn scrape(agent: &AgentProcess, node: &SimNode) -> Result<String> {
    let (status, text) = agent.admin_get(node, "/stats/prometheus")?;
    anyhow::ensure!(status == 200, "metrics answered {status}");
    Ok(text)
}

/// One sidecar's Envoy config, Istio's shape with mutual TLS: `virtualOutbound`
/// on :15001 hands a redirected connection to the service's listener
/// (`bind_to_port: false`), whose cluster is the server pod over TLS with
/// this workload's certificate, verifying the peer's SPIFFE ID against the
/// root; `virtualInbound` on :15006 terminates mutual TLS for the app's
/// port (a client certificate of the root required, the peer's SPIFFE ID
/// matched) and forwards to the app on 127.0.0.1.
pub(super) fn envoy_mtls_config(pem: &WorkloadPem, server: SocketAddr, peer: &str) -> String {
    let (cert, key, root) = (pem.cert.display(), pem.key.display(), pem.root.display());
    let certs = format!(
        "tls_certificates: [{{ certificate_chain: {{ filename: {cert} }}, private_key: {{ filename: {key} }} }}]"
    );
    let validation = format!(
        "validation_context: {{ trusted_ca: {{ filename: {root} }}, match_typed_subject_alt_names: [{{ san_type: URI, matcher: {{ exact: \"{peer}\" }} }}] }}"
    );
    let tls = |kind: &str, extra: &str| {
        format!(
            "transport_socket: {{ name: envoy.transport_sockets.tls, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{kind}, {extra}common_tls_context: {{ tls_params: {{ tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3 }}, {certs}, {validation} }} }} }}"
        )
    };
    let hcm = |name: &str, cluster: &str| {
        format!(
            "filters: [{{ name: envoy.filters.network.http_connection_manager, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: {name}, route_config: {{ virtual_hosts: [{{ name: {name}, domains: [\"*\"], routes: [{{ match: {{ prefix: \"/\" }}, route: {{ cluster: {cluster} }} }}] }}] }}, http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}] }} }}]"
        )
    };
    let endpoint = |ip: IpAddr, port: u16| {
        format!(
            "type: STATIC, load_assignment: {{ cluster_name: x, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}] }}"
        )
    };
    let limits = "circuit_breakers: { thresholds: [{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }] }";
    let service: SocketAddr = SERVICE.parse().expect("a socket address");
    let original_dst = "listener_filters: [{ name: envoy.filters.listener.original_dst, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst } }]";
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {SIDECAR_ADMIN} }} }} }}
static_resources:
  listeners:
  - {{ name: virtualOutbound, address: {{ socket_address: {{ address: 0.0.0.0, port_value: {SIDECAR_OUTBOUND} }} }}, use_original_dst: true, {original_dst}, filter_chains: [{{ filters: [{{ name: envoy.filters.network.tcp_proxy, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: PassthroughCluster, cluster: PassthroughCluster }} }}] }}] }}
  - {{ name: outbound_service, address: {{ socket_address: {{ address: {sip}, port_value: {sport} }} }}, bind_to_port: false, filter_chains: [{{ {out_hcm} }}] }}
  - {{ name: virtualInbound, address: {{ socket_address: {{ address: 0.0.0.0, port_value: {SIDECAR_INBOUND} }} }}, {original_dst}, filter_chains: [{{ filter_chain_match: {{ destination_port: {APP_PORT} }}, {in_tls}, {in_hcm} }}] }}
  clusters:
  - {{ name: PassthroughCluster, connect_timeout: 10s, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, {limits} }}
  - {{ name: server, connect_timeout: 10s, {server_endpoint}, {out_tls}, {limits} }}
  - {{ name: inbound_app, connect_timeout: 10s, {app_endpoint}, {limits} }}
"#,
        sip = service.ip(),
        sport = service.port(),
        out_hcm = hcm("outbound_service", "server"),
        in_tls = tls("DownstreamTlsContext", "require_client_certificate: true, "),
        in_hcm = hcm("inbound_app", "inbound_app"),
        server_endpoint = endpoint(server.ip(), server.port()),
        out_tls = tls("UpstreamTlsContext", ""),
        app_endpoint = endpoint([127, 0, 0, 1].into(), APP_PORT),
    )
}
