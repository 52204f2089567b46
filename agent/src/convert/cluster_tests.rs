//! Clusters: each Envoy field weir has, and each refusal with its path and
//! line.

use super::super::test_support::{Walked, line, walk};
use super::*;
use crate::config::{AlpnProtocol, ResolverAddress, TlsVersion, UpstreamTlsConfig};

fn run(yaml: &str) -> Walked<Option<Cluster>> {
    walk(yaml, cluster)
}

fn converted(yaml: &str) -> ClusterConfig {
    let w = run(yaml);
    assert!(w.refusals.is_empty(), "{:#?}", w.refusals);
    w.out.expect("converted").config
}

const ENDPOINT: &str = "load_assignment:
  cluster_name: other-name
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 8080}}}";

fn resolver(text: &str) -> ResolverAddress {
    ResolverAddress(text.parse().unwrap())
}

#[test]
fn a_static_cluster_with_envoys_defaults() {
    let c = converted(&format!("name: c\n{ENDPOINT}"));
    assert_eq!(c.name, "c");
    assert_eq!(c.discovery_type, DiscoveryType::Static);
    assert_eq!(c.connect_timeout, ConfigDuration::from_secs(5));
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.dns_refresh_rate, None, "weir's default, Envoy's 5 s");
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::Auto);
    assert!(!c.respect_dns_ttl && !c.http2);
    assert_eq!(
        c.endpoints,
        [EndpointConfig {
            address: "10.0.0.1".into(),
            port: 8080
        }]
    );
    assert_eq!(c.circuit_breakers, CircuitBreakersConfig::default());
    assert_eq!(c.upstream_http, UpstreamHttpConfig::default());
    assert_eq!((c.outlier_detection, c.tls), (None, None));
}

#[test]
fn strict_dns_with_its_dns_settings() {
    let c = converted(
        "name: films
type: STRICT_DNS
connect_timeout: 0.25s
lb_policy: RANDOM
dns_lookup_family: V4_ONLY
dns_refresh_rate: 30s
respect_dns_ttl: true
load_assignment:
  endpoints:
  - locality: {zone: a}
    lb_endpoints:
    - endpoint: {address: {socket_address: {address: films.default.svc.cluster.local, port_value: 5000}}}
      health_status: HEALTHY
  - priority: 0
    lb_endpoints:
    - endpoint: {hostname: films-b, address: {socket_address: {address: films-b.default, port_value: 5000}}}",
    );
    assert_eq!(c.discovery_type, DiscoveryType::StrictDns);
    assert_eq!(c.connect_timeout, ConfigDuration::from_millis(250));
    assert_eq!(c.lb_policy, LbPolicy::Random);
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(c.dns_refresh_rate, Some(ConfigDuration::from_secs(30)));
    assert!(c.respect_dns_ttl);
    let names: Vec<_> = c.endpoints.iter().map(|e| e.address.as_str()).collect();
    assert_eq!(
        names,
        ["films.default.svc.cluster.local", "films-b.default"]
    );
}

#[test]
fn a_short_strict_dns_name_gets_a_note() {
    let yaml = "name: films
type: STRICT_DNS
load_assignment:
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: film-service, port_value: 5000}}}";
    let w = run(yaml);
    assert!(w.refusals.is_empty());
    assert_eq!(
        w.notes,
        [
            "(document root): endpoint \"film-service\" is a short name: weir resolves it with its own resolv.conf search domains, so from the DaemonSet it names a service in weir-system; write film-service.<namespace> (docs/envoy.md)"
        ]
    );
}

#[test]
fn v2_hosts_list() {
    let c = converted(
        "name: c\ntype: STRICT_DNS\nhosts: [{socket_address: {address: a.example, port_value: 80}}]",
    );
    assert_eq!(
        c.endpoints,
        [EndpointConfig {
            address: "a.example".into(),
            port: 80
        }]
    );
}

