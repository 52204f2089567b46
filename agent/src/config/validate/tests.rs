//! One test per rule; each asserts the whole error text: file, path, line, reason.

use crate::config::parse_str;

/// Lines 1..=7; the routes given to [`with_routes`] start on line 8.
const HEAD: &str = "\
listeners:
  - name: main
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: vh
        domains: [\"*\"]
        routes:
";

/// Two STATIC clusters, `c1` and `c2`.
const CLUSTERS: &str = "\
clusters:
  - name: c1
    endpoints: [{address: 127.0.0.1, port: 9001}]
  - name: c2
    endpoints: [{address: 127.0.0.1, port: 9002}]
";

fn with_routes(routes: &str) -> String {
    let routes = routes.strip_prefix('\n').unwrap_or(routes);
    format!("{HEAD}{routes}{CLUSTERS}")
}

/// One valid route to `c1`, then the given clusters (which start on line 11).
fn with_clusters(clusters: &str) -> String {
    let clusters = clusters.strip_prefix('\n').unwrap_or(clusters);
    format!(
        "{HEAD}          - match: {{prefix: /}}\n            route: {{cluster: c1}}\nclusters:\n{clusters}"
    )
}

fn error(yaml: &str) -> String {
    match parse_str(yaml, "t.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn base_documents_are_valid() {
    let ok = with_routes("          - match: {prefix: /}\n            route: {cluster: c2}\n");
    assert!(parse_str(&ok, "t.yaml").is_ok());
    let ok = with_clusters("  - name: c1\n    endpoints: [{address: 10.0.0.1, port: 80}]\n");
    assert!(parse_str(&ok, "t.yaml").is_ok());
}

#[test]
fn route_to_missing_cluster() {
    let yaml = with_routes(
        "
          - match:
              prefix: /
            route:
              cluster: nope
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].virtual_hosts[0].routes[0].route.cluster (line 11): \
         unknown cluster \"nope\" (defined: c1, c2)"
    );
}

#[test]
fn weighted_clusters_empty() {
    let yaml = with_routes(
        "
          - match: {prefix: /}
            route:
              weighted_clusters: []
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].virtual_hosts[0].routes[0].route.weighted_clusters (line 10): \
         weighted_clusters must list at least one cluster"
    );
}

#[test]
fn weighted_clusters_zero_sum_unknown_and_repeated_names() {
    let yaml = with_routes(
        "
          - match: {prefix: /}
            route:
              weighted_clusters:
                - {name: c1, weight: 0}
                - {name: c9, weight: 0}
                - {name: c1, weight: 0}
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes[0].route.weighted_clusters";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}[1].name (line 12): unknown cluster \"c9\" (defined: c1, c2)\n\
             {p}[2].name (line 13): cluster \"c1\" is listed twice in weighted_clusters\n\
             {p} (line 10): weighted_clusters weights sum to 0; at least one must be > 0"
        )
    );
}

#[test]
fn duplicate_listener_names_and_addresses() {
    let yaml = "\
admin:
  address: 127.0.0.1:9901
listeners:
  - name: a
    address: 127.0.0.1:8080
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: a
    address: 127.0.0.1:8080
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: b
    address: 127.0.0.1:9901
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: c
    address: 127.0.0.1:0
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: d
    address: 127.0.0.1:0
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[1].name (line 7): duplicate listener name \"a\" (first defined at listeners[0])\n\
         t.yaml: listeners[1].address (line 8): address 127.0.0.1:8080 is already used by listener \"a\" (listeners[0])\n\
         t.yaml: listeners[2].address (line 11): address 127.0.0.1:9901 is already used by admin"
    );
}

#[test]
fn stats_address_unique_against_admin_and_listeners() {
    let yaml = "\
admin:
  address: 127.0.0.1:9901
stats:
  address: 127.0.0.1:9901
listeners:
  - name: a
    address: 127.0.0.1:8080
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert_eq!(
        error(yaml),
        "t.yaml: stats.address (line 4): address 127.0.0.1:9901 is already used by admin"
    );
    let yaml = "\
stats:
  address: 127.0.0.1:15020
listeners:
  - name: a
    address: 127.0.0.1:15020
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[0].address (line 5): address 127.0.0.1:15020 is already used by stats"
    );
}

