//! Whole bootstraps: the seed fixtures in `config/envoy/`, the output and
//! its header, refusals across a document, errors, and writing the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::test_support::line;
use super::*;
use crate::config::{
    ClusterTarget, DiscoveryType, DnsLookupFamily, FileChecks, LbPolicy, PathMatch,
    ResolverAddress, RouteAction, parse_str, parse_str_with,
};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn fixture(name: &str) -> Conversion {
    convert_file(&repo(&format!("config/envoy/{name}"))).unwrap_or_else(|e| panic!("{e}"))
}

fn convert(yaml: &str) -> Result<Conversion, ConvertError> {
    convert_str(yaml, "envoy.yaml")
}

fn refusals(yaml: &str) -> Vec<String> {
    match convert(yaml) {
        Err(ConvertError::Refused { refusals, .. }) => {
            refusals.iter().map(ToString::to_string).collect()
        }
        other => panic!("not refused: {other:?}"),
    }
}

/// `prefix->cluster(s)` for each route of the first virtual host.
fn route_targets(config: &ProxyConfig, listener: usize) -> Vec<String> {
    config.listeners[listener].virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match (&r.matcher.path_match, &r.action) {
            (PathMatch::Prefix(p), RouteAction::Route(f)) => {
                format!("{p}->{}", f.target.cluster_names().join(","))
            }
            other => format!("{other:?}"),
        })
        .collect()
}

/// A minimal bootstrap around one listener's routes and the clusters.
fn bootstrap(routes: &str, clusters: &str) -> String {
    format!(
        "static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: vh
              domains: ['*']
              routes:
{routes}
          http_filters: [{{name: envoy.filters.http.router}}]
  clusters:
{clusters}"
    )
}

const CLUSTER_C: &str = "  - name: c
    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]}
";

#[test]
fn the_fixtures_are_the_seeds_and_nothing_else() {
    let mut names: Vec<String> = std::fs::read_dir(repo("config/envoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "seed-000-egress.yaml",
            "seed-001-films.yaml",
            "seed-002-split.yaml",
            "seed-003-edge.yaml"
        ]
    );
}

#[test]
fn every_fixture_converts_and_loads_with_weirs_loader() {
    for name in [
        "seed-000-egress.yaml",
        "seed-001-films.yaml",
        "seed-002-split.yaml",
        "seed-003-edge.yaml",
    ] {
        let c = fixture(name);
        let loaded =
            parse_str_with(&c.yaml, name, FileChecks::Skip).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded, c.config, "{name}");
        // As `weir check-config` loads it: only seed 001 names files, its
        // certificate and key, which are not in the repository.
        match parse_str(&c.yaml, name) {
            Ok(_) => assert_ne!(name, "seed-001-films.yaml"),
            Err(err) => {
                assert_eq!(name, "seed-001-films.yaml", "{err}");
                let messages: Vec<_> = err.issues().iter().map(|i| i.message.as_str()).collect();
                assert_eq!(
                    messages,
                    [
                        "file /etc/envoy-cert.pem does not exist",
                        "file /etc/envoy-private.pem does not exist"
                    ]
                );
            }
        }
    }
}

#[test]
fn seed_000_egress_is_its_hand_translation_with_envoys_admin() {
    let c = fixture("seed-000-egress.yaml").config;
    let hand = crate::config::load_file(&repo("config/seed-000-egress.yaml")).unwrap();
    assert_eq!(c.listeners, hand.listeners);
    assert_eq!(c.clusters, hand.clusters);
    assert_eq!(
        c.clusters[0].discovery_type,
        DiscoveryType::DynamicForwardProxy
    );
    assert_eq!(
        c.clusters[0].dns_cache.name.as_deref(),
        Some("proxy_dns_cache")
    );
    assert_eq!(c.clusters[0].dns_lookup_family, DnsLookupFamily::V4Only);
    // Envoy's sidecar admin listened on every address for Prometheus; the
    // hand translation moved it to loopback.
    assert_eq!(c.admin.unwrap().address.to_string(), "0.0.0.0:8001");
}

