use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::config::*;

fn parse(yaml: &str) -> ProxyConfig {
    match parse_str(yaml, "t.yaml") {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    }
}

fn error(yaml: &str) -> String {
    match parse_str(yaml, "t.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(err) => err.to_string(),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

const MINIMAL: &str = "\
listeners:
  - name: l
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: vh
        domains: [\"*\"]
        routes:
          - match: {prefix: /}
            route: {cluster: c}
          - match: {path: /moved}
            redirect: {host_redirect: example.com}
          - match: {path: /x}
            route:
              cluster: c
              retry_policy: {retry_on: [5xx]}
            request_headers_to_add: [{name: x-a, value: b}]
clusters:
  - name: c
    endpoints: [{address: 127.0.0.1, port: 9000}]
";

#[test]
fn defaults_live_beside_the_types() {
    let config = parse(MINIMAL);
    assert_eq!(config.admin, None);
    let listener = &config.listeners[0];
    assert_eq!(
        listener.timeouts,
        ListenerTimeoutsConfig {
            idle: ConfigDuration::from_secs(3600),
            request_headers: ConfigDuration::from_secs(10),
            request: ConfigDuration::from_secs(0),
        }
    );
    assert_eq!(
        listener.limits,
        ListenerLimitsConfig {
            max_request_headers_kb: 60,
            max_headers_count: 100,
            max_connections_per_client: 4096,
        }
    );
    let routes = &listener.virtual_hosts[0].routes;
    assert_eq!(routes[0].name, None);
    assert_eq!(
        routes[0].matcher,
        RouteMatchConfig {
            path_match: PathMatch::Prefix("/".into()),
            case_sensitive: true,
            headers: vec![],
            methods: vec![],
            query_parameters: vec![],
        }
    );
    assert_eq!(
        routes[0].action,
        RouteAction::Route(ForwardActionConfig {
            target: ClusterTarget::Single("c".into()),
            timeout: ConfigDuration::from_secs(15),
            prefix_rewrite: None,
            host_rewrite_literal: None,
            retry_policy: None,
        })
    );
    assert_eq!(
        routes[1].action,
        RouteAction::Redirect(RedirectConfig {
            scheme_redirect: None,
            host_redirect: Some("example.com".into()),
            port_redirect: None,
            path_redirect: None,
            prefix_rewrite: None,
            response_code: 301,
        })
    );
    let RouteAction::Route(forward) = &routes[2].action else {
        panic!("not a route: {:?}", routes[2].action);
    };
    assert_eq!(
        forward.retry_policy,
        Some(RetryPolicyConfig {
            retry_on: vec![RetryOn::FiveXx],
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retry_host_predicate: Vec::new(),
            host_selection_retry_max_attempts: 1,
            num_retries: 1,
            per_try_timeout: None,
            retry_back_off: RetryBackOffConfig {
                base_interval: ConfigDuration::from_millis(25),
                max_interval: None,
            },
        })
    );
    assert_eq!(
        routes[2].request_headers_to_add,
        vec![HeaderValueOptionConfig {
            name: "x-a".into(),
            value: "b".into(),
            append: true
        }]
    );
    assert_eq!(
        config.clusters[0],
        ClusterConfig {
            name: "c".into(),
            discovery_type: DiscoveryType::Static,
            connect_timeout: ConfigDuration::from_secs(5),
            lb_policy: LbPolicy::RoundRobin,
            dns_refresh_rate: None,
            dns_lookup_family: DnsLookupFamily::Auto,
            dns_resolvers: Vec::new(),
            respect_dns_ttl: false,
            endpoints: vec![EndpointConfig {
                address: "127.0.0.1".into(),
                port: 9000
            }],
            dns_cache: crate::config::cluster::DnsCacheConfig {
                name: None,
                max_hosts: 1024,
                host_ttl: ConfigDuration::from_secs(300),
            },
            circuit_breakers: CircuitBreakersConfig {
                max_connections: 1024,
                max_pending_requests: 1024,
                max_requests: 1024,
                max_retries: 3,
            },
            outlier_detection: None,
            upstream_http: UpstreamHttpConfig {
                idle_timeout: ConfigDuration::from_secs(3600),
                max_requests_per_connection: 0,
            },
            tls: None,
            http2: false,
        }
    );
    assert_eq!(config.summary(), "1 listener(s), 3 route(s), 1 cluster(s)");
}

const FULL: &str = "\
admin:
  address: 127.0.0.1:9901
listeners:
  - name: ingress_http
    address: \"[::1]:8080\"
    timeouts: {idle: 5m, request_headers: 2s, request: 30s}
    limits: {max_request_headers_kb: 32, max_headers_count: 50}
    virtual_hosts:
      - name: backend
        domains: [films.local, \"*.films.local\"]
        request_headers_to_add: [{name: x-vh, value: \"1\", append: false}]
        routes:
          - name: films
            match:
              safe_regex: \"/films/[0-9]+\"
              case_sensitive: false
              headers:
                - {name: x-canary, exact: \"1\", invert_match: true}
                - {name: x-trace, present: false}
              methods: [GET, POST]
              query_parameters:
                - {name: debug, safe_regex: \"1|true\"}
            route:
              weighted_clusters:
                - {name: backend_v1, weight: 80}
                - {name: backend_v2, weight: 20}
              timeout: 0s
              host_rewrite_literal: films.internal
              retry_policy:
                retry_on: [5xx, gateway-error, connect-failure, reset, retriable-4xx]
                num_retries: 3
                per_try_timeout: 1s
                retry_back_off: {base_interval: 10ms, max_interval: 1s}
            request_headers_to_remove: [x-secret]
            response_headers_to_add: [{name: x-served-by, value: weir}]
            response_headers_to_remove: [server]
          - match: {prefix: /health}
            direct_response: {status: 200, body: ok}
clusters:
  - name: backend_v1
    type: STRICT_DNS
    connect_timeout: 0.25s
    lb_policy: LEAST_REQUEST
    dns_refresh_rate: 1m
    dns_lookup_family: V6_ONLY
    endpoints: [{address: localhost, port: 5000}]
    circuit_breakers: {max_connections: 1, max_pending_requests: 2, max_requests: 3, max_retries: 4}
    outlier_detection: {consecutive_5xx: 1, consecutive_gateway_failure: 2, interval: 1s, base_ejection_time: 2s, max_ejection_percent: 50}
    upstream_http: {idle_timeout: 90s, max_requests_per_connection: 100}
  - name: backend_v2
    lb_policy: RANDOM
    endpoints: [{address: \"::1\", port: 5001}]
    outlier_detection: {}
";

/// Envoy's refresh defaults differ by type: a STRICT_DNS cluster's
/// `dns_refresh_rate` is 5 s, a dynamic forward proxy's DNS cache's 60 s.
#[test]
fn dns_refresh_rate_defaults_by_cluster_type() {
    let config = parse(&format!(
        "{MINIMAL}  - name: strict
    type: STRICT_DNS
    endpoints: [{{address: films.local, port: 80}}]
  - name: forward
    type: DYNAMIC_FORWARD_PROXY
  - name: forward_set
    type: DYNAMIC_FORWARD_PROXY
    dns_refresh_rate: 2s
"
    ));
    let rate = |name: &str| {
        let cluster = config.clusters.iter().find(|c| c.name == name).unwrap();
        *cluster.refresh_rate()
    };
    assert_eq!(rate("strict"), Duration::from_secs(5));
    assert_eq!(rate("forward"), Duration::from_secs(60));
    assert_eq!(rate("forward_set"), Duration::from_secs(2));
}

#[test]
fn every_field_is_read() {
    let config = parse(FULL);
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            address: addr("127.0.0.1:9901")
        })
    );
    let listener = &config.listeners[0];
    assert_eq!(listener.address, addr("[::1]:8080"));
    assert_eq!(*listener.timeouts.idle, Duration::from_secs(300));
    assert_eq!(
        listener.timeouts.request.non_zero(),
        Some(Duration::from_secs(30))
    );
    assert_eq!(listener.limits.max_headers_count, 50);
    let vhost = &listener.virtual_hosts[0];
    assert_eq!(vhost.domains, ["films.local", "*.films.local"]);
    assert!(!vhost.request_headers_to_add[0].append);
    let route = &vhost.routes[0];
    assert_eq!(route.name.as_deref(), Some("films"));
    assert_eq!(
        route.matcher.path_match,
        PathMatch::SafeRegex("/films/[0-9]+".into())
    );
    assert!(!route.matcher.case_sensitive);
    assert_eq!(
        route.matcher.headers,
        [
            HeaderMatcherConfig {
                name: "x-canary".into(),
                value_match: ValueMatch::Exact("1".into()),
                invert_match: true,
            },
            HeaderMatcherConfig {
                name: "x-trace".into(),
                value_match: ValueMatch::Present(false),
                invert_match: false,
            },
        ]
    );
    assert_eq!(route.matcher.methods, ["GET", "POST"]);
    assert_eq!(
        route.matcher.query_parameters,
        [QueryParameterMatcherConfig {
            name: "debug".into(),
            value_match: ValueMatch::SafeRegex("1|true".into()),
        }]
    );
    let RouteAction::Route(forward) = &route.action else {
        panic!("not a route: {:?}", route.action);
    };
    assert_eq!(
        forward.target,
        ClusterTarget::Weighted(vec![
            WeightedClusterConfig {
                name: "backend_v1".into(),
                weight: 80
            },
            WeightedClusterConfig {
                name: "backend_v2".into(),
                weight: 20
            },
        ])
    );
    assert_eq!(forward.target.cluster_names(), ["backend_v1", "backend_v2"]);
    assert_eq!(forward.timeout.non_zero(), None);
    assert_eq!(
        forward.host_rewrite_literal.as_deref(),
        Some("films.internal")
    );
    let retry = forward
        .retry_policy
        .as_ref()
        .map(|r| (r.retry_on.clone(), r.num_retries, r.per_try_timeout));
    assert_eq!(
        retry,
        Some((
            vec![
                RetryOn::FiveXx,
                RetryOn::GatewayError,
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::Retriable4xx
            ],
            3,
            Some(ConfigDuration::from_secs(1))
        ))
    );
    assert_eq!(route.request_headers_to_remove, ["x-secret"]);
    assert_eq!(route.response_headers_to_remove, ["server"]);
    assert_eq!(
        vhost.routes[1].action,
        RouteAction::DirectResponse(DirectResponseConfig {
            status: 200,
            body: Some("ok".into())
        })
    );
    let v1 = &config.clusters[0];
    assert_eq!(v1.discovery_type, DiscoveryType::StrictDns);
    assert_eq!(*v1.connect_timeout, Duration::from_millis(250));
    assert_eq!(v1.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(v1.dns_lookup_family, DnsLookupFamily::V6Only);
    assert_eq!(*v1.refresh_rate(), Duration::from_secs(60));
    assert_eq!(v1.circuit_breakers.max_retries, 4);
    assert_eq!(
        v1.outlier_detection.map(|o| o.max_ejection_percent),
        Some(50)
    );
    assert_eq!(v1.upstream_http.max_requests_per_connection, 100);
    assert_eq!(config.clusters[1].lb_policy, LbPolicy::Random);
    assert_eq!(
        config.clusters[1].outlier_detection,
        Some(OutlierDetectionConfig::default())
    );
}

#[test]
fn serialized_config_parses_back_to_the_same_value() {
    for text in [MINIMAL, FULL] {
        let config = parse(text);
        let dumped = match serde_yaml::to_string(&config) {
            Ok(yaml) => yaml,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(parse(&dumped), config, "dump:\n{dumped}");
    }
    let dumped = serde_yaml::to_string(&parse(MINIMAL)).unwrap_or_default();
    assert!(dumped.contains("connect_timeout: 5s\n"), "{dumped}");
    assert!(dumped.contains("prefix: /\n"), "{dumped}");
}

#[test]
fn unknown_fields_name_the_path_and_line() {
    let yaml = MINIMAL.replace("    endpoints:", "    endpionts: []\n    endpoints:");
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].endpionts (line 19): unknown field `endpionts`, expected one of \
         `name`, `type`, `connect_timeout`, `lb_policy`, `dns_refresh_rate`, `dns_lookup_family`, \
         `dns_resolvers`, `respect_dns_ttl`, `endpoints`, `dns_cache`, `circuit_breakers`, `outlier_detection`, `upstream_http`, `tls`, `http2`"
    );
    let yaml = MINIMAL.replace("{prefix: /}", "{prefix: /, regex: x}");
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].virtual_hosts[0].routes[0].match.regex (line 8): unknown field \
         `regex`, expected one of `prefix`, `path`, `safe_regex`, `case_sensitive`, `headers`, \
         `methods`, `query_parameters`"
    );
    let yaml = MINIMAL.replace("retry_on: [5xx]", "retry_on: [5xx], retries: 2");
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].virtual_hosts[0].routes[2].route.retry_policy.retries (line 15): \
         unknown field `retries`, expected one of `retry_on`, `retriable_status_codes`, \
         `retriable_headers`, `retry_host_predicate`, `host_selection_retry_max_attempts`, \
         `num_retries`, `per_try_timeout`, `retry_back_off`"
    );
}

#[test]
fn one_of_choices_are_enforced() {
    let routes = "t.yaml: listeners[0].virtual_hosts[0].routes";
    let yaml = MINIMAL.replace("{prefix: /}", "{prefix: /, path: /a}");
    assert_eq!(
        error(&yaml),
        format!(
            "{routes}[0].match (line 8): exactly one of `prefix`, `path`, `safe_regex` is allowed, found prefix and path"
        )
    );
    let yaml = MINIMAL.replace("{prefix: /}", "{case_sensitive: false}");
    assert_eq!(
        error(&yaml),
        format!(
            "{routes}[0].match (line 8): exactly one of `prefix`, `path`, `safe_regex` is required, found none"
        )
    );
    let yaml = MINIMAL.replace("            route: {cluster: c}\n", "");
    assert_eq!(
        error(&yaml),
        format!(
            "{routes}[0] (line 8): exactly one of `route`, `direct_response`, `redirect` is required, found none"
        )
    );
    let yaml = MINIMAL.replace(
        "route: {cluster: c}",
        "route: {cluster: c}\n            direct_response: {status: 200}",
    );
    assert_eq!(
        error(&yaml),
        format!(
            "{routes}[0] (line 8): exactly one of `route`, `direct_response`, `redirect` is allowed, found route and direct_response"
        )
    );
    let yaml = MINIMAL.replace(
        "{cluster: c}",
        "{cluster: c, weighted_clusters: [{name: c, weight: 1}]}",
    );
    assert_eq!(
        error(&yaml),
        format!(
            "{routes}[0].route (line 9): exactly one of `cluster`, `weighted_clusters` is allowed, found cluster and weighted_clusters"
        )
    );
    let yaml = MINIMAL.replace(
        "{prefix: /}",
        "{prefix: /, headers: [{name: a, exact: b, present: true}]}",
    );
    assert_eq!(
        error(&yaml),
        format!(
            "{routes}[0].match.headers[0] (line 8): exactly one of `exact`, `safe_regex`, `present` is allowed, found exact and present"
        )
    );
}

#[test]
fn durations_addresses_and_enums_are_checked_while_reading() {
    let yaml = MINIMAL.replace("    endpoints:", "    connect_timeout: abc\n    endpoints:");
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].connect_timeout (line 19): invalid duration \"abc\": expected e.g. 250ms, 0.25s, 5s, 1m, 1h"
    );
    let yaml = MINIMAL.replace("    endpoints:", "    connect_timeout: 5\n    endpoints:");
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].connect_timeout (line 19): invalid duration 5: a plain number has no unit; expected e.g. 250ms, 0.25s, 5s, 1m, 1h"
    );
    let yaml = MINIMAL.replace("address: 127.0.0.1:8080", "address: localhost:8080");
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].address (line 3): invalid address \"localhost:8080\": expected ip:port, e.g. 127.0.0.1:8080 or [::1]:8080"
    );
    let yaml = MINIMAL.replace("[5xx]", "[5xx, timeout]");
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].virtual_hosts[0].routes[2].route.retry_policy.retry_on[1] (line 15): unknown variant `timeout`, expected one of `5xx`, `gateway-error`, `connect-failure`, `reset`, `retriable-4xx`, `retriable-status-codes`, `retriable-headers`, `refused-stream`, `cancelled`, `deadline-exceeded`, `resource-exhausted`, `internal`, `unavailable`"
    );
    let yaml = MINIMAL.replace("port: 9000", "port: -1");
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].endpoints[0].port (line 19): invalid type: integer `-1`, expected a whole number from 0 to 65535"
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let yaml = MINIMAL.replace("domains: [\"*\"]", "domains: [\"*\"");
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].virtual_hosts[0].domains (line 7): did not find expected ',' or ']', \
         while parsing a flow sequence at line 6 column 18"
    );
    let yaml = "listeners:\n  - name: a\n\taddress: x\n";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[0].name (line 3): found a tab character that violates indentation, \
         while scanning a plain scalar at line 2 column 11"
    );
    assert_eq!(
        error(""),
        "t.yaml: listeners: a config needs at least one listener"
    );
}