#[test]
fn duplicate_and_empty_cluster_names() {
    let yaml = with_clusters(
        "
  - name: c1
    endpoints: [{address: 10.0.0.1, port: 80}]
  - name: c1
    endpoints: [{address: 10.0.0.2, port: 80}]
  - name: \"\"
    endpoints: [{address: 10.0.0.3, port: 80}]
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[1].name (line 13): duplicate cluster name \"c1\" (first defined at clusters[0])\n\
         t.yaml: clusters[2].name (line 15): cluster name must not be empty"
    );
}

#[test]
fn invalid_regexes_are_compiled_and_reported() {
    let yaml = with_routes(
        "
          - match:
              safe_regex: \"/a(b\"
              headers:
                - name: x-v
                  safe_regex: \"[z-a]\"
              query_parameters:
                - {name: q, safe_regex: \"(?P<\"}
            route: {cluster: c1}
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes[0].match";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}.safe_regex (line 9): invalid regex \"/a(b\": error: unclosed group\n\
             {p}.headers[0].safe_regex (line 12): invalid regex \"[z-a]\": error: invalid character class range, the start must be <= the end\n\
             {p}.query_parameters[0].safe_regex (line 14): invalid regex \"(?P<\": error: invalid capture group character"
        )
    );
}

#[test]
fn prefix_rewrite_needs_a_prefix_match() {
    let yaml = with_routes(
        "
          - match: {path: /exact}
            route: {cluster: c1, prefix_rewrite: /x}
          - match: {safe_regex: /r.*}
            redirect: {prefix_rewrite: /y}
          - match: {prefix: /p}
            route: {cluster: c1, prefix_rewrite: /ok/}
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}[0].route.prefix_rewrite (line 9): prefix_rewrite needs a `prefix` match on this route\n\
             {p}[1].redirect.prefix_rewrite (line 11): prefix_rewrite needs a `prefix` match on this route"
        )
    );
}

#[test]
fn static_endpoints_must_be_ip_literals_and_dns_names_valid() {
    let yaml = with_clusters(
        "
  - name: c1
    endpoints:
      - address: film-service
        port: 5000
  - name: c2
    type: STRICT_DNS
    endpoints:
      - address: bad_host!
        port: 5000
      - address: film-service.default.svc
        port: 5000
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].endpoints[0].address (line 13): STATIC cluster endpoints must be \
         IP literals, got \"film-service\" (use type: STRICT_DNS for DNS names)\n\
         t.yaml: clusters[1].endpoints[0].address (line 18): invalid endpoint address \
         \"bad_host!\": expected a DNS name or IP"
    );
}

#[test]
fn endpoints_empty_and_zero_ports() {
    let yaml = with_clusters(
        "
  - name: c1
    endpoints: []
  - name: c2
    endpoints:
      - address: 10.0.0.1
        port: 0
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].endpoints (line 12): endpoints must list at least one endpoint\n\
         t.yaml: clusters[1].endpoints[0].port (line 16): port must not be 0"
    );
}

#[test]
fn direct_response_status_codes() {
    let yaml = with_routes(
        "
          - match: {prefix: /a}
            direct_response: {status: 99}
          - match: {prefix: /b}
            direct_response:
              status: 600
          - match: {prefix: /c}
            direct_response: {status: 204}
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}[0].direct_response.status (line 9): invalid status code 99: expected 200..=599\n\
             {p}[1].direct_response.status (line 12): invalid status code 600: expected 200..=599"
        )
    );
}

#[test]
fn redirect_rules() {
    let yaml = with_routes(
        "
          - match: {prefix: /a}
            redirect:
              response_code: 200
              scheme_redirect: ftp
              host_redirect: \"bad host\"
              port_redirect: 0
              path_redirect: relative
              prefix_rewrite: /b
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes[0].redirect";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}.response_code (line 10): invalid redirect response_code 200: expected one of 301, 302, 303, 307, 308\n\
             {p}.scheme_redirect (line 11): invalid scheme \"ftp\": expected http or https\n\
             {p}.host_redirect (line 12): invalid host \"bad host\": expected a host name or IP address, optionally with :port\n\
             {p}.port_redirect (line 13): port_redirect must not be 0\n\
             {p}.path_redirect (line 14): path_redirect \"relative\" must start with \"/\"\n\
             {p}.prefix_rewrite (line 15): prefix_rewrite and path_redirect exclude each other"
        )
    );
}

