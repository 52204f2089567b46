//! Equivalent configs for the three proxies and the backend: one listener on
//! 127.0.0.1, a few prefix routes (first match wins, `/` last) all to one
//! cluster of the backend, the admin/metrics endpoint on, no access log
//! (but for `weir-log`, which is weir logging every request to a file).
//! Beside it, with the same routes to the same cluster: a TLS-terminating
//! listener (one self-signed certificate, ALPN h2 then http/1.1) and a
//! cleartext listener for HTTP/2 with prior knowledge (h2c).

use std::path::PathBuf;

/// The route table, in order. The load hits [`LOAD_PATH`], which only the
/// third route matches, so each request really walks the table.
pub const ROUTE_PREFIXES: &[&str] = &["/ratings", "/users", "/films", "/"];
pub const LOAD_PATH: &str = "/films/42";
/// What the backend answers to every request; readiness checks look for it.
pub const BACKEND_BODY: &str = "weir bench backend: film 42\n";

pub struct Ports {
    pub listener: u16,
    pub admin: u16,
    pub backend: u16,
    /// TLS-terminating listener: HTTP/1.1 or HTTP/2 by ALPN.
    pub https: u16,
    /// Cleartext listener for HTTP/2 with prior knowledge.
    pub h2c: u16,
}

/// The certificate every TLS listener serves (PEM files).
#[derive(Debug, Clone)]
pub struct Cert {
    pub chain: PathBuf,
    pub key: PathBuf,
}

/// weir's YAML (see the proxy config contract). The TLS and h2c listeners
/// keep the default `codec: auto` (h2 by ALPN, or by the h2 preface). With
/// `access_log`, every listener logs each request there in the text format.
pub fn weir(p: &Ports, cert: &Cert, access_log: Option<&std::path::Path>) -> String {
    let mut routes = String::new();
    for prefix in ROUTE_PREFIXES {
        let name = route_name(prefix);
        routes.push_str(&format!(
            "          - name: {name}\n            match: {{ prefix: \"{prefix}\" }}\n            route: {{ cluster: backend }}\n"
        ));
    }
    let log = access_log.map_or_else(String::new, |path| {
        format!(
            "    access_log: [{{path: {}, format: text}}]\n",
            path.display()
        )
    });
    let virtual_hosts = format!(
        "{log}    virtual_hosts:
      - name: backend
        domains: [\"*\"]
        routes:
{routes}"
    );
    format!(
        "\
admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: ingress_http
    address: 127.0.0.1:{listener}
{virtual_hosts}  - name: ingress_https
    address: 127.0.0.1:{https}
    tls:
      certificates:
        - cert_chain_file: {chain}
          private_key_file: {key}
      alpn: [h2, http/1.1]
{virtual_hosts}  - name: ingress_h2c
    address: 127.0.0.1:{h2c}
{virtual_hosts}clusters:
  - name: backend
    type: STATIC
    endpoints:
      - address: 127.0.0.1
        port: {backend}
",
        admin = p.admin,
        listener = p.listener,
        https = p.https,
        h2c = p.h2c,
        chain = cert.chain.display(),
        key = cert.key.display(),
        backend = p.backend,
    )
}

/// Envoy's static bootstrap: http_connection_manager with the router filter.
/// The HTTP/1.1 listener keeps `codec_type: HTTP1`; the TLS one
/// (DownstreamTlsContext, ALPN h2 then http/1.1) and the h2c one use `AUTO`.
pub fn envoy(p: &Ports, cert: &Cert) -> String {
    let mut routes = String::new();
    for prefix in ROUTE_PREFIXES {
        let name = route_name(prefix);
        routes.push_str(&format!(
            "              - name: {name}\n                match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: backend }}\n"
        ));
    }
    let tls = format!(
        "transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: \"{chain}\" }}
              private_key: {{ filename: \"{key}\" }}
      ",
        chain = cert.chain.display(),
        key = cert.key.display(),
    );
    let listeners = [
        envoy_listener("ingress_http", p.listener, "HTTP1", "", &routes),
        envoy_listener("ingress_https", p.https, "AUTO", &tls, &routes),
        envoy_listener("ingress_h2c", p.h2c, "AUTO", "", &routes),
    ]
    .concat();
    format!(
        "\
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
{listeners}  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {backend} }}
",
        admin = p.admin,
        backend = p.backend,
    )
}

/// One Envoy listener; its stats are under `http.<name>.`. `transport` is
/// empty or a `transport_socket:` block ending in the filter chain's indent.
fn envoy_listener(name: &str, port: u16, codec: &str, transport: &str, routes: &str) -> String {
    // No `\` line continuation here: it would eat the first line's indent.
    format!(
        "  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - {transport}filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: {codec}
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: [\"*\"]
              routes:
{routes}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"
    )
}

/// nginx as the reverse proxy: one worker, upstream keep-alive, stub_status
/// on the admin port. `dir` holds its pid file, logs and temp directories.
/// TLS: `listen ... ssl http2` (ALPN), TLS 1.2 and 1.3 like the others
/// (nginx 1.22 leaves 1.3 out by default); h2c: `listen ... http2`.
pub fn nginx_proxy(p: &Ports, cert: &Cert, dir: &str) -> String {
    let mut locations = String::new();
    for prefix in ROUTE_PREFIXES {
        locations.push_str(&format!(
            "        location {prefix} {{\n            proxy_pass http://backend;\n        }}\n"
        ));
    }
    format!(
        "\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx-proxy.pid;
error_log {dir}/nginx-proxy.error.log warn;
events {{ worker_connections 4096; }}
http {{
{common}
    # Like Envoy and weir: no limit on requests per downstream connection.
    keepalive_requests 1000000;
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    proxy_set_header Host $host;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listener};
{locations}    }}
    server {{
        listen 127.0.0.1:{https} ssl http2;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
{locations}    }}
    server {{
        listen 127.0.0.1:{h2c} http2;
{locations}    }}
    server {{
        listen 127.0.0.1:{admin};
        location = /stub_status {{ stub_status; }}
    }}
}}
",
        common = common_http(dir, "nginx-proxy"),
        admin = p.admin,
        listener = p.listener,
        https = p.https,
        h2c = p.h2c,
        chain = cert.chain.display(),
        key = cert.key.display(),
        backend = p.backend,
    )
}