#[test]
fn load_file_names_the_file() {
    let path = std::path::Path::new("/nonexistent/weir.yaml");
    match load_file(path) {
        Ok(_) => panic!("read a missing file"),
        Err(err) => assert_eq!(
            err.to_string(),
            "/nonexistent/weir.yaml: cannot read config: No such file or directory (os error 2)"
        ),
    }
}

#[test]
fn admin_binds_loopback_unless_told_otherwise() {
    const REST: &str = "listeners: [{name: l, address: 127.0.0.1:0, virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]}]\n";
    let admin = |doc: &str| parse(&format!("{doc}{REST}")).admin.unwrap().address;
    assert_eq!(admin("admin: {}\n"), addr("127.0.0.1:15000"));
    assert_eq!(
        admin("admin: {address: \"15001\"}\n"),
        addr("127.0.0.1:15001")
    );
    assert_eq!(admin("admin: {address: \":0\"}\n"), addr("127.0.0.1:0"));
    assert_eq!(
        admin("admin: {address: \"0.0.0.0:15000\"}\n"),
        addr("0.0.0.0:15000")
    );
    assert!(
        error(&format!("admin: {{address: \"host:1\"}}\n{REST}"))
            .contains("expected ip:port or a port alone"),
    );
}

#[test]
fn dns_resolvers_take_an_ip_or_ip_port() {
    let yaml = format!(
        "{MINIMAL}dns:\n  resolvers: [\"10.96.0.10\", \"127.0.0.1:5353\", \"[::1]:5353\"]\n"
    );
    let servers: Vec<String> = parse(&yaml)
        .dns
        .resolvers
        .iter()
        .map(|a| a.0.to_string())
        .collect();
    assert_eq!(servers, ["10.96.0.10:53", "127.0.0.1:5353", "[::1]:5353"]);
    let bad = format!("{MINIMAL}dns:\n  resolvers: [\"kube-dns\"]\n");
    let err = error(&bad);
    assert!(
        err.contains("dns.resolvers[0]") && err.contains("invalid DNS server \"kube-dns\""),
        "{err}"
    );
}

