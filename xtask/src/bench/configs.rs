//! Equivalent configs for the three proxies and the backend: one listener on
//! 127.0.0.1, a few prefix routes (first match wins, `/` last) all to one
//! cluster of the backend, the admin/metrics endpoint on, no access log.

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
}

/// weir's YAML (see the proxy config contract).
pub fn weir(p: &Ports) -> String {
    let mut routes = String::new();
    for prefix in ROUTE_PREFIXES {
        let name = route_name(prefix);
        routes.push_str(&format!(
            "          - name: {name}\n            match: {{ prefix: \"{prefix}\" }}\n            route: {{ cluster: backend }}\n"
        ));
    }
    format!(
        "\
admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: ingress_http
    address: 127.0.0.1:{listener}
    virtual_hosts:
      - name: backend
        domains: [\"*\"]
        routes:
{routes}clusters:
  - name: backend
    type: STATIC
    endpoints:
      - address: 127.0.0.1
        port: {backend}
",
        admin = p.admin,
        listener = p.listener,
        backend = p.backend,
    )
}

/// Envoy's static bootstrap: http_connection_manager with the router filter.
pub fn envoy(p: &Ports) -> String {
    let mut routes = String::new();
    for prefix in ROUTE_PREFIXES {
        let name = route_name(prefix);
        routes.push_str(&format!(
            "              - name: {name}\n                match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: backend }}\n"
        ));
    }
    format!(
        "\
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}
static_resources:
  listeners:
  - name: ingress_http
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listener} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: HTTP1
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
  clusters:
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
        listener = p.listener,
        backend = p.backend,
    )
}

/// nginx as the reverse proxy: one worker, upstream keep-alive, stub_status
/// on the admin port. `dir` holds its pid file, logs and temp directories.
pub fn nginx_proxy(p: &Ports, dir: &str) -> String {
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
        listen 127.0.0.1:{admin};
        location = /stub_status {{ stub_status; }}
    }}
}}
",
        common = common_http(dir, "nginx-proxy"),
        admin = p.admin,
        listener = p.listener,
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
        }
    }

    #[test]
    fn every_config_has_every_route_and_the_ports() {
        for text in [weir(&ports()), envoy(&ports()), nginx_proxy(&ports(), "/x")] {
            for prefix in ROUTE_PREFIXES {
                assert!(text.contains(prefix), "{prefix} in\n{text}");
            }
            for port in ["1001", "1002", "1003"] {
                assert!(text.contains(port), "{port} in\n{text}");
            }
        }
        assert!(backend(1003, "/x").contains("weir bench backend: film 42\\n"));
    }
}