#[test]
fn resolvers_in_each_of_envoys_forms() {
    let servers = |extra: &str| converted(&format!("name: c\n{ENDPOINT}\n{extra}")).dns_resolvers;
    assert_eq!(
        servers(
            "dns_resolution_config: {resolvers: [{socket_address: {address: 10.0.0.2, port_value: 53}}]}"
        ),
        [resolver("10.0.0.2:53")]
    );
    assert_eq!(
        servers(
            "typed_dns_resolver_config:
  name: envoy.network.dns_resolver.cares
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
    resolvers: [{socket_address: {address: '::1', port_value: 5353}}, {socket_address: {address: 10.0.0.3, port_value: 0}}]
    dns_resolver_options: {use_tcp_for_dns_lookups: false}"
        ),
        [resolver("[::1]:5353"), resolver("10.0.0.3:53")]
    );
    assert_eq!(
        servers("dns_resolvers: [{socket_address: {address: 10.0.0.4, port_value: 53}}]"),
        [resolver("10.0.0.4:53")]
    );
    assert_eq!(
        servers(
            "typed_dns_resolver_config:
  name: envoy.network.dns_resolver.getaddrinfo
  typed_config: {'@type': type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig}"
        ),
        []
    );
}

#[test]
fn circuit_breakers_from_the_default_threshold() {
    let c = converted(&format!(
        "name: c\n{ENDPOINT}
circuit_breakers:
  thresholds:
  - {{priority: HIGH, max_connections: 1}}
  - {{max_connections: 10, max_pending_requests: 20, max_requests: 30, max_retries: 4, track_remaining: true}}"
    ));
    assert_eq!(
        c.circuit_breakers,
        CircuitBreakersConfig {
            max_connections: 10,
            max_pending_requests: 20,
            max_requests: 30,
            max_retries: 4,
        }
    );
}

#[test]
fn outlier_detection_as_envoy_ejects() {
    let od = |extra: &str| {
        converted(&format!("name: c\n{ENDPOINT}\noutlier_detection: {extra}"))
            .outlier_detection
            .expect("outlier detection")
    };
    // Envoy's defaults: gateway failures are not enforced on their own, so
    // a run of connect failures ejects at Envoy's 5xx count.
    assert_eq!(
        od("{}"),
        OutlierDetectionConfig {
            consecutive_gateway_failure: 5,
            ..OutlierDetectionConfig::default()
        }
    );
    assert_eq!(
        od(
            "{consecutive_5xx: 3, consecutive_gateway_failure: 10, interval: 1s, base_ejection_time: 2s, max_ejection_percent: 20}"
        ),
        OutlierDetectionConfig {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 3,
            interval: ConfigDuration::from_secs(1),
            base_ejection_time: ConfigDuration::from_secs(2),
            max_ejection_percent: 20,
        }
    );
    assert_eq!(
        od("{consecutive_5xx: 8, consecutive_gateway_failure: 2, enforcing_consecutive_gateway_failure: 100, enforcing_consecutive_5xx: 100}")
            .consecutive_gateway_failure,
        2
    );
}

#[test]
fn outlier_detection_notes_success_rate_ejection() {
    let yaml = format!("name: c\n{ENDPOINT}\noutlier_detection: {{}}");
    let w = run(&yaml);
    assert_eq!(
        w.notes,
        [format!(
            "outlier_detection (line {}): Envoy also ejects by success rate (on by default for clusters of 5 or more endpoints); weir ejects on consecutive failures only",
            line(&yaml, "outlier_detection")
        )]
    );
}