#[test]
fn retry_on_as_envoy_writes_it() {
    // Istio's default route retry policy, as a comma-separated string.
    let yaml = MINIMAL.replace(
        "route: {cluster: c}",
        "route: {cluster: c, retry_policy: {retry_on: \"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\", retriable_status_codes: [503], num_retries: 2, retry_host_predicate: [envoy.retry_host_predicates.previous_hosts], host_selection_retry_max_attempts: 5}}",
    );
    assert_ne!(yaml, MINIMAL, "the route was found");
    let config = parse(&yaml);
    let RouteAction::Route(forward) = &config.listeners[0].virtual_hosts[0].routes[0].action else {
        panic!("not a route");
    };
    let policy = forward.retry_policy.as_ref().unwrap();
    assert_eq!(
        policy.retry_on,
        [
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
            RetryOn::Unavailable,
            RetryOn::Cancelled,
            RetryOn::RetriableStatusCodes
        ]
    );
    assert_eq!(policy.retriable_status_codes, [503]);
    assert_eq!(
        policy.retry_host_predicate,
        [RetryHostPredicate::PreviousHosts]
    );
    assert_eq!(policy.host_selection_retry_max_attempts, 5);
    let bad = MINIMAL.replace(
        "route: {cluster: c}",
        "route: {cluster: c, retry_policy: {retry_on: \"5xx,503\"}}",
    );
    let err = error(&bad);
    assert!(err.contains("retry_on") && err.contains("503"), "{err}");
}

