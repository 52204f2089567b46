//! Routing acceptance tests: seeds 001 and 003, virtual hosts, route
//! matches, actions, header manipulation, request id and Envoy-like headers.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::Full;

/// Seed 001: POST a film then GET it through `/films`; `/ratings` goes to the other service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_001_films_and_ratings() {
    let films: Arc<Mutex<Vec<String>>> = Arc::default();
    let f2 = films.clone();
    let film = Backend::start(move |req| {
        let films = f2.clone();
        async move {
            let mut list = films.lock().unwrap();
            if req.method() == "POST" {
                list.push(String::from_utf8_lossy(req.body()).into_owned());
            }
            let body = format!("[{}]", list.join(","));
            http::Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
    })
    .await;
    let rating = Backend::start(|_| async { status(200, r#"[{"rating": "5"}]"#) }).await;
    let cfg = format!(
        r#"listeners:
  - name: frontend
    address: 127.0.0.1:0
    virtual_hosts:
      - name: backend
        domains: ["*"]
        routes:
          - match: {{prefix: /films}}
            route: {{cluster: film-service-cluster}}
          - match: {{prefix: /ratings}}
            route: {{cluster: rating-service-cluster}}
clusters:
{}
{}"#,
        static_cluster("film-service-cluster", &[film.port()], ""),
        static_cluster("rating-service-cluster", &[rating.port()], "")
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("frontend").await;
    let c = client();
    let post = send(
        &c,
        req(
            "POST",
            &format!("http://{l}/films"),
            &[],
            r#"{"name": "Anand", "language": "English"}"#,
        ),
    )
    .await;
    assert_eq!(post.status, 200);
    assert_eq!(post.body, r#"[{"name": "Anand", "language": "English"}]"#);
    let get = send(&c, req("GET", &format!("http://{l}/films"), &[], "")).await;
    assert_eq!(get.status, 200);
    assert!(get.body.contains("Anand"), "{}", get.body);
    // Envoy's names (seed 001 shows both).
    assert_eq!(get.headers["server"], "envoy");
    assert!(
        get.headers["x-envoy-upstream-service-time"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let ratings = send(&c, req("GET", &format!("http://{l}/ratings"), &[], "")).await;
    assert_eq!(ratings.body, r#"[{"rating": "5"}]"#);
    assert_eq!(rating.requests(), 1);
    assert_eq!(film.requests(), 2);
}

/// Seed 003: `/pong` and `/ping` go to their clusters, everything else falls back to ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_ping_pong_fallback() {
    let ping = Backend::named("ping").await;
    let pong = Backend::named("pong").await;
    let cfg = format!(
        r#"listeners:
  - name: listener_0
    address: 127.0.0.1:0
    virtual_hosts:
      - name: edge
        domains: ["*"]
        routes:
          - match: {{prefix: /pong}}
            route: {{cluster: pong-cluster}}
          - match: {{prefix: /ping}}
            route: {{cluster: ping-cluster}}
          - match: {{prefix: /}}
            route: {{cluster: ping-cluster}}
clusters:
{}
{}"#,
        static_cluster("ping-cluster", &[ping.port()], ""),
        static_cluster("pong-cluster", &[pong.port()], "")
    );
    let mut p = Proxy::start(&cfg).await;
    let l = p.listener("listener_0").await;
    assert_eq!(get(&format!("http://{l}/pong")).await, (200, "pong".into()));
    assert_eq!(get(&format!("http://{l}/ping")).await, (200, "ping".into()));
    assert_eq!(
        get(&format!("http://{l}/anything/else")).await,
        (200, "ping".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_sets_the_server_header() {
    let vhosts = r#"      - name: all
        domains: ["*"]
        routes: [{match: {prefix: /}, direct_response: {status: 204}}]
"#;
    let config = one_listener(vhosts, "  []\n").replace(
        "    virtual_hosts:",
        "    server_name: weir\n    virtual_hosts:",
    );
    let mut p = Proxy::start(&config).await;
    let l = p.listener("main").await;
    let r = send(&client(), req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["server"], "weir");
    assert!(
        r.headers.get("content-type").is_none(),
        "no body, no content-type"
    );
}

fn one_listener(vhosts: &str, clusters: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    address: 127.0.0.1:0\n    virtual_hosts:\n{vhosts}clusters:\n{clusters}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosts_by_authority() {
    let a = Backend::named("exact").await;
    let b = Backend::named("suffix").await;
    let d = Backend::named("default").await;
    let vhosts = r#"      - name: exact
        domains: ["films.local", "api.local:8080"]
        routes: [{match: {prefix: /}, route: {cluster: a}}]
      - name: suffix
        domains: ["*.svc.local"]
        routes: [{match: {prefix: /}, route: {cluster: b}}]
      - name: other
        domains: ["*"]
        routes: [{match: {prefix: /}, route: {cluster: d}}]
"#;
    let clusters = [
        static_cluster("a", &[a.port()], ""),
        static_cluster("b", &[b.port()], ""),
        static_cluster("d", &[d.port()], ""),
    ]
    .join("\n");
    let mut p = Proxy::start(&one_listener(vhosts, &clusters)).await;
    let l = p.listener("main").await;
    let c = client();
    for (host, want) in [
        ("films.local", "exact"),
        ("FILMS.local", "exact"),
        // The port is part of the match, as in Envoy (checked against 1.40).
        ("films.local:1234", "default"),
        ("api.local:8080", "exact"),
        ("api.local", "default"),
        ("x.svc.local", "suffix"),
        ("a.b.svc.local:99", "default"),
        ("svc.local", "default"),
        ("elsewhere", "default"),
    ] {
        let r = send(
            &c,
            req("GET", &format!("http://{l}/"), &[("host", host)], ""),
        )
        .await;
        assert_eq!(r.body, want, "host {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_virtual_host_or_route_is_404() {
    let a = Backend::named("a").await;
    let vhosts = r#"      - name: only
        domains: ["only.local"]
        routes: [{match: {path: /exact}, route: {cluster: a}}]
"#;
    let mut p = Proxy::start(&one_listener(vhosts, &static_cluster("a", &[a.port()], ""))).await;
    let l = p.listener("main").await;
    let c = client();
    let r = send(
        &c,
        req(
            "GET",
            &format!("http://{l}/exact"),
            &[("host", "other")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["server"], "envoy");
    assert_eq!(r.body, "");
    let r = send(
        &c,
        req(
            "GET",
            &format!("http://{l}/exact/more"),
            &[("host", "only.local")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send(
        &c,
        req(
            "GET",
            &format!("http://{l}/exact?q=1"),
            &[("host", "only.local")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        p.metric(
            r#"weir_http_downstream_requests_total{listener="main",response_code_class="4xx"}"#
        )
        .await,
        2.0
    );
}

/// (method, path, headers, expected backend)
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_matches_in_order() {
    let names = [
        "exact",
        "regex",
        "hdr",
        "hdr_regex",
        "present",
        "inverted",
        "method",
        "query",
        "prefix",
    ];
    let mut backends = HashMap::new();
    for n in names {
        backends.insert(n, Backend::named(n).await);
    }
    let vhosts = r#"      - name: all
        domains: ["*"]
        routes:
          - {match: {path: /exact}, route: {cluster: exact}}
          - {match: {safe_regex: "/v[0-9]+/items"}, route: {cluster: regex}}
          - match: {prefix: /h, headers: [{name: x-canary, exact: "1"}]}
            route: {cluster: hdr}
          - match: {prefix: /h, headers: [{name: x-user, safe_regex: "admin-[a-z]+"}]}
            route: {cluster: hdr_regex}
          - match: {prefix: /h, headers: [{name: x-debug, present: true}, {name: x-block, present: true, invert_match: true}]}
            route: {cluster: present}
          - match: {prefix: /i, headers: [{name: x-v, exact: v1, invert_match: true}]}
            route: {cluster: inverted}
          - match: {prefix: /m, methods: [PUT, DELETE]}
            route: {cluster: method}
          - match: {prefix: /q, query_parameters: [{name: debug, exact: "1"}]}
            route: {cluster: query}
          - match: {prefix: /, case_sensitive: false}
            route: {cluster: prefix}
"#;
    let clusters: Vec<String> = names
        .iter()
        .map(|n| static_cluster(n, &[backends[n].port()], ""))
        .collect();
    let mut p = Proxy::start(&one_listener(vhosts, &clusters.join("\n"))).await;
    let l = p.listener("main").await;
    let c = client();
    let cases: &[Case] = &[
        ("GET", "/exact", &[], "exact"),
        ("GET", "/exact/x", &[], "prefix"),
        ("GET", "/v12/items", &[], "regex"),
        ("GET", "/v12/items/3", &[], "prefix"),
        ("GET", "/h", &[("x-canary", "1")], "hdr"),
        ("GET", "/h", &[("x-canary", "2")], "prefix"),
        ("GET", "/h", &[("x-user", "admin-bob")], "hdr_regex"),
        ("GET", "/h", &[("x-user", "admin-Bob1")], "prefix"),
        ("GET", "/h", &[("x-debug", "")], "present"),
        ("GET", "/h", &[("x-debug", ""), ("x-block", "1")], "prefix"),
        // Envoy: an inverted exact match needs the header (checked against 1.40).
        ("GET", "/i", &[("x-v", "v2")], "inverted"),
        ("GET", "/i", &[("x-v", "v1")], "prefix"),
        ("GET", "/i", &[], "prefix"),
        ("PUT", "/m", &[], "method"),
        ("GET", "/m", &[], "prefix"),
        ("GET", "/q?a=2&debug=1", &[], "query"),
        ("GET", "/q?debug=0", &[], "prefix"),
    ];
    for (m, path, hdrs, want) in cases {
        let r = send(&c, req(m, &format!("http://{l}{path}"), hdrs, "")).await;
        assert_eq!(r.body, *want, "{m} {path} {hdrs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_redirect_and_rewrites() {
    let a = Backend::named("a").await;
    let vhosts = r#"      - name: all
        domains: ["*"]
        request_headers_to_add: [{name: x-vhost, value: v}]
        routes:
          - match: {path: /health}
            direct_response: {status: 200, body: "ok"}
          - match: {prefix: /teapot}
            direct_response: {status: 418}
          - match: {prefix: /old/}
            redirect: {prefix_rewrite: /new/, response_code: 302}
          - match: {prefix: /secure}
            redirect: {scheme_redirect: https, host_redirect: example.com, port_redirect: 8443}
          - match: {prefix: /api/}
            route: {cluster: a, prefix_rewrite: /v2/, host_rewrite_literal: internal.local}
            request_headers_to_add:
              - {name: x-from, value: weir}
              - {name: x-replace, value: new, append: false}
            request_headers_to_remove: [x-secret]
            response_headers_to_add: [{name: x-resp, value: added}]
            response_headers_to_remove: [x-backend]
"#;
    let mut p = Proxy::start(&one_listener(vhosts, &static_cluster("a", &[a.port()], ""))).await;
    let l = p.listener("main").await;
    let c = client();
    let r = send(&c, req("GET", &format!("http://{l}/health"), &[], "")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(r.headers["server"], "envoy");
    assert_eq!(r.headers["content-type"], "text/plain");
    let r = send(&c, req("GET", &format!("http://{l}/teapot"), &[], "")).await;
    assert_eq!(r.status, 418);
    let r = send(
        &c,
        req(
            "GET",
            &format!("http://{l}/old/page?x=1"),
            &[("host", "site.local:8000")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "http://site.local:8000/new/page?x=1");
    let r = send(&c, req("GET", &format!("http://{l}/secure/x"), &[], "")).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "https://example.com:8443/secure/x");

    let r = send(
        &c,
        req(
            "GET",
            &format!("http://{l}/api/items?id=7"),
            &[
                ("x-secret", "s"),
                ("x-replace", "old"),
                ("x-from", "client"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-seen-path"], "/v2/items?id=7");
    assert_eq!(r.headers["x-echo-host"], "internal.local");
    assert!(!r.headers.contains_key("x-echo-x-secret"));
    assert_eq!(r.headers["x-echo-x-replace"], "new");
    let from: Vec<_> = r
        .headers
        .get_all("x-echo-x-from")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(from, ["client", "weir"]);
    assert_eq!(r.headers["x-echo-x-vhost"], "v");
    assert_eq!(r.headers["x-resp"], "added");
    assert!(!r.headers.contains_key("x-backend"));
    // Envoy tells the upstream the route timeout (15 s by default).
    assert_eq!(r.headers["x-echo-x-envoy-expected-rq-timeout-ms"], "15000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_added_or_kept_and_passed_on() {
    let a = Backend::named("a").await;
    let vhosts = "      - name: all\n        domains: [\"*\"]\n        routes: [{match: {prefix: /}, route: {cluster: a}}]\n";
    let mut p = Proxy::start(&one_listener(vhosts, &static_cluster("a", &[a.port()], ""))).await;
    let l = p.listener("main").await;
    let c = client();
    let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
    let id = r.headers["x-echo-x-request-id"].to_str().unwrap();
    let parsed = uuid::Uuid::parse_str(id).expect("uuid");
    assert_eq!(parsed.get_version_num(), 4);
    let r2 = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
    assert_ne!(r2.headers["x-echo-x-request-id"], id);
    let r3 = send(
        &c,
        req(
            "GET",
            &format!("http://{l}/"),
            &[("x-request-id", "client-id-1")],
            "",
        ),
    )
    .await;
    assert_eq!(r3.headers["x-echo-x-request-id"], "client-id-1");
    assert_eq!(r3.headers.get_all("x-echo-x-request-id").iter().count(), 1);
}

/// `--workers 1` (the benchmark setting) serves many concurrent clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_worker_serves_concurrent_clients() {
    let a = Backend::named("a").await;
    let vhosts = "      - name: all\n        domains: [\"*\"]\n        routes: [{match: {prefix: /}, route: {cluster: a}}]\n";
    let mut p = Proxy::start_with(
        &one_listener(vhosts, &static_cluster("a", &[a.port()], "")),
        &["--workers", "1"],
    )
    .await;
    let l = p.listener("main").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..50 {
                let r = send(&c, req("GET", &format!("http://{l}/"), &[], "")).await;
                assert_eq!((r.status, r.body.as_str()), (200, "a"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.requests(), 800);
    let (_, dump) = p.admin_get("/config_dump").await;
    assert!(dump.contains("\"listeners\""), "{dump}");
}