#[test]
fn http2_and_the_connection_pool() {
    let c = converted(&format!(
        "name: c\n{ENDPOINT}
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {{http2_protocol_options: {{}}}}
    common_http_protocol_options: {{idle_timeout: 60s, max_requests_per_connection: 100}}"
    ));
    assert!(c.http2);
    assert_eq!(
        c.upstream_http,
        UpstreamHttpConfig {
            idle_timeout: ConfigDuration::from_secs(60),
            max_requests_per_connection: 100,
        }
    );
    // The deprecated cluster-level spellings.
    let c = converted(&format!(
        "name: c\n{ENDPOINT}
http2_protocol_options: {{}}
common_http_protocol_options: {{idle_timeout: 10s}}
max_requests_per_connection: 7
protocol_selection: USE_CONFIGURED_PROTOCOL"
    ));
    assert!(c.http2);
    assert_eq!(c.upstream_http.idle_timeout, ConfigDuration::from_secs(10));
    assert_eq!(c.upstream_http.max_requests_per_connection, 7);
    let c = converted(&format!(
        "name: c\n{ENDPOINT}
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {{http_protocol_options: {{}}}}"
    ));
    assert!(!c.http2);
}

#[test]
fn upstream_tls() {
    let tls = |context: &str| {
        converted(&format!(
            "name: c\n{ENDPOINT}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    {context}"
        ))
        .tls
        .expect("tls")
    };
    assert_eq!(
        tls(
            "sni: api.example.com
    common_tls_context:
      alpn_protocols: [h2]
      tls_params: {tls_minimum_protocol_version: TLSv1_3}
      validation_context: {trusted_ca: {filename: /ca.pem}}
      tls_certificates: [{certificate_chain: {filename: /c.pem}, private_key: {filename: /k.pem}}]"
        ),
        UpstreamTlsConfig {
            sni: Some("api.example.com".into()),
            ca_file: Some("/ca.pem".into()),
            ca: None,
            insecure_skip_verify: false,
            client_cert_file: Some("/c.pem".into()),
            client_cert: None,
            client_key_file: Some("/k.pem".into()),
            client_key: None,
            alpn: vec![AlpnProtocol::H2],
            min_version: TlsVersion::Tls13,
        }
    );
    assert!(
        tls(
            "common_tls_context: {validation_context: {trust_chain_verification: ACCEPT_UNTRUSTED}}"
        )
        .insecure_skip_verify
    );
    let inline = tls("common_tls_context:
      validation_context: {trusted_ca: {inline_string: CA PEM}}
      tls_certificates: [{certificate_chain: {inline_string: CERT PEM}, private_key: {inline_string: KEY PEM}}]");
    assert_eq!(
        (inline.ca_file.as_ref(), inline.ca.as_deref()),
        (None, Some("CA PEM"))
    );
    assert_eq!(
        (
            inline.client_cert_file.as_ref(),
            inline.client_cert.as_deref()
        ),
        (None, Some("CERT PEM"))
    );
    assert_eq!(
        (
            inline.client_key_file.as_ref(),
            inline
                .client_key
                .as_ref()
                .map(crate::config::InlineKey::expose)
        ),
        (None, Some("KEY PEM"))
    );
    // v2 put the context on the cluster itself.
    let v2 = converted(&format!(
        "name: c\n{ENDPOINT}\ntls_context: {{sni: a.example, common_tls_context: {{validation_context: {{trusted_ca: {{filename: /ca.pem}}}}}}}}"
    ));
    let v2 = v2.tls.expect("tls");
    assert_eq!(
        (v2.sni.as_deref(), v2.ca_file.as_deref()),
        (Some("a.example"), Some(std::path::Path::new("/ca.pem")))
    );
}

#[test]
fn upstream_tls_without_a_ca_gets_a_note() {
    let yaml = format!(
        "name: c\n{ENDPOINT}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: api.example.com"
    );
    let w = run(&yaml);
    assert!(w.refusals.is_empty());
    assert!(!w.out.unwrap().config.tls.unwrap().insecure_skip_verify);
    assert_eq!(
        w.notes,
        [format!(
            "transport_socket.typed_config (line {}): Envoy does not verify this upstream's certificate (no validation_context.trusted_ca); weir verifies it against the system roots: set tls.ca_file, or tls.insecure_skip_verify: true to keep Envoy's behaviour",
            line(&yaml, "typed_config")
        )]
    );
}

#[test]
fn dynamic_forward_proxy_cluster() {
    let c = converted(
        "name: proxy_cluster
connect_timeout: 1s
lb_policy: CLUSTER_PROVIDED
cluster_type:
  name: envoy.clusters.dynamic_forward_proxy
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
    dns_cache_config:
      name: proxy_dns_cache
      dns_lookup_family: V4_ONLY
      max_hosts: 100
      host_ttl: 60s
      dns_refresh_rate: 10s
      dns_resolution_config: {resolvers: [{socket_address: {address: 10.0.0.9, port_value: 53}}]}",
    );
    assert_eq!(c.discovery_type, DiscoveryType::DynamicForwardProxy);
    assert_eq!(c.connect_timeout, ConfigDuration::from_secs(1));
    assert!(c.endpoints.is_empty());
    assert_eq!(
        c.dns_cache,
        DnsCacheConfig {
            name: Some("proxy_dns_cache".into()),
            max_hosts: 100,
            host_ttl: ConfigDuration::from_secs(60),
        }
    );
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(c.dns_refresh_rate, Some(ConfigDuration::from_secs(10)));
    assert_eq!(c.dns_resolvers, [resolver("10.0.0.9:53")]);
}

#[test]
fn a_forward_proxy_clusters_own_dns_settings_are_notes() {
    let yaml = "name: p
dns_lookup_family: V6_ONLY
cluster_type:
  name: envoy.clusters.dynamic_forward_proxy
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
    dns_cache_config: {name: c}";
    let w = run(yaml);
    assert!(w.refusals.is_empty());
    assert_eq!(
        w.out.unwrap().config.dns_lookup_family,
        DnsLookupFamily::Auto
    );
    assert_eq!(
        w.notes,
        [
            "dns_lookup_family (line 2): Envoy ignores this on a dynamic forward proxy cluster (its dns_cache_config applies): left out"
        ]
    );
}

#[test]
fn envoys_dns_cluster_type_is_strict_dns() {
    let c = converted(
        "name: c
cluster_type:
  name: envoy.cluster.dns
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster
    respect_dns_ttl: true
    dns_refresh_rate: 10s
    dns_lookup_family: V4_ONLY
    all_addresses_in_single_endpoint: false
    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers: [{socket_address: {address: 10.0.0.2, port_value: 53}}]
load_assignment:
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: example.com, port_value: 80}}}}]}]",
    );
    assert_eq!(c.discovery_type, DiscoveryType::StrictDns);
    assert!(c.respect_dns_ttl);
    assert_eq!(c.dns_refresh_rate, Some(ConfigDuration::from_secs(10)));
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::V4Only);
    assert_eq!(c.dns_resolvers, [resolver("10.0.0.2:53")]);
    let yaml = "name: c
