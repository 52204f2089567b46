//! Route tables: each Envoy field weir has, and each refusal with its path
//! and line.

use super::super::test_support::{Walked, line, walk};
use super::*;

fn table(yaml: &str) -> Walked<Vec<VirtualHostConfig>> {
    walk(yaml, |cx, f| {
        route_config(
            cx,
            f,
            &Served {
                weir_path: "listeners[0]",
                tls: false,
            },
        )
    })
}

/// The routes of a table that converts without refusals or notes.
fn routes(yaml: &str) -> Vec<RouteConfig> {
    let t = table(yaml);
    assert!(t.refusals.is_empty(), "{:#?}", t.refusals);
    assert!(t.notes.is_empty(), "{:#?}", t.notes);
    t.out.into_iter().flat_map(|vh| vh.routes).collect()
}

fn one_route(route: &str) -> RouteConfig {
    let yaml = format!(
        "virtual_hosts:\n- name: vh\n  domains: ['*']\n  routes:\n  - {}\n",
        route.trim().replace('\n', "\n    ")
    );
    let mut all = routes(&yaml);
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn forward_of(r: &RouteConfig) -> &ForwardActionConfig {
    match &r.action {
        RouteAction::Route(f) => f,
        other => panic!("not a forward: {other:?}"),
    }
}

/// The refusals of a table whose one virtual host has these routes.
fn refused(routes_yaml: &str) -> (String, Vec<String>) {
    let yaml = format!("virtual_hosts:\n- name: vh\n  domains: ['*']\n  routes:\n{routes_yaml}");
    let t = table(&yaml);
    (yaml, t.refusals)
}

const VH: &str = "virtual_hosts[0].routes";

#[test]
fn virtual_hosts_carry_name_domains_and_header_additions() {
    let t = table(
        "name: local_route
validate_clusters: false
virtual_hosts:
- name: api
  domains: [api.example.com, '*.example.org']
  request_headers_to_add:
  - header: {key: x-vh, value: '1'}
  routes: []
- name: rest
  domains: ['*']
",
    );
    assert!(t.refusals.is_empty(), "{:?}", t.refusals);
    assert_eq!(t.out.len(), 2);
    assert_eq!(t.out[0].name, "api");
    assert_eq!(t.out[0].domains, ["api.example.com", "*.example.org"]);
    assert_eq!(
        t.out[0].request_headers_to_add,
        [HeaderValueOptionConfig {
            name: "x-vh".into(),
            value: "1".into(),
            append: true
        }]
    );
    assert!(t.out[1].routes.is_empty());
}

#[test]
fn path_matches_and_case_sensitivity() {
    let prefix = one_route("match: {prefix: /films}\nroute: {cluster: c}");
    assert_eq!(
        prefix.matcher.path_match,
        PathMatch::Prefix("/films".into())
    );
    assert!(prefix.matcher.case_sensitive);
    let path = one_route("match: {path: /a, case_sensitive: false}\nroute: {cluster: c}");
    assert_eq!(path.matcher.path_match, PathMatch::Path("/a".into()));
    assert!(!path.matcher.case_sensitive);
    let regex = one_route(
        "match: {safe_regex: {google_re2: {}, regex: '/v[0-9]+/.*'}}\nroute: {cluster: c}",
    );
    assert_eq!(
        regex.matcher.path_match,
        PathMatch::SafeRegex("/v[0-9]+/.*".into())
    );
}

#[test]
fn header_matchers_of_every_kind_weir_has() {
    let r = one_route(
        "match:
  prefix: /
  headers:
  - {name: x-exact, exact_match: a}
  - {name: x-regex, safe_regex_match: {regex: 'v[12]'}}
  - {name: x-absent, present_match: false}
  - {name: x-string, string_match: {exact: b}}
  - {name: x-prefix, prefix_match: pre}
  - {name: x-any}
  - {name: x-not, exact_match: c, invert_match: true}
route: {cluster: c}",
    );
    let got: Vec<_> = r
        .matcher
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value_match.clone(), h.invert_match))
        .collect();
    assert_eq!(
        got,
        [
            ("x-exact", ValueMatch::Exact("a".into()), false),
            ("x-regex", ValueMatch::SafeRegex("v[12]".into()), false),
            ("x-absent", ValueMatch::Present(false), false),
            ("x-string", ValueMatch::Exact("b".into()), false),
            ("x-prefix", ValueMatch::SafeRegex("(?s)pre.*".into()), false),
            ("x-any", ValueMatch::Present(true), false),
            ("x-not", ValueMatch::Exact("c".into()), true),
        ]
    );
    assert!(r.matcher.methods.is_empty());
}