/// The backend: a separate single-process nginx answering from memory.
pub fn backend(port: u16, dir: &str) -> String {
    format!(
        "\
worker_processes 1;
daemon off;
master_process off;
pid {dir}/backend.pid;
error_log {dir}/backend.error.log warn;
events {{ worker_connections 4096; }}
http {{
{common}
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type text/plain;
        location / {{ return 200 \"{body}\"; }}
    }}
}}
",
        common = common_http(dir, "backend"),
        body = BACKEND_BODY.escape_default(),
    )
}

fn common_http(dir: &str, name: &str) -> String {
    format!(
        "    access_log off;
    client_body_temp_path {dir}/{name}-tmp/body;
    proxy_temp_path {dir}/{name}-tmp/proxy;
    fastcgi_temp_path {dir}/{name}-tmp/fastcgi;
    uwsgi_temp_path {dir}/{name}-tmp/uwsgi;
    scgi_temp_path {dir}/{name}-tmp/scgi;"
    )
}

fn route_name(prefix: &str) -> &str {
    match prefix.trim_matches('/') {
        "" => "fallback",
        name => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Ports {
        Ports {
            listener: 1001,
            admin: 1002,
            backend: 1003,
            https: 1004,
            h2c: 1005,
        }
    }

    fn cert() -> Cert {
        Cert {
            chain: "/x/cert.pem".into(),
            key: "/x/key.pem".into(),
        }
    }

    #[test]
    fn every_config_has_every_route_and_the_ports() {
        let (p, c) = (ports(), cert());
        let logged = weir(&p, &c, Some(std::path::Path::new("/x/access.log")));
        assert_eq!(
            logged
                .matches("    access_log: [{path: /x/access.log, format: text}]\n")
                .count(),
            3,
            "{logged}"
        );
        for text in [
            weir(&p, &c, None),
            logged,
            envoy(&p, &c),
            nginx_proxy(&p, &c, "/x"),
        ] {
            for prefix in ROUTE_PREFIXES {
                // The route table on each of the three listeners.
                assert!(text.matches(prefix).count() >= 3, "{prefix} in\n{text}");
            }
            for needle in [
                "1001",
                "1002",
                "1003",
                "1004",
                "1005",
                "/x/cert.pem",
                "/x/key.pem",
            ] {
                assert!(text.contains(needle), "{needle} in\n{text}");
            }
        }
        let envoy = envoy(&p, &c);
        assert!(
            envoy.contains("\n  listeners:\n  - name: ingress_http\n"),
            "{envoy}"
        );
        assert_eq!(envoy.matches("codec_type: HTTP1").count(), 1, "{envoy}");
        assert_eq!(envoy.matches("codec_type: AUTO").count(), 2, "{envoy}");
        assert!(envoy.contains("alpn_protocols: [h2, http/1.1]"), "{envoy}");
        assert!(backend(1003, "/x").contains("weir bench backend: film 42\\n"));
    }
}