#[test]
fn seed_001_films_routes_both_listeners_to_the_two_services() {
    let c = fixture("seed-001-films.yaml").config;
    let hand = crate::config::load_file(&repo("config/seed-001-films.yaml")).unwrap();
    let names: Vec<_> = c.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ingress_http", "ingress_https"]);
    assert_eq!(c.listeners[0].address.to_string(), "0.0.0.0:8080");
    assert_eq!(c.listeners[1].address.to_string(), "0.0.0.0:8443");
    assert_eq!(route_targets(&c, 0), route_targets(&hand, 0));
    assert_eq!(route_targets(&c, 1), route_targets(&hand, 0));
    assert_eq!(
        route_targets(&c, 0),
        [
            "/films->film-service-cluster",
            "/ratings->rating-service-cluster"
        ]
    );
    assert_eq!(c.listeners[0].tls, None);
    let tls = c.listeners[1].tls.as_ref().expect("8443 terminates TLS");
    assert_eq!(
        tls.certificates[0].cert_chain_file.as_deref(),
        Some(Path::new("/etc/envoy-cert.pem"))
    );
    assert_eq!(
        tls.certificates[0].private_key_file.as_deref(),
        Some(Path::new("/etc/envoy-private.pem"))
    );
    assert!(
        tls.alpn.is_empty(),
        "seed 001: the server agrees to no protocol"
    );
    for (ours, theirs) in c.clusters.iter().zip(&hand.clusters) {
        assert_eq!(ours.name, theirs.name);
        assert_eq!(ours.discovery_type, theirs.discovery_type);
        assert_eq!(ours.connect_timeout, theirs.connect_timeout);
        assert_eq!(ours.lb_policy, theirs.lb_policy);
        assert_eq!(ours.endpoints[0].port, theirs.endpoints[0].port);
    }
    // The load_assignment's cluster_name (film-service-cl-name) is not a name in weir.
    assert_eq!(c.clusters[0].endpoints[0].address, "film-service");
    assert_eq!(c.clusters.len(), 2);
}

#[test]
fn seed_002_split_is_the_worked_example_of_docs_envoy_md() {
    let c = fixture("seed-002-split.yaml").config;
    assert_eq!(c.listeners[0].name, "ingress_http");
    assert_eq!(c.listeners[0].address.to_string(), "0.0.0.0:80");
    let RouteAction::Route(f) = &c.listeners[0].virtual_hosts[0].routes[0].action else {
        panic!("not a forward")
    };
    let ClusterTarget::Weighted(split) = &f.target else {
        panic!("not a split")
    };
    let split: Vec<_> = split.iter().map(|w| (w.name.as_str(), w.weight)).collect();
    assert_eq!(
        split,
        [
            ("backend-app-v1_cluster", 80),
            ("backend-app-v2_cluster", 20)
        ]
    );
    for (cluster, host) in c.clusters.iter().zip(["backend-app-v1", "backend-app-v2"]) {
        assert_eq!(cluster.discovery_type, DiscoveryType::StrictDns);
        assert_eq!(*cluster.connect_timeout, Duration::from_millis(250));
        assert_eq!(cluster.dns_lookup_family, DnsLookupFamily::V4Only);
        assert_eq!(cluster.lb_policy, LbPolicy::LeastRequest);
        assert_eq!(cluster.endpoints[0].address, host);
        assert_eq!(cluster.endpoints[0].port, 8080);
    }
}

#[test]
fn seed_002_with_v2_type_urls_converts_as_the_v3_fixture() {
    let v2 = convert_file(&repo("agent/src/convert/testdata/seed-002-split-v2.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v2.config, fixture("seed-002-split.yaml").config);
}

#[test]
fn seed_003_edge_keeps_the_route_order() {
    let c = fixture("seed-003-edge.yaml").config;
    assert_eq!(c.listeners[0].address.to_string(), "0.0.0.0:30000");
    assert_eq!(
        route_targets(&c, 0),
        [
            "/pong->pong-cluster",
            "/ping->ping-cluster",
            "/->ping-cluster"
        ]
    );
    let hand = crate::config::load_file(&repo("config/seed-003-edge.yaml")).unwrap();
    assert_eq!(route_targets(&c, 0), route_targets(&hand, 0));
    let clusters: Vec<_> = c
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.discovery_type,
                c.dns_lookup_family,
                *c.connect_timeout,
                c.endpoints[0].address.as_str(),
            )
        })
        .collect();
    assert_eq!(
        clusters,
        [
            (
                "ping-cluster",
                DiscoveryType::StrictDns,
                DnsLookupFamily::V4Only,
                Duration::from_millis(250),
                "ping-svc.default.svc.cluster.local"
            ),
            (
                "pong-cluster",
                DiscoveryType::StrictDns,
                DnsLookupFamily::V4Only,
                Duration::from_millis(250),
                "pong-svc.default.svc.cluster.local"
            ),
        ]
    );
}