#[test]
fn method_header_becomes_methods() {
    let r = one_route(
        "match: {prefix: /, headers: [{name: ':method', exact_match: POST}]}\nroute: {cluster: c}",
    );
    assert_eq!(r.matcher.methods, ["POST"]);
    assert!(r.matcher.headers.is_empty());
    let r = one_route(
        "match: {prefix: /, headers: [{name: ':method', string_match: {exact: GET}}]}\nroute: {cluster: c}",
    );
    assert_eq!(r.matcher.methods, ["GET"]);
}

#[test]
fn query_parameter_matchers() {
    let r = one_route(
        "match:
  prefix: /
  query_parameters:
  - {name: a, string_match: {exact: '1'}}
  - {name: b, present_match: true}
  - {name: c, string_match: {safe_regex: {regex: '[0-9]+'}}}
  - {name: d, value: v2-style}
  - {name: e}
route: {cluster: c}",
    );
    let got: Vec<_> = r
        .matcher
        .query_parameters
        .iter()
        .map(|q| (q.name.as_str(), q.value_match.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", ValueMatch::Exact("1".into())),
            ("b", ValueMatch::Present(true)),
            ("c", ValueMatch::SafeRegex("[0-9]+".into())),
            ("d", ValueMatch::Exact("v2-style".into())),
            ("e", ValueMatch::Present(true)),
        ]
    );
}

#[test]
fn forward_to_a_cluster_with_timeout_and_rewrites() {
    let r = one_route(
        "name: films
match: {prefix: /films}
route: {cluster: films, timeout: 0.5s, prefix_rewrite: /v2, host_rewrite_literal: films.internal}",
    );
    assert_eq!(r.name.as_deref(), Some("films"));
    let f = forward_of(&r);
    assert_eq!(f.target, ClusterTarget::Single("films".into()));
    assert_eq!(f.timeout, ConfigDuration::from_millis(500));
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/v2"));
    assert_eq!(f.host_rewrite_literal.as_deref(), Some("films.internal"));
    assert_eq!(f.retry_policy, None);
    // Envoy's default route timeout, and v2's name for the host rewrite.
    let r = one_route("match: {prefix: /}\nroute: {cluster: c, host_rewrite: h.example}");
    assert_eq!(forward_of(&r).timeout, ConfigDuration::from_secs(15));
    assert_eq!(
        forward_of(&r).host_rewrite_literal.as_deref(),
        Some("h.example")
    );
    let r = one_route("match: {prefix: /}\nroute: {cluster: c, timeout: 0s}");
    assert_eq!(forward_of(&r).timeout, ConfigDuration::from_secs(0));
}

#[test]
fn weighted_clusters_lose_their_clusters_level() {
    let r = one_route(
        "match: {prefix: /}
route:
  weighted_clusters:
    total_weight: 100
    clusters: [{name: v1, weight: 80}, {name: v2, weight: 20}]",
    );
    assert_eq!(
        forward_of(&r).target,
        ClusterTarget::Weighted(vec![
            WeightedClusterConfig {
                name: "v1".into(),
                weight: 80
            },
            WeightedClusterConfig {
                name: "v2".into(),
                weight: 20
            },
        ])
    );
}

#[test]
fn runtime_key_prefix_is_a_note_and_the_weights_stay() {
    let yaml = "virtual_hosts:
- name: vh
  domains: ['*']
  routes:
  - match: {prefix: /}
    route:
      weighted_clusters:
        runtime_key_prefix: routing.traffic_split.backend
        clusters: [{name: v1, weight: 80}, {name: v2, weight: 20}]
";
    let t = table(yaml);
    assert!(t.refusals.is_empty());
    assert_eq!(
        t.notes,
        [format!(
            "{VH}[0].route.weighted_clusters.runtime_key_prefix (line {}): weir has no runtime: the weights stay as written; to shift traffic, edit them (weir reloads the file when it changes)",
            line(yaml, "runtime_key_prefix")
        )]
    );
}

