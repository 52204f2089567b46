//! Listeners and HTTP connection managers: each Envoy field weir has, and
//! each refusal with its path and line.

use super::super::test_support::{Walked, line, walk};
use super::*;
use crate::config::{AlpnProtocol, ConfigDuration, TlsVersion};

const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "- name: envoy.filters.http.router
            typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}";
const ROUTES: &str = "route_config:
            virtual_hosts: [{name: vh, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: c}}]}]";

/// A listener whose one manager has `hcm` (indented for its typed_config)
/// besides the stat prefix, routes and router; `chain` goes in its filter
/// chain and `listener` on the listener.
fn doc(listener: &str, chain: &str, hcm: &str) -> String {
    format!(
        "name: l0
address: {{socket_address: {{address: 0.0.0.0, port_value: 8080}}}}
{listener}
filter_chains:
- {chain}
  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
          '@type': {HCM_TYPE}
          stat_prefix: ingress_http
          {ROUTES}
          {hcm}
          http_filters:
          {ROUTER}
"
    )
}

fn run(yaml: &str) -> Walked<(Option<Listener>, Vec<DfpFilter>)> {
    walk(yaml, |cx, f| {
        let mut dfp = Vec::new();
        let l = listener(cx, f, "listeners[0]", &mut dfp);
        (l, dfp)
    })
}

fn converted(yaml: &str) -> ListenerConfig {
    let w = run(yaml);
    assert!(w.refusals.is_empty(), "{:#?}", w.refusals);
    w.out.0.expect("converted").config
}

#[test]
fn address_and_stat_prefix_name_the_listener() {
    let l = converted(&doc("", "name: chain", ""));
    assert_eq!(l.name, "ingress_http");
    assert_eq!(l.address.to_string(), "0.0.0.0:8080");
    assert!(l.bind_to_port);
    assert_eq!(l.codec, Codec::Auto);
    assert_eq!(l.server_name, "envoy");
    assert_eq!(l.timeouts, ListenerTimeoutsConfig::default());
    assert_eq!(l.limits, ListenerLimitsConfig::default());
    assert_eq!(l.upgrade_types, None);
    assert_eq!(l.tls, None);
    assert_eq!(l.virtual_hosts.len(), 1);
    let w = run(&doc("", "name: chain", ""));
    assert_eq!(w.out.0.unwrap().envoy_name.as_deref(), Some("l0"));
}

#[test]
fn bind_to_port_and_harmless_listener_fields() {
    let l = converted(&doc(
        "bind_to_port: false
traffic_direction: OUTBOUND
listener_filters:
- name: envoy.filters.listener.tls_inspector
- name: http
  typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}",
        "filter_chain_match: {}",
        "",
    ));
    assert!(!l.bind_to_port);
}

#[test]
fn manager_settings_weir_has() {
    let l = converted(&doc(
        "",
        "name: c",
        "codec_type: HTTP1
          server_name: edge
          request_headers_timeout: 2s
          request_timeout: 30s
          max_request_headers_kb: 96
          common_http_protocol_options: {idle_timeout: 300s, max_headers_count: 50}
          upgrade_configs: [{upgrade_type: websocket}, {upgrade_type: h2c, enabled: false}]
          use_remote_address: false
          xff_num_trusted_hops: 0
          generate_request_id: true
          http_protocol_options: {}
          http2_protocol_options: {}
          server_header_transformation: OVERWRITE",
    ));
    assert_eq!(l.codec, Codec::Http1);
    assert_eq!(l.server_name, "edge");
    assert_eq!(
        l.timeouts,
        ListenerTimeoutsConfig {
            idle: ConfigDuration::from_secs(300),
            request_headers: ConfigDuration::from_secs(2),
            request: ConfigDuration::from_secs(30),
        }
    );
    assert_eq!(l.limits.max_request_headers_kb, 96);
    assert_eq!(l.limits.max_headers_count, 50);
    assert_eq!(l.upgrade_types, Some(vec!["websocket".to_owned()]));
}

#[test]
fn downstream_tls_from_a_transport_socket() {
    let l = converted(&doc(
        "",
        "transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: true
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}
        tls_certificates:
        - {certificate_chain: {filename: /c.pem}, private_key: {filename: /k.pem}}
        validation_context: {trusted_ca: {filename: /ca.pem}}",
        "",
    ));
    assert_eq!(
        l.tls,
        Some(DownstreamTlsConfig {
            certificates: vec![crate::config::TlsCertificateConfig {
                cert_chain_file: Some("/c.pem".into()),
                cert_chain: None,
                private_key_file: Some("/k.pem".into()),
                private_key: None,
                server_names: vec![],
            }],
            alpn: vec![AlpnProtocol::H2, AlpnProtocol::Http11],
            min_version: TlsVersion::Tls13,
            client_ca_file: Some("/ca.pem".into()),
            client_ca: None,
            require_client_certificate: true,
        })
    );
}