#[test]
fn a_long_value_in_the_wrong_place_is_not_quoted_back() {
    // A private key pasted where a number belongs: named by its length.
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
    let yaml = MINIMAL.replace("port: 9000", &format!("port: {key:?}"));
    let e = error(&yaml);
    assert!(!e.contains("MIIE") && !e.contains("PRIVATE"), "{e}");
    assert!(
        e.starts_with("t.yaml: clusters[0].endpoints[0].port (line 19): invalid type: string (")
            && e.ends_with(" characters, not repeated here: it may be a secret), expected a whole number from 0 to 65535"),
        "{e}"
    );
    // As the value of an enum.
    let yaml = MINIMAL.replace("[5xx]", &format!("[5xx, {key:?}]"));
    let e = error(&yaml);
    assert!(
        !e.contains("MIIE") && e.contains("unknown variant ("),
        "{e}"
    );
    // A short value is still quoted.
    let yaml = MINIMAL.replace("port: 9000", "port: \"nine \\\"thousand\\\"\"");
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].endpoints[0].port (line 19): invalid type: string \"nine \\\"thousand\\\"\", expected a whole number from 0 to 65535"
    );
}

#[test]
fn errors_say_what_was_expected_in_yaml_terms_not_rust_types() {
    for (from, to, expected) in [
        (
            "route: {cluster: c}",
            "route: 5",
            "routes[0].route (line 9): invalid type: integer `5`, expected a mapping",
        ),
        (
            "match: {prefix: /}",
            "match: \"x\"",
            "routes[0].match (line 8): invalid type: string \"x\", expected a mapping",
        ),
        (
            "[5xx]",
            "[{a: 1}]",
            "retry_on[0] (line 15): invalid type: map, expected one of its named values, as a string",
        ),
        (
            "address: 127.0.0.1:8080",
            "address: {a: 1}",
            "listeners[0].address (line 3): invalid type: map, expected a string",
        ),
    ] {
        let e = error(&MINIMAL.replacen(from, to, 1));
        assert!(e.ends_with(expected), "{e}");
        assert!(!e.contains("Raw"), "{e}");
    }
}