dns_refresh_rate: 1s
dns_resolution_config: {resolvers: [{socket_address: {address: 10.0.0.3, port_value: 53}}]}
cluster_type:
  name: envoy.cluster.dns
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster
    all_addresses_in_single_endpoint: true
    dns_jitter: 1s
load_assignment:
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: example.com, port_value: 80}}}}]}]";
    assert_eq!(
        run(yaml).refusals,
        [
            "cluster_type.typed_config.all_addresses_in_single_endpoint (line 8): weir has no LOGICAL_DNS: STRICT_DNS uses every resolved address, where this used the first; leave it out if that suits the upstream",
            "cluster_type.typed_config.dns_jitter (line 9): DnsCluster.dns_jitter is not supported: weir has no such setting",
            "dns_refresh_rate (line 2): set in the cluster_type's DnsCluster too: set it in one place, the DnsCluster",
            "dns_resolution_config (line 3): set in the cluster_type's DnsCluster too: set it in one place, the DnsCluster",
        ]
    );
}

#[test]
fn discovery_refusals() {
    for (yaml, want) in [
        (
            "name: c\ntype: EDS\neds_cluster_config: {eds_config: {ads: {}}}",
            vec![
                "type (line 2): weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS",
                "eds_cluster_config (line 3): weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS",
            ],
        ),
        (
            "name: c\ntype: LOGICAL_DNS",
            vec![
                "type (line 2): weir has no LOGICAL_DNS: STRICT_DNS uses every resolved address, where LOGICAL_DNS used the first; write type: STRICT_DNS if that suits the upstream",
            ],
        ),
        (
            "name: c\ntype: ORIGINAL_DST",
            vec![
                "type (line 2): weir passes intercepted connections to their original destination itself (outbound_traffic_policy: ALLOW_ANY)",
            ],
        ),
        (
            "name: c\ncluster_type: {name: envoy.clusters.aggregate}",
            vec![
                "cluster_type (line 2): cluster type \"envoy.clusters.aggregate\" is not supported: weir has STATIC, STRICT_DNS (also as envoy.cluster.dns) and envoy.clusters.dynamic_forward_proxy",
            ],
        ),
        (
            "name: c\ntype: STATIC\ncluster_type: {name: envoy.clusters.dynamic_forward_proxy}",
            vec!["cluster_type (line 3): only one of type and cluster_type may be set"],
        ),
    ] {
        assert_eq!(run(yaml).refusals, want, "{yaml}");
    }
}

