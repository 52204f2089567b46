//! The proxies of `weir-bench-neighbours`: weir's config for the node, and
//! the sidecars' (an Envoy 1.40 per pod behind Istio's iptables rules,
//! started by `weir_tests::sidecar`).

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