#[test]
fn output_is_weirs_yaml_without_its_defaults_under_a_header_naming_the_source() {
    let text = std::fs::read_to_string(repo("config/envoy/seed-003-edge.yaml")).unwrap();
    let c = convert_str(&text, "seed-003-edge.yaml").unwrap();
    assert_eq!(
        c.yaml,
        "\
# Converted by `weir convert-envoy` from the Envoy bootstrap seed-003-edge.yaml.
# Check it with `weir check-config FILE` where weir runs (docs/envoy.md).
# Notes from the conversion:
# - admin.access_log_path (line 63): weir writes no admin access log: left out
# - admin.address (line 64): the admin on 0.0.0.0:9901 answers /config_dump to anyone who can reach it, as Envoy's did; consider 127.0.0.1 and a stats.address for Prometheus (docs/envoy.md)
admin:
  address: 0.0.0.0:9901
listeners:
- name: ingress_http
  address: 0.0.0.0:30000
  virtual_hosts:
  - name: local_service
    domains:
    - '*'
    routes:
    - match:
        prefix: /pong
      route:
        cluster: pong-cluster
    - match:
        prefix: /ping
      route:
        cluster: ping-cluster
    - match:
        prefix: /
      route:
        cluster: ping-cluster
clusters:
- name: ping-cluster
  type: STRICT_DNS
  connect_timeout: 250ms
  dns_lookup_family: V4_ONLY
  endpoints:
  - address: ping-svc.default.svc.cluster.local
    port: 8080
- name: pong-cluster
  type: STRICT_DNS
  connect_timeout: 250ms
  dns_lookup_family: V4_ONLY
  endpoints:
  - address: pong-svc.default.svc.cluster.local
    port: 8080
"
    );
    assert_eq!(c.notes.len(), 2);
}

#[test]
fn a_bootstrap_using_every_mapped_field_converts_whole() {
    let c = convert_file(&repo("agent/src/convert/testdata/mapped.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let body: String = c
        .yaml
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let expected =
        std::fs::read_to_string(repo("agent/src/convert/testdata/mapped.weir.yaml")).unwrap();
    assert_eq!(body, expected);
    let dns = &c.config.dns;
    assert_eq!(
        dns.resolvers,
        [
            ResolverAddress("10.96.0.10:53".parse().unwrap()),
            ResolverAddress("[::1]:5353".parse().unwrap())
        ]
    );
    assert_eq!(*dns.timeout, Duration::from_secs(3));
    assert_eq!(dns.attempts, 4);
    assert_eq!(dns.search_domains, Some(vec![]));
}

/// Inline PEM is written into the weir config, the private keys whole:
/// the config is what weir runs, though `/config_dump` hides them.
#[test]
fn inline_pem_is_written_with_the_keys() {
    let yaml = "static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 8443}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {inline_string: SERVER CERT}
              private_key: {inline_string: SERVER KEY}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_https
          route_config:
            virtual_hosts: [{name: vh, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c}}]}]
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: c
    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 443}}}}]}]}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          validation_context: {trusted_ca: {inline_string: UPSTREAM CA}}
          tls_certificates: [{certificate_chain: {inline_string: CLIENT CERT}, private_key: {inline_string: CLIENT KEY}}]
";
    let c = convert(yaml).unwrap_or_else(|e| panic!("{e}"));
    for (field, text) in [
        ("cert_chain", "SERVER CERT"),
        ("private_key", "SERVER KEY"),
        ("ca", "UPSTREAM CA"),
        ("client_cert", "CLIENT CERT"),
        ("client_key", "CLIENT KEY"),
    ] {
        assert!(
            c.yaml.contains(&format!("{field}: {text}\n")),
            "{field} in:\n{}",
            c.yaml
        );
    }
    assert!(!c.yaml.contains("redacted"), "{}", c.yaml);
    assert_eq!(Readers::of(&c.config), Readers::Owner, "written 0600");
    let mut keyless = c.config.clone();
    keyless.listeners[0].tls.as_mut().unwrap().certificates[0].private_key = None;
    assert_eq!(Readers::of(&keyless), Readers::Owner, "the cluster's key");
    keyless.clusters[0].tls.as_mut().unwrap().client_key = None;
    assert_eq!(Readers::of(&keyless), Readers::Any);
}

#[test]
fn json_bootstraps_convert_as_yaml_ones() {
    let text = std::fs::read_to_string(repo("config/envoy/seed-003-edge.yaml")).unwrap();
    let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let json = serde_json::to_string_pretty(&value).unwrap();
    assert_eq!(
        convert_str(&json, "edge.json").unwrap().config,
        fixture("seed-003-edge.yaml").config
    );
    let json = "{
  \"static_resources\": {
    \"listeners\": [],
    \"clusters\": [
      {\"name\": \"c\", \"type\": \"EDS\"}
    ]
  }
}";
    assert_eq!(
        refusals(json),
        [
            "static_resources.clusters[0].type (line 5): weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS"
        ]
    );
}