#[test]
fn retry_policy_with_every_field() {
    let r = one_route(
        "match: {prefix: /}
route:
  cluster: c
  retry_policy:
    retry_on: 'connect-failure, refused-stream,unavailable,retriable-status-codes'
    num_retries: 3
    per_try_timeout: 0.25s
    retriable_status_codes: [503, 409]
    retriable_headers: [{name: x-upstream-retry, string_match: {exact: 'yes'}}]
    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
    host_selection_retry_max_attempts: 5
    retry_back_off: {base_interval: 0.1s, max_interval: 2s}",
    );
    assert_eq!(
        forward_of(&r).retry_policy,
        Some(RetryPolicyConfig {
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Unavailable,
                RetryOn::RetriableStatusCodes
            ],
            retriable_status_codes: vec![503, 409],
            retriable_headers: vec![HeaderMatcherConfig {
                name: "x-upstream-retry".into(),
                value_match: ValueMatch::Exact("yes".into()),
                invert_match: false,
            }],
            retry_host_predicate: vec![RetryHostPredicate::PreviousHosts],
            host_selection_retry_max_attempts: 5,
            num_retries: 3,
            per_try_timeout: Some(ConfigDuration::from_millis(250)),
            retry_back_off: RetryBackOffConfig {
                base_interval: ConfigDuration::from_millis(100),
                max_interval: Some(ConfigDuration::from_secs(2)),
            },
        })
    );
    // Envoy's defaults: one retry, 25 ms back-off.
    let r = one_route("match: {prefix: /}\nroute: {cluster: c, retry_policy: {retry_on: 5xx}}");
    let policy = forward_of(&r).retry_policy.clone().unwrap();
    assert_eq!(policy.num_retries, 1);
    assert_eq!(policy.retry_back_off, RetryBackOffConfig::default());
    assert_eq!(policy.host_selection_retry_max_attempts, 1);
    // A predicate weir lacks is refused by name.
    let (_, refusals) = refused(
        "  - {match: {prefix: /}, route: {cluster: c, retry_policy: {retry_on: 5xx, retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]}}}\n",
    );
    let all = refusals.join("\n");
    assert!(
        all.contains("retry_host_predicate[0].name")
            && all.contains("retry host predicate \"envoy.retry_host_predicates.omit_canary_hosts\" is not supported"),
        "{all}"
    );
}

#[test]
fn a_virtual_hosts_retry_policy_applies_to_routes_without_one() {
    let all = routes(
        "virtual_hosts:
- name: vh
  domains: ['*']
  retry_policy: {retry_on: gateway-error, num_retries: 2}
  routes:
  - match: {prefix: /a}
    route: {cluster: c}
  - match: {prefix: /b}
    route: {cluster: c, retry_policy: {retry_on: reset}}
  - match: {prefix: /c}
    direct_response: {status: 204}
",
    );
    let on = |r: &RouteConfig| forward_of(r).retry_policy.clone().unwrap();
    assert_eq!(on(&all[0]).retry_on, [RetryOn::GatewayError]);
    assert_eq!(on(&all[0]).num_retries, 2);
    assert_eq!(on(&all[1]).retry_on, [RetryOn::Reset]);
    assert_eq!(on(&all[1]).num_retries, 1);
}

#[test]
fn a_retry_policy_without_conditions_is_left_out_with_a_note() {
    let yaml = "virtual_hosts:
- name: vh
  domains: ['*']
  routes:
  - match: {prefix: /}
    route: {cluster: c, retry_policy: {num_retries: 3}}
";
    let t = table(yaml);
    assert!(t.refusals.is_empty());
    assert_eq!(forward_of(&t.out[0].routes[0]).retry_policy, None);
    assert_eq!(
        t.notes,
        [format!(
            "{VH}[0].route.retry_policy (line 6): a retry policy without retry_on never retries: left out"
        )]
    );
}

#[test]
fn direct_responses_and_redirects() {
    let r = one_route(
        "match: {path: /ok}\ndirect_response: {status: 200, body: {inline_string: fine}}",
    );
    assert_eq!(
        r.action,
        RouteAction::DirectResponse(DirectResponseConfig {
            status: 200,
            body: Some("fine".into())
        })
    );
    let r = one_route("match: {prefix: /}\ndirect_response: {status: 404}");
    assert_eq!(
        r.action,
        RouteAction::DirectResponse(DirectResponseConfig {
            status: 404,
            body: None
        })
    );
    let r = one_route(
        "match: {prefix: /old}
redirect: {https_redirect: true, host_redirect: new.example, port_redirect: 8443, prefix_rewrite: /new, response_code: FOUND}",
    );
    assert_eq!(
        r.action,
        RouteAction::Redirect(RedirectConfig {
            scheme_redirect: Some("https".into()),
            host_redirect: Some("new.example".into()),
            port_redirect: Some(8443),
            path_redirect: None,
            prefix_rewrite: Some("/new".into()),
            response_code: 302,
        })
    );
    let r = one_route("match: {path: /x}\nredirect: {scheme_redirect: http, path_redirect: /y}");
    assert_eq!(
        r.action,
        RouteAction::Redirect(RedirectConfig {
            scheme_redirect: Some("http".into()),
            host_redirect: None,
            port_redirect: None,
            path_redirect: Some("/y".into()),
            prefix_rewrite: None,
            response_code: 301,
        })
    );
}