#[test]
fn cluster_refusals() {
    let yaml = "name: c
type: STRICT_DNS
lb_policy: RING_HASH
dns_lookup_family: V4_PREFERRED
health_checks: [{timeout: 1s}]
use_tcp_for_dns_lookups: true
dns_resolution_config: {dns_resolver_options: {no_default_search_domain: true}}
circuit_breakers: {thresholds: [{max_connections: 1}, {priority: DEFAULT, max_requests: 2}]}
outlier_detection: {enforcing_consecutive_5xx: 50, success_rate_minimum_hosts: 3}
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    '@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    use_downstream_protocol_config: {}
  envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions: {}
load_assignment:
  policy: {overprovisioning_factor: 140}
  endpoints:
  - priority: 1
    lb_endpoints:
    - endpoint: {address: {socket_address: {address: a.example, port_value: 80}}}
      load_balancing_weight: 3
      health_status: DRAINING
";
    let l = |needle| line(yaml, needle);
    assert_eq!(
        run(yaml).refusals,
        [
            format!(
                "lb_policy (line {}): \"RING_HASH\" is not supported: weir has ROUND_ROBIN, LEAST_REQUEST and RANDOM",
                l("RING_HASH")
            ),
            format!(
                "dns_lookup_family (line {}): \"V4_PREFERRED\" is not supported: weir has AUTO, V4_ONLY and V6_ONLY",
                l("V4_PREFERRED")
            ),
            format!(
                "use_tcp_for_dns_lookups (line {}): weir asks DNS over UDP, and over TCP when a reply is truncated or UDP fails; it cannot use TCP only",
                l("use_tcp")
            ),
            format!(
                "dns_resolution_config.dns_resolver_options.no_default_search_domain (line {}): weir has this setting for the whole proxy only (top-level dns); move it to the bootstrap's typed_dns_resolver_config",
                l("no_default_search_domain")
            ),
            format!(
                "load_assignment.endpoints[0].priority (line {}): weir has no priorities: every endpoint is used",
                l("priority: 1")
            ),
            format!(
                "load_assignment.endpoints[0].lb_endpoints[0].health_status (line {}): \"DRAINING\" is not supported: weir sends to every endpoint it has: leave unhealthy ones out",
                l("DRAINING")
            ),
            format!(
                "load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight (line {}): weir balances over endpoints without weights; split traffic by weight between clusters with weighted_clusters",
                l("load_balancing_weight")
            ),
            format!(
                "load_assignment.policy (line {}): weir has no overprovisioning or drop policy",
                l("  policy:")
            ),
            format!(
                "circuit_breakers.thresholds[1] (line {}): a second DEFAULT threshold: weir has one set of limits",
                l("circuit_breakers")
            ),
            format!(
                "outlier_detection.enforcing_consecutive_5xx (line {}): weir ejects always or (gateway failures) as Envoy's 5xx count does: 50% enforcement has no equivalent",
                l("outlier_detection")
            ),
            format!(
                "outlier_detection.success_rate_minimum_hosts (line {}): weir's outlier detection has consecutive_5xx, consecutive_gateway_failure, interval, base_ejection_time and max_ejection_percent only",
                l("outlier_detection")
            ),
            format!(
                "typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.use_downstream_protocol_config (line {}): weir speaks one protocol to a cluster: HTTP/1.1, or HTTP/2 with explicit_http_config.http2_protocol_options",
                l("use_downstream")
            ),
            format!(
                "typed_extension_protocol_options.envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions (line {}): protocol options \"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions\" are not supported: weir takes envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                l("TcpProtocolOptions")
            ),
            format!(
                "health_checks (line {}): weir has no active health checks; outlier_detection ejects failing endpoints passively",
                l("health_checks")
            ),
        ]
    );
}