#[test]
fn protobuf_json_camel_case_names_are_read() {
    let c = convert(
        "staticResources:
  listeners:
  - address: {socketAddress: {address: 127.0.0.1, portValue: 8080}}
    filterChains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typedConfig:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          statPrefix: camel
          routeConfig: {virtualHosts: [{name: vh, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}
          httpFilters: [{name: envoy.filters.http.router}]
  clusters:
  - name: c
    connectTimeout: 1s
    loadAssignment: {endpoints: [{lbEndpoints: [{endpoint: {address: {socketAddress: {address: 10.0.0.1, portValue: 80}}}}]}]}
",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.config.listeners[0].name, "camel");
    assert_eq!(
        *c.config.clusters[0].connect_timeout,
        Duration::from_secs(1)
    );
}

#[test]
fn yaml_anchors_and_merge_keys_are_spread() {
    let c = convert(&bootstrap(
        "              - {match: {prefix: /}, route: {cluster: c}}",
        "  - &base
    name: c
    connect_timeout: 2s
    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]}
  - <<: *base
    name: d
",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.config.clusters[1].name, "d");
    assert_eq!(
        *c.config.clusters[1].connect_timeout,
        Duration::from_secs(2)
    );
}

#[test]
fn every_refusal_in_a_document_is_listed_with_its_line() {
    let yaml = format!(
        "dynamic_resources: {{ads_config: {{}}}}
{}
stats_sinks: [{{name: envoy.stat_sinks.statsd}}]",
        bootstrap(
            "              - match: {prefix: /}
                route: {cluster: c, hash_policy: []}",
            &format!("{CLUSTER_C}  - name: e\n    type: EDS\n"),
        )
    )
    .replace(
        "          stat_prefix: ingress_http\n",
        "          stat_prefix: ingress_http\n          access_log: [{typed_config: {'@type': type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig}}]\n",
    );
    let err = convert(&yaml).unwrap_err();
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        err.to_string(),
        format!(
            "envoy.yaml: dynamic_resources (line 1): weir has no xDS: it reads one static file, reloaded when it changes; put every resource in static_resources
envoy.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0].typed_config (line {}): access logger envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig is not supported: weir writes to files, stdout and stderr (envoy.access_loggers.file, stdout, stderr)
envoy.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.hash_policy (line {}): weir has no hash-based load balancing
envoy.yaml: static_resources.clusters[1].type (line {}): weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS
envoy.yaml: stats_sinks (line {}): weir pushes no stats and has no stat tags to configure: Prometheus scrapes /stats/prometheus on admin.address or stats.address
envoy.yaml: 5 field(s) cannot be carried over to weir; nothing was written",
            l("access_log"),
            l("hash_policy"),
            l("type: EDS"),
            l("stats_sinks"),
        )
    );
}

#[test]
fn bootstrap_refusals() {
    assert_eq!(
        refusals("admin: {address: {socket_address: {address: 127.0.0.1, port_value: 9901}}}\n"),
        ["(document root): static_resources is required: weir has no dynamic resources"]
    );
    assert_eq!(
        refusals(
            "layered_runtime: {layers: []}
static_resources:
  secrets: [{name: server_cert}]
  listeners: []
admin:
  profile_path: /tmp/envoy.prof
  address: {socket_address: {address: localhost, port_value: 9901}}
"
        ),
        [
            "layered_runtime (line 1): weir has no runtime layer; its settings live in the config file",
            "static_resources.secrets (line 3): weir has no SDS secrets: name the PEM files with `filename` where the certificate is used",
            "admin.address.socket_address.address (line 7): the admin address must be an IP address, found \"localhost\"",
        ]
    );
    assert_eq!(
        refusals("[]"),
        ["(document root): expected a mapping (Bootstrap), found a list"]
    );
    assert_eq!(
        refusals(""),
        ["(document root): expected a mapping (Bootstrap), found nothing"]
    );
}

#[test]
fn yaml_syntax_errors_name_the_file_and_line() {
    let err = convert("static_resources:\n  listeners: [\n").unwrap_err();
    assert!(
        matches!(err, ConvertError::Syntax { line: Some(3), .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "envoy.yaml: line 3: invalid YAML or JSON: did not find expected node content, while parsing a flow node"
    );
    let err = convert_file(Path::new("/nonexistent/envoy.yaml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/envoy.yaml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn what_weirs_loader_rejects_is_told_at_the_envoy_node_it_came_from() {
    let yaml = bootstrap(
        "              - match: {prefix: /}
                route: {cluster: missing}",
        "  - name: c
    type: STATIC
    load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: films.local, port_value: 80}}}}]}]}