#[test]
fn a_redirect_without_scheme_on_a_tls_listener_gets_a_note() {
    let yaml = "virtual_hosts:
- name: vh
  domains: ['*']
  routes:
  - match: {prefix: /}
    redirect: {host_redirect: other.example}
";
    let t = walk(yaml, |cx, f| {
        route_config(
            cx,
            f,
            &Served {
                weir_path: "listeners[0]",
                tls: true,
            },
        )
    });
    assert!(t.refusals.is_empty());
    assert_eq!(
        t.notes,
        [format!(
            "{VH}[0].redirect (line 6): on this TLS listener Envoy redirects to https (the request's scheme); weir redirects to http unless scheme_redirect is set"
        )]
    );
}

#[test]
fn route_header_additions_and_removals() {
    let r = one_route(
        "match: {prefix: /}
route: {cluster: c}
request_headers_to_add: [{header: {key: x-a, value: '1'}, append: false}]
request_headers_to_remove: [x-b]
response_headers_to_add: [{header: {key: x-c, value: '2'}}]
response_headers_to_remove: [x-d]",
    );
    assert_eq!(
        r.request_headers_to_add,
        [HeaderValueOptionConfig {
            name: "x-a".into(),
            value: "1".into(),
            append: false
        }]
    );
    assert_eq!(r.request_headers_to_remove, ["x-b"]);
    assert_eq!(
        r.response_headers_to_add,
        [HeaderValueOptionConfig {
            name: "x-c".into(),
            value: "2".into(),
            append: true
        }]
    );
    assert_eq!(r.response_headers_to_remove, ["x-d"]);
}

#[test]
fn match_refusals() {
    let (yaml, got) = refused(
        "  - match: {prefix: /, headers: [{name: ':path', exact_match: /x}]}
    route: {cluster: c}
  - match:
      prefix: /
      headers:
      - {name: ':method', exact_match: GET}
      - {name: ':method', exact_match: POST}
    route: {cluster: c}
  - match: {prefix: /, headers: [{name: ':method', safe_regex_match: {regex: 'GET|HEAD'}}]}
    route: {cluster: c}
  - match: {prefix: /, headers: [{name: x-n, range_match: {start: 1, end: 5}}]}
    route: {cluster: c}
  - match: {path_separated_prefix: /api}
    route: {cluster: c}
  - match: {regex: /v.*}
    route: {cluster: c}
  - match: {prefix: /a, path: /a}
    route: {cluster: c}
  - match: {prefix: /, query_parameters: [{name: q, present_match: false}]}
    route: {cluster: c}
  - match: {prefix: /, grpc: {}}
    route: {cluster: c}
",
    );
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        got,
        [
            format!(
                "{VH}[0].match.headers[0].name (line {}): weir matches no pseudo-header (:path): match the path with prefix, path or safe_regex and the host with the virtual host's domains",
                l("':path'")
            ),
            format!(
                "{VH}[1].match.headers[1] (line {}): a second :method match: weir matches one method",
                l("POST")
            ),
            format!(
                "{VH}[2].match.headers[0] (line {}): weir matches the method exactly (match.methods): use an exact, not inverted, :method match",
                l("GET|HEAD")
            ),
            format!(
                "{VH}[3].match.headers[0].range_match (line {}): weir has no range match on a header",
                l("range_match")
            ),
            format!(
                "{VH}[4].match.path_separated_prefix (line {}): weir has no path_separated_prefix: use prefix, or a safe_regex such as `/api(/.*)?`",
                l("path_separated_prefix")
            ),
            format!(
                "{VH}[5].match.regex (line {}): unsafe regex matching was removed from Envoy: use safe_regex",
                l("regex: /v")
            ),
            format!(
                "{VH}[6].match.path (line {}): only one of prefix and path may be set",
                l("path: /a")
            ),
            format!(
                "{VH}[7].match.query_parameters[0].present_match (line {}): weir has present_match: true only",
                l("present_match: false")
            ),
            format!(
                "{VH}[8].match.grpc (line {}): weir has no gRPC match; match the content-type header with safe_regex `application/grpc.*`",
                l("grpc")
            ),
        ]
    );
}