#[test]
fn forward_proxy_and_upstream_tls_refusals() {
    let yaml = "name: p
cluster_type:
  name: envoy.clusters.dynamic_forward_proxy
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
    allow_coalesced_connections: true
    dns_cache_config: {name: c, dns_resolution_config: {dns_resolver_options: {no_default_search_domain: true}}}
load_assignment: {endpoints: []}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
";
    let l = |needle| line(yaml, needle);
    assert_eq!(
        run(yaml).refusals,
        [
            format!(
                "cluster_type.typed_config.allow_coalesced_connections (line {}): weir has no allow_coalesced_connections",
                l("allow_coalesced")
            ),
            format!(
                "cluster_type.typed_config.dns_cache_config.dns_resolution_config.dns_resolver_options.no_default_search_domain (line {}): weir has this setting for the whole proxy only (top-level dns); move it to the bootstrap's typed_dns_resolver_config",
                l("dns_cache_config")
            ),
            format!(
                "load_assignment (line {}): a dynamic forward proxy cluster has no endpoints: each request goes to its Host",
                l("load_assignment")
            ),
            format!(
                "transport_socket (line {}): weir does not originate TLS on a DYNAMIC_FORWARD_PROXY cluster yet",
                l("transport_socket")
            ),
        ]
    );
    let yaml = format!(
        "name: c\n{ENDPOINT}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    allow_renegotiation: true
    common_tls_context:
      validation_context:
        trusted_ca: {{filename: /ca.pem}}
        trust_chain_verification: ACCEPT_UNTRUSTED
        match_typed_subject_alt_names: [{{san_type: DNS, matcher: {{exact: a.example}}}}]
      tls_params: {{tls_maximum_protocol_version: TLSv1_2}}
      tls_certificates:
      - {{certificate_chain: {{filename: /a.pem}}, private_key: {{filename: /a.key}}}}
      - {{certificate_chain: {{filename: /b.pem}}, private_key: {{filename: /b.key}}}}"
    );
    let at = "transport_socket.typed_config";
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        run(&yaml).refusals,
        [
            format!(
                "{at}.common_tls_context.tls_params.tls_maximum_protocol_version (line {}): \"TLSv1_2\" is not supported: weir always allows TLS 1.3",
                l("tls_maximum")
            ),
            format!(
                "{at}.common_tls_context.validation_context (line {}): weir either verifies against trusted_ca or accepts any certificate: choose one",
                l("validation_context")
            ),
            format!(
                "{at}.common_tls_context.validation_context.match_typed_subject_alt_names (line {}): weir verifies the upstream certificate against tls.sni (the endpoint's name by default), not a list of SANs",
                l("match_typed")
            ),
            format!(
                "{at}.allow_renegotiation (line {}): weir never renegotiates TLS",
                l("allow_renegotiation")
            ),
            format!(
                "{at}.common_tls_context.tls_certificates (line {}): weir presents one client certificate to an upstream",
                l("tls_certificates")
            ),
        ]
    );
}