",
    );
    let err = convert(&yaml).unwrap_err();
    let ConvertError::Rejected { issues, .. } = &err else {
        panic!("{err:?}")
    };
    let got: Vec<_> = issues.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            format!(
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0] (line {}): in weir's listeners[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster \"missing\" (defined: c)",
                line(&yaml, "- match")
            ),
            format!(
                "static_resources.clusters[0] (line {}): in weir's clusters[0].endpoints[0].address: STATIC cluster endpoints must be IP literals, got \"films.local\" (use type: STRICT_DNS for DNS names)",
                line(&yaml, "- name: c")
            ),
        ]
    );
    assert!(err.to_string().ends_with(
        "envoy.yaml: weir's config loader rejects the converted config; nothing was written"
    ));
}

#[test]
fn a_repeated_stat_prefix_takes_the_envoy_listener_name() {
    let one = bootstrap(
        "              - {match: {prefix: /}, route: {cluster: c}}",
        CLUSTER_C,
    );
    let listener = one
        .split("  listeners:\n")
        .nth(1)
        .unwrap()
        .split("  clusters:\n")
        .next()
        .unwrap()
        .replace("port_value: 8080", "port_value: 8081");
    let two = one.replace(
        "  clusters:\n",
        &format!(
            "{}  clusters:\n",
            listener.replace("name: l\n", "name: second\n")
        ),
    );
    let c = convert(&two).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = c.config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["ingress_http", "second"]);
    assert!(c.notes.iter().any(|n| {
        n.path
            == "static_resources.listeners[1].filter_chains[0].filters[0].typed_config.stat_prefix"
            && n.message
                .starts_with("stat_prefix \"ingress_http\" is used by an earlier listener")
    }));
    let unnamed = one.replace(
        "  clusters:\n",
        &format!(
            "{}  clusters:\n",
            listener.replace("  - name: l\n", "  -\n")
        ),
    );
    let got = refusals(&unnamed);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("stat_prefix \"ingress_http\" is used by an earlier listener, and weir's listener names (its stat_prefix) are unique: give each one its own"), "{got:?}");
}

#[test]
fn forward_proxy_filter_and_cluster_must_share_their_cache() {
    let doc = |filter_cache: &str| {
        bootstrap(
            "              - {match: {prefix: /}, route: {cluster: p}}",
            "  - name: p
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        '@type': type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {name: cache, dns_lookup_family: V4_ONLY}
",
        )
        .replace(
            "http_filters: [{name: envoy.filters.http.router}]",
            &format!(
                "http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config: {filter_cache}
          - name: envoy.filters.http.router"
            ),
        )
    };
    let same = convert(&doc("{name: cache, dns_lookup_family: V4_ONLY}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        same.config.clusters[0].dns_cache.name.as_deref(),
        Some("cache")
    );
    let yaml = doc("{name: other}");
    assert_eq!(
        refusals(&yaml),
        [format!(
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.dns_cache_config.name (line {}): no dynamic forward proxy cluster uses the DNS cache \"other\": weir keeps the cache on the cluster (cluster_type envoy.clusters.dynamic_forward_proxy)",
            line(&yaml, "{name: other}")
        )]
    );
    let yaml = doc("{name: cache, dns_lookup_family: V6_ONLY}");
    assert_eq!(
        refusals(&yaml),
        [format!(
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.dns_cache_config (line {}): differs from the cluster's dns_cache_config of the same name (static_resources.clusters[0].cluster_type.typed_config.dns_cache_config); Envoy requires them identical and weir keeps one, on the cluster",
            line(&yaml, "V6_ONLY")
        )]
    );
}

#[test]
fn a_written_config_holding_private_keys_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weir.yaml");
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_output(&out, "keys: here\n", Readers::Owner).unwrap();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn write_output_replaces_the_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weir.yaml");
    std::fs::write(&out, "old").unwrap();
    write_output(&out, "new: config\n", Readers::Any).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "new: config\n");
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "no temporary file left");
    let missing = dir.path().join("no-such-dir").join("weir.yaml");
    let err = write_output(&missing, "x", Readers::Any).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot write: ", missing.display()))
    );
    assert!(!dir.path().join("no-such-dir").exists());
}
