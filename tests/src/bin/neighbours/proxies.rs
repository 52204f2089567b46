//! The proxies of `weir-bench-neighbours`: weir's config for the node, and
//! the sidecars' (an Envoy 1.40 per pod behind Istio's iptables rules).

use super::*;

/// weir's listeners: B's service to `server`; A's to `other`, with a route
/// weir answers itself.
pub(super) fn weir_config(server: Ipv4Addr, other: Ipv4Addr) -> String {
    format!(
        r#"admin:
  address: "{{admin}}"
listeners:
  - name: service
    address: "{SERVICE}:80"
    bind_to_port: false
    virtual_hosts:
      - name: service
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            route: {{ cluster: service }}
  - name: other
    address: "{OTHER}:80"
    bind_to_port: false
    virtual_hosts:
      - name: other
        domains: ["*"]
        routes:
          - match: {{ prefix: "/direct" }}
            direct_response: {{ status: 200, body: "answered by the proxy" }}
          - match: {{ prefix: "/" }}
            route: {{ cluster: other }}
clusters:
  - name: service
    endpoints: [{{ address: "{server}", port: {APP_PORT} }}]
  - name: other
    endpoints: [{{ address: "{other}", port: {APP_PORT} }}]
"#
    )
}

/// Every sidecar's Envoy config, as Istio shapes one: `virtualOutbound` on
/// :15001 hands each redirected connection to the listener of its original
/// destination (`use_original_dst`), one per service (`bind_to_port:
/// false`, the same routes as weir's), anything else to `PassthroughCluster`;
/// `virtualInbound` on :15006 sends the application's port to the
/// application on 127.0.0.1. Every cluster has Istio's circuit breakers (no
/// limit), so none of them turns an attack into B's errors by itself.
pub(super) fn envoy_config(server: Ipv4Addr, other: Ipv4Addr) -> String {
    let hcm = |name: &str, routes: &str| {
        format!(
            r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            name: {name}
            virtual_hosts:
            - name: {name}
              domains: ["*"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    };
    let to = |cluster: &str| {
        format!(
            "              - match: {{ prefix: \"/\" }}\n                route: {{ cluster: {cluster} }}\n"
        )
    };
    let direct = "              - match: { prefix: \"/direct\" }\n                direct_response: { status: 200, body: { inline_string: \"answered by the proxy\" } }\n";
    let service = |address: &str, routes: String| {
        format!(
            "  - name: {address}_80\n    address:\n      socket_address: {{ address: {address}, port_value: 80 }}\n    bind_to_port: false\n    filter_chains:\n    - filters:\n{}",
            hcm(&format!("outbound_{address}_80"), &routes)
        )
    };
    let original_dst = "    listener_filters:\n    - name: envoy.filters.listener.original_dst\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst\n";
    let cluster = |name: &str, endpoint: Option<(IpAddr, u16)>| {
        let body = match endpoint {
            None => "    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n".to_owned(),
            Some((ip, port)) => format!(
                "    type: STATIC\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: {ip}, port_value: {port} }}\n"
            ),
        };
        format!(
            "  - name: {name}\n    connect_timeout: 10s\n{body}    circuit_breakers:\n      thresholds:\n      - {{ max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295 }}\n"
        )
    };
    format!(
        r#"admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {SIDECAR_ADMIN} }}
static_resources:
  listeners:
  - name: virtualOutbound
    address:
      socket_address: {{ address: 0.0.0.0, port_value: {SIDECAR_OUTBOUND} }}
    use_original_dst: true
{original_dst}    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
{service}{other}  - name: virtualInbound
    address:
      socket_address: {{ address: 0.0.0.0, port_value: {SIDECAR_INBOUND} }}
{original_dst}    filter_chains:
    - filter_chain_match: {{ destination_port: {APP_PORT} }}
      filters:
{inbound}  clusters:
{passthrough}{service_cluster}{other_cluster}{app_cluster}"#,
        service = service(SERVICE, to("service")),
        other = service(OTHER, format!("{direct}{}", to("other"))),
        inbound = hcm("inbound_app", &to("inbound_app")),
        passthrough = cluster("PassthroughCluster", None),
        service_cluster = cluster("service", Some((server.into(), APP_PORT))),
        other_cluster = cluster("other", Some((other.into(), APP_PORT))),
        app_cluster = cluster("inbound_app", Some(([127, 0, 0, 1].into(), APP_PORT))),
    )
}

/// Envoy in `pod`'s network namespace as uid 1337 (so its own connections
/// pass the OUTPUT rule), ready when its admin says so.
pub(super) fn start_envoy(
    envoy: &Path,
    config: &Path,
    role: &'static str,
    pod: &SimPod,
    dir: &Path,
) -> Result<Sidecar> {
    let log = dir.join(format!("envoy-{role}.log"));
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={SIDECAR_UID}"))
        .arg(format!("--regid={SIDECAR_UID}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(envoy)
        .arg("-c")
        .arg(config)
        .args(["--concurrency", SIDECAR_WORKERS, "--disable-hot-restart"])
        .args(["--log-level", "warn"]);
    let process = pod.spawn_outside_cgroup_logged(cmd, &log)?;
    let admin = SocketAddr::from(([127, 0, 0, 1], SIDECAR_ADMIN));
    if !wait_ready_in(pod, admin, Duration::from_secs(30)) {
        bail!(
            "Envoy in pod {} never became ready; its log:\n{}",
            pod.name,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    println!(
        "bench: envoy (pid {}) in {}'s namespace, --concurrency {SIDECAR_WORKERS}",
        process.pid(),
        pod.name
    );
    Ok(Sidecar { role, process, log })
}

/// Istio's rules for a pod: its outbound TCP (not loopback, not the
/// sidecar's own) to :15001, its inbound TCP to :15006.
pub(super) fn sidecar_rules(pod: &SimPod) -> Result<Vec<IptablesRedirect>> {
    let outbound = [
        "!",
        "-d",
        "127.0.0.0/8",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        SIDECAR_UID,
    ];
    Ok(vec![
        IptablesRedirect::add(pod, "OUTPUT", &outbound, SIDECAR_OUTBOUND)?,
        IptablesRedirect::add(pod, "PREROUTING", &[], SIDECAR_INBOUND)?,
    ])
}