#[test]
fn domains_empty_invalid_and_duplicated() {
    let yaml = "\
listeners:
  - name: main
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: a
        domains: [\"*\", films.local, Films.Local]
        routes: []
      - name: b
        domains:
          - \"*\"
          - FILMS.local
          - \"\"
          - \"fi*lms\"
        routes: []
      - name: c
        domains: []
        routes: []
";
    let p = "t.yaml: listeners[0].virtual_hosts";
    assert_eq!(
        error(yaml),
        format!(
            "{p}[0].domains[2] (line 6): domain \"Films.Local\" is listed twice\n\
             {p}[1].domains[0] (line 10): more than one catch-all \"*\" virtual host on this listener (first: virtual host \"a\")\n\
             {p}[1].domains[1] (line 11): domain \"FILMS.local\" is already served by virtual host \"a\" on this listener\n\
             {p}[1].domains[2] (line 12): invalid domain \"\": a domain must not be empty\n\
             {p}[1].domains[3] (line 13): invalid domain \"fi*lms\": a \"*\" wildcard goes at the start or the end of a domain\n\
             {p}[2].domains (line 16): domains must list at least one domain (use \"*\" for any host)"
        )
    );
}

#[test]
fn same_domain_on_two_listeners_is_fine() {
    let yaml = "\
listeners:
  - name: a
    address: 127.0.0.1:8080
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: b
    address: 127.0.0.1:8081
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert!(parse_str(yaml, "t.yaml").is_ok());
}

#[test]
fn header_names_and_values() {
    let yaml = with_routes(
        "
          - match:
              prefix: /
              headers:
                - {name: \"x y\", present: true}
            route: {cluster: c1}
            request_headers_to_add:
              - {name: \":authority\", value: a}
              - {name: x-ok, value: \"a\\nb\"}
            request_headers_to_remove: [\"bad/name\"]
            response_headers_to_add: [{name: \"\", value: v}]
            response_headers_to_remove: [x-fine, \"sp ace\"]
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes[0]";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}.match.headers[0].name (line 11): invalid header name \"x y\": character ' ' is not allowed in an HTTP header name\n\
             {p}.request_headers_to_add[0].name (line 14): invalid header name \":authority\": character ':' is not allowed in an HTTP header name\n\
             {p}.request_headers_to_add[1].value (line 15): invalid header value \"a\\nb\": control character 0x0a is not allowed\n\
             {p}.response_headers_to_add[0].name (line 17): header name must not be empty\n\
             {p}.request_headers_to_remove[0] (line 16): invalid header name \"bad/name\": character '/' is not allowed in an HTTP header name\n\
             {p}.response_headers_to_remove[1] (line 18): invalid header name \"sp ace\": character ' ' is not allowed in an HTTP header name"
        )
    );
}

#[test]
fn virtual_host_headers_and_methods() {
    let yaml = "\
listeners:
  - name: main
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: vh
        domains: [\"*\"]
        request_headers_to_add: [{name: \"a b\", value: v}]
        routes:
          - match: {prefix: /, methods: [GET, \"PO ST\"]}
            direct_response: {status: 200}
";
    let p = "t.yaml: listeners[0].virtual_hosts[0]";
    assert_eq!(
        error(yaml),
        format!(
            "{p}.request_headers_to_add[0].name (line 7): invalid header name \"a b\": character ' ' is not allowed in an HTTP header name\n\
             {p}.routes[0].match.methods[1] (line 9): invalid HTTP method \"PO ST\""
        )
    );
}

#[test]
fn listener_needs_virtual_hosts_and_config_needs_listeners() {
    assert_eq!(
        error("clusters: []\n"),
        "t.yaml: listeners: a config needs at least one listener"
    );
    let yaml = "\
listeners:
  - name: main
    address: 127.0.0.1:8080
    virtual_hosts: []
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[0].virtual_hosts (line 4): a listener needs at least one virtual host"
    );
}

#[test]
fn listener_limits_and_names() {
    let yaml = "\
listeners:
  - name: \"\"
    address: 127.0.0.1:8080
    limits:
      max_request_headers_kb: 9000
      max_headers_count: 0
      max_connections_per_client: 0
    virtual_hosts:
      - name: v
        domains: [a.local]
        routes: []
      - name: v
        domains: [b.local]
        routes: []
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[0].name (line 2): listener name must not be empty\n\
         t.yaml: listeners[0].limits.max_request_headers_kb (line 5): max_request_headers_kb 9000 is out of range 1..=8192\n\
         t.yaml: listeners[0].limits.max_headers_count (line 6): max_headers_count must be at least 1\n\
         t.yaml: listeners[0].limits.max_connections_per_client (line 7): max_connections_per_client must be at least 1\n\
         t.yaml: listeners[0].virtual_hosts[1].name (line 12): duplicate virtual host name \"v\" (first defined at listeners[0].virtual_hosts[0])"
    );
}

#[test]
fn retry_policy_rules() {
    let yaml = with_routes(
        "
          - name: \"\"
            match: {prefix: /}
            route:
              cluster: c1
              host_rewrite_literal: \"a b\"
              retry_policy:
                retry_on: []
                retry_back_off: {base_interval: 0s, max_interval: 0s}
          - match: {prefix: /}
            route:
              cluster: c1
              retry_policy:
                retry_on: [5xx]
                retry_back_off:
                  base_interval: 1s
                  max_interval: 500ms
          - match: {prefix: /}
            route:
              cluster: c1
              retry_policy:
                retry_on: [retriable-headers]
                retriable_headers: [{name: \"bad name\", exact: x}, {name: x-ok, safe_regex: \"(\"}]
                host_selection_retry_max_attempts: 101
",
    );
    let p = "t.yaml: listeners[0].virtual_hosts[0].routes";
    assert_eq!(
        error(&yaml),
        format!(
            "{p}[0].name (line 8): route name must not be empty when given\n\
             {p}[0].route.host_rewrite_literal (line 12): invalid host \"a b\": expected a host name or IP address, optionally with :port\n\
             {p}[0].route.retry_policy.retry_on (line 14): retry_on must list at least one condition\n\
             {p}[0].route.retry_policy.retry_back_off.base_interval (line 15): base_interval must be > 0\n\
             {p}[1].route.retry_policy.retry_back_off.max_interval (line 23): max_interval 500ms is shorter than base_interval 1s\n\
             {p}[2].route.retry_policy.host_selection_retry_max_attempts (line 30): host_selection_retry_max_attempts 101 is over 100\n\
             {p}[2].route.retry_policy.retriable_headers[0].name (line 29): invalid header name \"bad name\": character ' ' is not allowed in an HTTP header name\n\
             {p}[2].route.retry_policy.retriable_headers[1].safe_regex (line 29): invalid regex \"(\": error: unclosed group"
        )
    );
}

#[test]
fn cluster_timeouts_breakers_and_outlier_detection() {
    let yaml = with_clusters(
        "
  - name: c1
    type: STRICT_DNS
    connect_timeout: 0s
    dns_refresh_rate: 0ms
    endpoints: [{address: localhost, port: 80}]
    circuit_breakers: {max_connections: 0, max_requests: 0}
    outlier_detection:
      consecutive_5xx: 0
      interval: 0s
      max_ejection_percent: 101
",
    );
    let c = "t.yaml: clusters[0]";
    assert_eq!(
        error(&yaml),
        format!(
            "{c}.connect_timeout (line 13): connect_timeout must be > 0\n\
             {c}.dns_refresh_rate (line 14): dns_refresh_rate must be > 0\n\
             {c}.circuit_breakers.max_connections (line 16): max_connections must be at least 1\n\
             {c}.circuit_breakers.max_requests (line 16): max_requests must be at least 1\n\
             {c}.outlier_detection.max_ejection_percent (line 20): max_ejection_percent 101 is over 100\n\
             {c}.outlier_detection.consecutive_5xx (line 18): consecutive_5xx must be at least 1\n\
             {c}.outlier_detection.interval (line 19): interval must be > 0"
        )
    );
}

#[test]
fn issues_are_also_available_as_data() {
    let yaml = with_routes("          - match: {prefix: nope}\n            route: {cluster: c1}\n");
    let err = match parse_str(&yaml, "t.yaml") {
        Ok(_) => panic!("accepted"),
        Err(err) => err,
    };
    let issues = err.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(
        issues[0].path,
        "listeners[0].virtual_hosts[0].routes[0].match.prefix"
    );
    assert_eq!(issues[0].line, Some(8));
    assert_eq!(issues[0].message, "prefix \"nope\" must start with \"/\"");
}

#[test]
fn virtual_listeners_need_a_port_and_distinct_destinations() {
    let yaml = "\
outbound_traffic_policy: REGISTRY_ONLY
listeners:
  - name: bound
    address: 10.0.0.1:80
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: a
    address: 10.0.0.1:80
    bind_to_port: false
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: b
    address: 10.0.0.1:80
    bind_to_port: false
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: c
    address: 0.0.0.0:0
    bind_to_port: false
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[2].address (line 11): original destination 10.0.0.1:80 is already claimed by listener \"a\" (listeners[1])\n\
         t.yaml: listeners[3].address (line 15): address 0.0.0.0:0: a listener with bind_to_port: false matches original destinations and needs a non-zero port"
    );
    let ok = yaml.replace("10.0.0.1:80\n    bind_to_port: false\n    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]\n  - name: c\n    address: 0.0.0.0:0", "10.0.0.2:80\n    bind_to_port: false\n    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]\n  - name: c\n    address: 0.0.0.0:5432");
    let cfg = parse_str(&ok, "t.yaml").unwrap();
    assert_eq!(
        cfg.outbound_traffic_policy,
        crate::config::OutboundTrafficPolicy::RegistryOnly
    );
    assert!(cfg.listeners[0].bind_to_port && !cfg.listeners[1].bind_to_port);
}

#[test]
fn server_names_select_intercepted_tls_only() {
    let yaml = "\
listeners:
  - name: bound
    address: 127.0.0.1:8080
    server_names: [api.example.com]
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: egress-443
    address: 0.0.0.0:443
    bind_to_port: false
    server_names: [\"*.example.com\", \"api.*\", \"\", httpbin.org]
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[0].server_names (line 4): server_names selects intercepted TLS by SNI and needs bind_to_port: false\n\
         t.yaml: listeners[1].server_names[1] (line 9): invalid server name \"api.*\": expected a DNS name or *.suffix\n\
         t.yaml: listeners[1].server_names[2] (line 9): invalid server name \"\": expected a DNS name or *.suffix"
    );
    let ok = yaml
        .replace("    server_names: [api.example.com]\n", "")
        .replace(", \"api.*\", \"\"", "");
    let cfg = parse_str(&ok, "t.yaml").unwrap();
    assert_eq!(
        cfg.listeners[1].server_names,
        ["*.example.com", "httpbin.org"]
    );
}

#[test]
fn upgrade_types_are_tokens_with_defaults_by_listener_kind() {
    let yaml = "\
listeners:
  - name: bound
    address: 127.0.0.1:8080
    upgrade_types: [websocket, \"not a token\"]
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
";
    assert_eq!(
        error(yaml),
        "t.yaml: listeners[0].upgrade_types[1] (line 4): invalid upgrade type \"not a token\": expected an Upgrade header token such as websocket"
    );
    let cfg = parse_str(
        "\
listeners:
  - name: bound
    address: 127.0.0.1:8080
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: intercepted
    address: 0.0.0.0:80
    bind_to_port: false
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
  - name: none
    address: 0.0.0.0:81
    bind_to_port: false
    upgrade_types: []
    virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]
",
        "t.yaml",
    )
    .unwrap();
    let effective: Vec<_> = cfg
        .listeners
        .iter()
        .map(|l| l.effective_upgrade_types())
        .collect();
    assert_eq!(
        effective,
        [vec![], vec!["websocket".to_owned()], vec![]],
        "Envoy's default when bound, Istio's when intercepted"
    );
}

#[test]
fn protocol_detection_timeout_defaults_to_100ms_and_0s_means_no_limit() {
    let listener = "listeners: [{name: l, address: \"127.0.0.1:0\", virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]}]\n";
    let default = parse_str(listener, "t.yaml").unwrap();
    assert_eq!(
        *default.protocol_detection_timeout,
        std::time::Duration::from_millis(100)
    );
    let off = parse_str(
        &format!("protocol_detection_timeout: 0s\n{listener}"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!(off.protocol_detection_timeout.non_zero(), None);
}

#[test]
fn opaque_idle_timeout_defaults_to_envoys_hour_and_0s_means_no_limit() {
    let listener = "listeners: [{name: l, address: \"127.0.0.1:0\", virtual_hosts: [{name: v, domains: [\"*\"], routes: []}]}]\n";
    let default = parse_str(listener, "t.yaml").unwrap();
    assert_eq!(
        *default.opaque_idle_timeout,
        std::time::Duration::from_secs(3600)
    );
    let set = parse_str(&format!("opaque_idle_timeout: 5m\n{listener}"), "t.yaml").unwrap();
    assert_eq!(
        *set.opaque_idle_timeout,
        std::time::Duration::from_secs(300)
    );
    let off = parse_str(&format!("opaque_idle_timeout: 0s\n{listener}"), "t.yaml").unwrap();
    assert_eq!(off.opaque_idle_timeout.non_zero(), None);
}

#[test]
fn dynamic_forward_proxy_rules() {
    let yaml = with_clusters(
        "
  - name: c1
    type: DYNAMIC_FORWARD_PROXY
    endpoints: [{address: 10.0.0.1, port: 80}]
    dns_cache: {max_hosts: 0, host_ttl: 0s}
",
    );
    let e = error(&yaml);
    assert!(
        e.contains(
            "clusters[0].endpoints (line 13): a DYNAMIC_FORWARD_PROXY cluster has no endpoints"
        ),
        "{e}"
    );
    assert!(e.contains("clusters[0].dns_cache.max_hosts"), "{e}");
    assert!(e.contains("clusters[0].dns_cache.host_ttl"), "{e}");
}

#[test]
fn dns_settings() {
    let yaml = format!(
        "{}dns:\n  timeout: 0s\n  attempts: 0\n  ndots: 16\n  search_domains: [ok.example, \"bad domain\", \"\"]\n",
        with_routes("          - match: {prefix: /}\n            route: {cluster: c1}\n")
    );
    let err = error(&yaml);
    for part in [
        "dns.timeout (line 16): timeout must be > 0",
        "dns.attempts (line 17): attempts must be at least 1",
        "dns.ndots (line 18): ndots must be at most 15",
        "dns.search_domains[1] (line 19): \"bad domain\" is not a domain name",
        "dns.search_domains[2] (line 19): \"\" is not a domain name",
    ] {
        assert!(err.contains(part), "{part} in:\n{err}");
    }
    assert!(!err.contains("search_domains[0]"), "{err}");
}

/// `weir convert-envoy` writes configs for another machine: with
/// `FileChecks::Skip` the files need not exist, every other rule holds.
#[test]
fn file_checks_can_be_skipped_and_nothing_else() {
    use crate::config::{FileChecks, parse_str_with};
    let yaml = "\
listeners:
  - name: tls
    address: 127.0.0.1:8443
    tls:
      certificates: [{cert_chain_file: /nonexistent/c.pem, private_key_file: /nonexistent/k.pem}]
    virtual_hosts: [{name: vh, domains: [\"*\"], routes: []}]
";
    assert!(parse_str_with(yaml, "t.yaml", FileChecks::Skip).is_ok());
    assert_eq!(
        parse_str_with(yaml, "t.yaml", FileChecks::MustExist)
            .unwrap_err()
            .to_string(),
        "t.yaml: listeners[0].tls.certificates[0].cert_chain_file (line 5): file /nonexistent/c.pem does not exist\n\
         t.yaml: listeners[0].tls.certificates[0].private_key_file (line 5): file /nonexistent/k.pem does not exist"
    );
    let unknown_cluster = yaml.replace(
        "routes: []",
        "routes: [{match: {prefix: /}, route: {cluster: x}}]",
    );
    assert!(parse_str_with(&unknown_cluster, "t.yaml", FileChecks::Skip).is_err());
}

/// A key pasted into a file field is refused without being echoed, even
/// where files are not checked (`weir convert-envoy`'s load-back).
#[test]
fn pem_text_in_a_file_field_is_refused_and_not_quoted() {
    use crate::config::{FileChecks, parse_str_with};
    let yaml = with_tls(
        "      certificates:\n        - cert_chain_file: /nonexistent/c.pem\n          private_key_file: \"-----BEGIN PRIVATE KEY-----\\nSECRET\\n-----END PRIVATE KEY-----\"\n",
    );
    for checks in [FileChecks::MustExist, FileChecks::Skip] {
        let err = parse_str_with(&yaml, "t.yaml", checks)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "t.yaml: listeners[0].tls.certificates[0].private_key_file (line 7): holds PEM text, not a file path (not repeated here: it may be a key); give the PEM as private_key"
            ),
            "{err}"
        );
        assert!(!err.contains("SECRET"), "{err}");
    }
}

/// A chain with its key appended (a combined PEM) is refused: only key
/// fields are redacted in /config_dump and the logged config.
#[test]
fn a_private_key_inline_outside_a_key_field_is_refused() {
    let yaml = with_tls(
        "      certificates:\n        - cert_chain: \"-----BEGIN CERTIFICATE-----\\nC\\n-----END CERTIFICATE-----\\n-----BEGIN PRIVATE KEY-----\\nSECRET\\n-----END PRIVATE KEY-----\"\n          private_key: K\n",
    );
    let err = error(&yaml);
    assert_eq!(
        err,
        "t.yaml: listeners[0].tls.certificates[0].cert_chain (line 6): holds a private key, which only a key field keeps out of /config_dump and logs; give the certificates alone here and the key as a key field"
    );
}

/// A TLS listener with the given `tls` lines (from line 4) and one route.
fn with_tls(tls: &str) -> String {
    format!(
        "listeners:\n  - name: tls\n    address: 127.0.0.1:8443\n    tls:\n{tls}    \
         virtual_hosts: [{{name: vh, domains: [\"*\"], routes: [{{match: {{prefix: /}}, route: {{cluster: c1}}}}]}}]\n{CLUSTERS}"
    )
}

/// Inline PEM needs no file; each PEM setting is given once, as a file or
/// inline, and a certificate needs both its chain and its key.
#[test]
fn downstream_pem_given_once_as_a_file_or_inline() {
    let ok = with_tls(
        "      certificates:\n        - cert_chain: \"-----BEGIN CERTIFICATE-----\"\n          private_key: |\n            -----BEGIN PRIVATE KEY-----\n      client_ca: CA\n      require_client_certificate: true\n",
    );
    let cfg = parse_str(&ok, "t.yaml").unwrap();
    let tls = cfg.listeners[0].tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates[0]
            .private_key
            .as_ref()
            .map(crate::config::InlineKey::expose),
        Some("-----BEGIN PRIVATE KEY-----\n")
    );
    assert_eq!(tls.client_ca.as_deref(), Some("CA"));

    let yaml = with_tls(
        "      certificates:
        - cert_chain_file: /nonexistent/c.pem
          cert_chain: C
          private_key: K
        - server_names: [a.test]
      client_ca_file: /nonexistent/ca.pem
      client_ca: CA
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].tls.certificates[0].cert_chain (line 7): cert_chain_file and cert_chain: choose one\n\
         t.yaml: listeners[0].tls.certificates[1] (line 9): cert_chain_file or cert_chain is required\n\
         t.yaml: listeners[0].tls.certificates[1] (line 9): private_key_file or private_key is required\n\
         t.yaml: listeners[0].tls.client_ca (line 11): client_ca_file and client_ca: choose one"
    );

    let yaml = with_tls(
        "      certificates: [{cert_chain: C, private_key_file: /nonexistent/k.pem}]\n      require_client_certificate: true\n",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].tls.certificates[0].private_key_file (line 5): file /nonexistent/k.pem does not exist\n\
         t.yaml: listeners[0].tls.require_client_certificate (line 6): require_client_certificate needs client_ca_file or client_ca"
    );
}

/// Upstream PEM settings: once each, the client certificate and key
/// together in either spelling, a CA not with insecure_skip_verify.
#[test]
fn upstream_pem_given_once_as_a_file_or_inline() {
    let ok = with_clusters(
        "  - name: c1\n    endpoints: [{address: 127.0.0.1, port: 9001}]\n    tls: {ca: CA, client_cert: C, client_key_file: /dev/null}\n",
    );
    // /dev/null is no regular file: only the inline spellings are checked here.
    assert!(error(&ok).contains("client_key_file (line 13): file /dev/null does not exist"));
    let ok = ok.replace("client_key_file: /dev/null", "client_key: K");
    let cfg = parse_str(&ok, "t.yaml").unwrap();
    let tls = cfg.clusters[0].tls.as_ref().unwrap();
    assert_eq!(
        (tls.ca.as_deref(), tls.client_cert.as_deref()),
        (Some("CA"), Some("C"))
    );

    let yaml = with_clusters(
        "  - name: c1
    endpoints: [{address: 127.0.0.1, port: 9001}]
    tls:
      ca: CA
      insecure_skip_verify: true
      client_cert: C
  - name: c2
    endpoints: [{address: 127.0.0.1, port: 9002}]
    tls:
      ca_file: /nonexistent/ca.pem
      ca: CA
      client_key_file: /nonexistent/k.pem
      client_key: K
",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: clusters[0].tls.insecure_skip_verify (line 15): insecure_skip_verify with ca: choose one\n\
         t.yaml: clusters[0].tls.client_key_file (line 13): client_cert needs client_key_file or client_key\n\
         t.yaml: clusters[1].tls.ca (line 21): ca_file and ca: choose one\n\
         t.yaml: clusters[1].tls.client_key (line 23): client_key_file and client_key: choose one\n\
         t.yaml: clusters[1].tls.client_cert_file (line 19): client_key_file needs client_cert_file or client_cert"
    );
}

#[test]
fn authorization_policies_name_their_problems() {
    let base = with_clusters("  - name: c1\n    endpoints: [{address: 127.0.0.1, port: 9001}]\n");
    // Lines of the policies below start after `base`.
    let first = base.lines().count() + 1;
    let yaml = format!(
        "{base}authorization_policies:
  - name: p
    namespace: Shop
    service_account: backend
    rules:
      - from: [{{source: {{}}}}]
        to: [{{operation: {{paths: [\"/a*b\"], methods: [get], ports: [0]}}}}]
  - name: p
    namespace: shop
"
    );
    let err = error(&yaml);
    let at = |offset: usize| first + offset;
    for expected in [
        format!(
            "authorization_policies[1].name (line {}): duplicate policy name \"p\"",
            at(7)
        ),
        format!(
            "authorization_policies[0].namespace (line {}): namespace \"Shop\" is not a Kubernetes name",
            at(2)
        ),
        format!(
            "authorization_policies[0].rules[0].from[0].source (line {}): a source lists principals or namespaces",
            at(5)
        ),
        format!(
            "authorization_policies[0].rules[0].to[0].operation.ports[0] (line {}): port 0 is no port",
            at(6)
        ),
        format!(
            "authorization_policies[0].rules[0].to[0].operation.paths[0] (line {}): \"/a*b\" may hold `*` only",
            at(6)
        ),
        format!(
            "authorization_policies[0].rules[0].to[0].operation.methods[0] (line {}): \"get\" is not an HTTP method",
            at(6)
        ),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

/// A listener with the given `access_log` lines (from line 4) and one route.
fn with_access_log(logs: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:8080\n    access_log:\n{logs}    \
         virtual_hosts:\n      - name: vh\n        domains: [\"*\"]\n        routes:\n          \
         - match: {{prefix: /}}\n            route: {{cluster: c1}}\n{CLUSTERS}"
    )
}

#[test]
fn access_log_paths_formats_and_count() {
    let ok = with_access_log(
        "      - {path: /dev/stdout}\n      - {path: /tmp/weir-access.log, format: json}\n",
    );
    let cfg = parse_str(&ok, "t.yaml").unwrap();
    let logs = &cfg.listeners[0].access_log;
    assert_eq!(logs[0].format, crate::config::AccessLogFormat::Text);
    assert_eq!(logs[1].format, crate::config::AccessLogFormat::Json);

    let yaml = with_access_log(
        "      - {path: /tmp/a.log}\n      - path: /no/such/dir/a.log\n      - {path: /tmp/a.log}\n",
    );
    assert_eq!(
        error(&yaml),
        "t.yaml: listeners[0].access_log[1].path (line 6): access log path /no/such/dir/a.log: \
         directory /no/such/dir does not exist\n\
         t.yaml: listeners[0].access_log[2].path (line 7): access log path /tmp/a.log is listed twice"
    );

    let five: String = (0..5)
        .map(|i| format!("      - {{path: /tmp/{i}.log}}\n"))
        .collect();
    assert_eq!(
        error(&with_access_log(&five)),
        "t.yaml: listeners[0].access_log (line 4): 5 access logs: a listener has at most 4"
    );

    let yaml = with_access_log("      - {path: /tmp/a.log, format: xml}\n");
    assert!(error(&yaml).contains("line 5"), "{}", error(&yaml));
}