#[test]
fn downstream_tls_seed_001_and_v2_tls_context() {
    let tls = |chain: &str| converted(&doc("", chain, "")).tls.expect("tls");
    let seed = tls("transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificates:
          - certificate_chain: {filename: /etc/envoy-cert.pem}
            private_key: {filename: /etc/envoy-private.pem}");
    assert_eq!(seed.alpn, []);
    assert_eq!(seed.min_version, TlsVersion::Tls12);
    assert_eq!(
        seed.certificates[0].cert_chain_file.as_deref(),
        Some(std::path::Path::new("/etc/envoy-cert.pem"))
    );
    let v2 = tls(
        "tls_context:
    common_tls_context:
      tls_certificates: [{certificate_chain: {filename: /c.pem}, private_key: {filename: /k.pem}}]",
    );
    assert_eq!(
        v2.certificates[0].private_key_file.as_deref(),
        Some(std::path::Path::new("/k.pem"))
    );
    // raw_buffer is cleartext.
    let plain = converted(&doc(
        "",
        "transport_socket: {name: envoy.transport_sockets.raw_buffer}",
        "",
    ));
    assert_eq!(plain.tls, None);
}

/// A filter chain's TLS transport socket, its context's fields to follow.
const TLS_SOCKET: &str = "transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// `inline_string` PEM becomes the inline fields; the key is kept whole
/// in the config (only its Debug and Serialize hide it).
#[test]
fn downstream_tls_inline_pem() {
    let l = converted(&doc(
        "",
        &format!(
            "{TLS_SOCKET}
      common_tls_context:
        validation_context: {{trusted_ca: {{inline_string: CA PEM}}}}
        tls_certificates:
        - certificate_chain: {{inline_string: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n\"}}
          private_key:
            inline_string: |
              -----BEGIN PRIVATE KEY-----
              MIIE"
        ),
        "",
    ));
    let tls = l.tls.expect("tls");
    let cert = &tls.certificates[0];
    assert_eq!(
        (cert.cert_chain_file.as_ref(), cert.cert_chain.as_deref()),
        (None, Some("-----BEGIN CERTIFICATE-----\nMIIB\n"))
    );
    assert_eq!(cert.private_key_file, None);
    assert_eq!(
        cert.private_key
            .as_ref()
            .map(crate::config::InlineKey::expose),
        Some("-----BEGIN PRIVATE KEY-----\nMIIE\n")
    );
    assert_eq!(
        (tls.client_ca_file, tls.client_ca.as_deref()),
        (None, Some("CA PEM"))
    );
}

#[test]
fn several_certificates_get_a_note_on_server_names() {
    let yaml = doc(
        "",
        "transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      common_tls_context:
        tls_certificates:
        - {certificate_chain: {filename: /a.pem}, private_key: {filename: /a.key}}
        - {certificate_chain: {filename: /b.pem}, private_key: {filename: /b.key}}",
        "",
    );
    let w = run(&yaml);
    assert!(w.refusals.is_empty(), "{:?}", w.refusals);
    assert_eq!(
        w.notes.last().map(String::as_str),
        Some(format!(
            "filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates (line {}): weir picks a certificate by the names listed in tls.certificates[].server_names, not the names in the certificates: list them, or weir serves the first to every client",
            line(&yaml, "tls_certificates:")
        ).as_str())
    );
}

#[test]
fn dynamic_forward_proxy_filter_is_recorded_for_its_cluster() {
    let yaml = doc("", "name: c", "").replace(
        &format!("http_filters:\n          {ROUTER}"),
        &format!(
            "http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              '@type': type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig
              dns_cache_config: {{name: proxy_dns_cache, dns_lookup_family: V4_ONLY, max_hosts: 100}}
          {ROUTER}"
        ),
    );
    let w = run(&yaml);
    assert!(w.refusals.is_empty(), "{:#?}", w.refusals);
    let dfp = &w.out.1;
    assert_eq!(dfp.len(), 1);
    assert_eq!(dfp[0].cache.name, "proxy_dns_cache");
    assert_eq!(dfp[0].cache.family, crate::config::DnsLookupFamily::V4Only);
    assert_eq!(dfp[0].cache.max_hosts, Some(100));
}

#[test]
fn listener_refusals() {
    let yaml = doc(
        "per_connection_buffer_limit_bytes: 32768
listener_filters:
- name: envoy.filters.listener.original_dst
- name: envoy.filters.listener.proxy_protocol",
        "filter_chain_match: {server_names: [a.example]}",
        "",
    ) + "- filters: []\n";
    let w = run(&yaml);
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        w.refusals,
        [
            format!(
                "listener_filters[0] (line {}): listener filter \"envoy.filters.listener.original_dst\": weir claims intercepted connections by original destination with `bind_to_port: false` listeners (docs/envoy.md)",
                l("original_dst")
            ),
            format!(
                "listener_filters[1] (line {}): listener filter \"envoy.filters.listener.proxy_protocol\": weir reads no PROXY protocol header",
                l("proxy_protocol")
            ),
            "per_connection_buffer_limit_bytes (line 3): Listener.per_connection_buffer_limit_bytes is not supported: weir has no such setting".to_owned(),
            format!(
                "filter_chains[1] (line {}): weir listeners have one filter chain; several certificates chosen by SNI are tls.certificates[].server_names",
                l("- filters: []")
            ),
            format!(
                "filter_chains[0].filter_chain_match (line {}): weir listeners have one filter chain and match no connection properties; several certificates chosen by SNI are tls.certificates[].server_names",
                l("filter_chain_match")
            ),
        ]
    );
    assert!(w.out.0.is_none());
}

#[test]
fn network_filter_refusals() {
    let yaml = "name: l
address: {socket_address: {address: 0.0.0.0, port_value: 9000}}
filter_chains:
- filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: tcp
      cluster: c
";
    let w = run(yaml);
    assert_eq!(
        w.refusals,
        [
            "filter_chains[0].filters[0] (line 5): network filter \"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\": weir listeners serve HTTP only; intercepted TLS and TCP pass through to their original destination (bind_to_port: false listeners, outbound_traffic_policy)",
            "filter_chains[0] (line 4): weir listeners serve HTTP: the filter chain needs an http_connection_manager",
        ]
    );
}

#[test]
fn manager_refusals() {
    let yaml = doc(
        "",
        "name: c",
        "codec_type: HTTP3
          access_log: [{name: envoy.access_loggers.stdout, typed_config: {'@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {text_format: '%START_TIME%'}}}]
          use_remote_address: true
          xff_num_trusted_hops: 1
          generate_request_id: false
          stream_idle_timeout: 300s
          server_header_transformation: PASS_THROUGH
          http2_protocol_options: {max_concurrent_streams: 100}
          tracing: {}",
    );
    let w = run(&yaml);
    let l = |needle| line(&yaml, needle);
    let at = "filter_chains[0].filters[0].typed_config";
    assert_eq!(
        w.refusals,
        [
            format!(
                "{at}.codec_type (line {}): \"HTTP3\" is not supported: weir serves AUTO, HTTP1 and HTTP2",
                l("HTTP3")
            ),
            format!(
                "{at}.server_header_transformation (line {}): \"PASS_THROUGH\" is not supported: weir always sets the server header to server_name (OVERWRITE)",
                l("PASS_THROUGH")
            ),
            format!(
                "{at}.access_log[0].typed_config.log_format.text_format (line {}): weir writes Envoy's default text format and Istio's default JSON only; this is another format string",
                l("access_log")
            ),
            format!(
                "{at}.use_remote_address (line {}): weir neither appends to nor trusts x-forwarded-for",
                l("use_remote_address")
            ),
            format!(
                "{at}.xff_num_trusted_hops (line {}): weir neither appends to nor trusts x-forwarded-for",
                l("xff_num")
            ),
            format!(
                "{at}.generate_request_id (line {}): weir always adds an x-request-id when the request has none",
                l("generate_request_id")
            ),
            format!(
                "{at}.http2_protocol_options.max_concurrent_streams (line {}): Http2ProtocolOptions.max_concurrent_streams is not supported: weir has no such setting",
                l("max_concurrent_streams")
            ),
            format!(
                "{at}.stream_idle_timeout (line {}): weir has no per-stream idle timeout: listeners[].timeouts.idle closes idle connections and a route's timeout bounds each request",
                l("stream_idle_timeout")
            ),
            format!("{at}.tracing (line {}): weir does no tracing", l("tracing")),
        ]
    );
}

#[test]
fn http_filter_refusals() {
    let yaml = doc("", "name: c", "").replace(
        &format!("http_filters:\n          {ROUTER}"),
        "http_filters:
          - name: envoy.filters.http.cors
          - name: envoy.filters.http.fault
            typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}",
    );
    let w = run(&yaml);
    let at = "filter_chains[0].filters[0].typed_config.http_filters";
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        w.refusals,
        [
            format!(
                "{at}[0] (line {}): HTTP filter \"envoy.filters.http.cors\" is not supported: weir carries over the router (implicit) and dynamic_forward_proxy only",
                l("cors")
            ),
            format!(
                "{at}[1] (line {}): weir has no fault injection",
                l("http.fault")
            ),
            format!(
                "{at} (line {}): http_filters needs the router: without it Envoy forwards nothing",
                l("http_filters")
            ),
        ]
    );
}

#[test]
fn downstream_tls_refusals() {
    let yaml = doc(
        "",
        "transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_sni: true
      common_tls_context:
        alpn_protocols: [h3]
        tls_params: {tls_minimum_protocol_version: TLSv1_1, cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]}
        tls_certificates:
        - certificate_chain: {inline_bytes: LS0tLS1CRUdJTg==}
          private_key: {environment_variable: TLS_KEY}
          password: {inline_string: secret}
        tls_certificate_sds_secret_configs: [{name: server_cert}]",
        "",
    );
    let w = run(&yaml);
    let at = "filter_chains[0].transport_socket.typed_config";
    let l = |needle| line(&yaml, needle);
    assert_eq!(
        w.refusals,
        [
            format!(
                "{at}.common_tls_context.tls_certificates[0].certificate_chain.inline_bytes (line {}): weir takes the certificate from `filename` or `inline_string` only (PEM text)",
                l("inline_bytes")
            ),
            format!(
                "{at}.common_tls_context.tls_certificates[0].private_key.environment_variable (line {}): weir takes the private key from `filename` or `inline_string` only (PEM text)",
                l("environment_variable")
            ),
            format!(
                "{at}.common_tls_context.tls_certificates[0].password (line {}): weir reads unencrypted private keys only",
                l("password")
            ),
            format!(
                "{at}.common_tls_context.alpn_protocols[0] (line {}): \"h3\" is not supported: weir offers h2 and http/1.1",
                l("h3")
            ),
            format!(
                "{at}.common_tls_context.tls_params.tls_minimum_protocol_version (line {}): \"TLSv1_1\" is not supported: weir speaks TLS 1.2 and 1.3 only (TLSv1_2 or TLSv1_3)",
                l("TLSv1_1")
            ),
            format!(
                "{at}.common_tls_context.tls_params.cipher_suites (line {}): weir uses rustls' cipher suites, curves and signature algorithms",
                l("cipher_suites")
            ),
            format!(
                "{at}.common_tls_context.tls_certificate_sds_secret_configs (line {}): weir has no SDS: name the PEM files with `filename`",
                l("sds_secret")
            ),
            format!(
                "{at}.require_sni (line {}): weir serves clients without SNI the first certificate",
                l("require_sni")
            ),
        ]
    );
}

#[test]
fn access_loggers_file_stdout_stderr_in_the_two_formats() {
    use crate::config::{AccessLogConfig, AccessLogFormat};
    use crate::convert::access_log::{ENVOY_DEFAULT_FORMAT, ISTIO_JSON};
    let default = serde_json::to_string(ENVOY_DEFAULT_FORMAT).unwrap();
    let istio: Vec<String> = ISTIO_JSON
        .iter()
        .map(|(k, v)| format!("{k}: '{}'", v[0]))
        .collect();
    let istio = istio.join(", ");
    let hcm = format!(
        "access_log:
          - name: envoy.access_loggers.file
            typed_config: {{'@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /var/log/a.log}}
          - name: envoy.access_loggers.file
            typed_config: {{'@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /var/log/b.log, log_format: {{text_format_source: {{inline_string: {default}}}}}}}
          - name: envoy.access_loggers.stdout
            typed_config: {{'@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {{json_format: {{{istio}}}}}}}
          - name: envoy.access_loggers.stderr
            typed_config: {{'@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog}}"
    );
    let l = converted(&doc("", "name: chain", &hcm));
    let log = |path: &str, format| AccessLogConfig {
        path: path.into(),
        format,
    };
    assert_eq!(
        l.access_log,
        [
            log("/var/log/a.log", AccessLogFormat::Text),
            log("/var/log/b.log", AccessLogFormat::Text),
            log("/dev/stdout", AccessLogFormat::Json),
            log("/dev/stderr", AccessLogFormat::Text),
        ]
    );
}

#[test]
fn access_log_formats_and_fields_weir_does_not_write_are_refused() {
    let hcm = "access_log:
          - typed_config: {'@type': type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {json_format: {start_time: '%START_TIME%'}}}
          - filter: {status_code_filter: {}}
            typed_config: {'@type': type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /a.log}";
    let yaml = doc("", "name: chain", hcm);
    let w = run(&yaml);
    let at = "filter_chains[0].filters[0].typed_config.access_log";
    assert_eq!(w.refusals.len(), 24, "{:#?}", w.refusals);
    assert!(w.refusals[0].starts_with(&format!(
        "{at}[0].typed_config.log_format.json_format (line {}): weir writes Envoy's default text format and Istio's default JSON only; this JSON has no \"route_name\"",
        line(&yaml, "json_format")
    )), "{:#?}", w.refusals);
    assert_eq!(
        w.refusals[23],
        format!(
            "{at}[1].filter (line {}): AccessLog.filter is not supported: weir has no such setting",
            line(&yaml, "filter:")
        )
    );
}