#[test]
fn action_refusals() {
    let (yaml, got) = refused(
        "  - match: {prefix: /}
  - match: {prefix: /}
    route: {cluster: c}
    direct_response: {status: 200}
  - match: {path: /p}
    route: {cluster: c, prefix_rewrite: /q}
  - match: {prefix: /}
    route: {cluster: c, retry_policy: {retry_on: '5xx,envoy-ratelimited'}}
  - match: {prefix: /}
    route: {weighted_clusters: {total_weight: 90, clusters: [{name: a, weight: 80}, {name: b, weight: 20}]}}
  - match: {prefix: /}
    route:
      weighted_clusters:
        clusters: [{name: a, weight: 1, request_headers_to_add: [{header: {key: x, value: y}}]}]
  - match: {prefix: /}
    route: {cluster: c, hash_policy: [{header: {header_name: x-user}}]}
  - match: {prefix: /}
    route: {cluster: c, priority: HIGH}
  - match: {prefix: /}
    route: {cluster_header: x-cluster}
  - match: {prefix: /}
    direct_response: {status: 200, body: {filename: /srv/body.txt}}
  - match: {prefix: /}
    redirect: {strip_query: true}
  - match: {prefix: /}
    route: {cluster: c, timeout: 250ms}
",
    );
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        got,
        [
            format!(
                "{VH}[0] (line {}): one of route, direct_response or redirect is required",
                l("- match")
            ),
            format!(
                "{VH}[1].direct_response (line {}): only one of route and direct_response may be set",
                l("direct_response: {status: 200}")
            ),
            format!(
                "{VH}[2].route.prefix_rewrite (line {}): weir applies prefix_rewrite only to a prefix match",
                l("prefix_rewrite")
            ),
            format!(
                "{VH}[3].route.retry_policy.retry_on (line {}): retry condition \"envoy-ratelimited\" is not supported: weir has 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable",
                l("envoy-ratelimited")
            ),
            format!(
                "{VH}[4].route.weighted_clusters.total_weight (line {}): weir's weights are relative: total_weight 90 must be their sum (100), or left out",
                l("total_weight")
            ),
            format!(
                "{VH}[5].route.weighted_clusters.clusters[0].request_headers_to_add (line {}): ClusterWeight.request_headers_to_add is not supported: weir has no such setting",
                l("key: x, value: y")
            ),
            format!(
                "{VH}[6].route.hash_policy (line {}): weir has no hash-based load balancing",
                l("hash_policy")
            ),
            format!(
                "{VH}[7].route.priority (line {}): \"HIGH\" is not supported: weir has one priority, DEFAULT",
                l("HIGH")
            ),
            format!(
                "{VH}[8].route.cluster_header (line {}): weir routes to a cluster named in the config (cluster or weighted_clusters)",
                l("cluster_header")
            ),
            format!(
                "{VH}[8].route (line {}): one of cluster or weighted_clusters is required",
                l("cluster_header")
            ),
            format!(
                "{VH}[9].direct_response.body.filename (line {}): weir takes a direct response body inline: body.inline_string",
                l("body.txt")
            ),
            format!(
                "{VH}[10].redirect.strip_query (line {}): weir has no strip_query",
                l("strip_query")
            ),
            format!(
                "{VH}[11].route.timeout (line {}): invalid duration \"250ms\": expected seconds with an `s` suffix, e.g. \"0.25s\", or {{seconds, nanos}}",
                l("250ms")
            ),
        ]
    );
}

#[test]
fn table_and_virtual_host_refusals() {
    let yaml = "request_headers_to_add: [{header: {key: x-all, value: '1'}}]
virtual_hosts:
- name: vh
  domains: ['*']
  require_tls: ALL
  response_headers_to_add: [{header: {key: x-r, value: '1'}}]
  request_headers_to_add: [{header: {key: x-same, value: vh}}]
  routes:
  - match: {prefix: /}
    route: {cluster: c}
    request_headers_to_add: [{header: {key: X-Same, value: route}}]
";
    let got = table(yaml).refusals;
    assert_eq!(
        got,
        [
            "virtual_hosts[0].require_tls (line 5): \"ALL\" is not supported: weir has no require_tls; a redirect route with scheme_redirect: https does it per route".to_owned(),
            "virtual_hosts[0].response_headers_to_add (line 6): weir has these only on routes: add them to each route of the virtual host".to_owned(),
            "virtual_hosts[0].routes[0].request_headers_to_add (line 11): the virtual host also adds \"X-Same\": Envoy applies the virtual host's value after the route's, weir before; set it in one place".to_owned(),
            "request_headers_to_add (line 1): weir has no headers at the route table level: add them to each virtual host or route".to_owned(),
        ]
    );
}
