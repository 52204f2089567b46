//! Why a field of an Envoy message is not carried over, and what to do
//! instead where weir has a way; fields not listed get the generic reason.

/// The reason for refusing `field` of the Envoy message `message`.
pub(super) fn why(message: &str, field: &str) -> String {
    specific(message, field)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{message}.{field} is not supported: weir has no such setting"))
}

fn specific(message: &str, field: &str) -> Option<&'static str> {
    Some(match (message, field) {
        ("Admin", "access_log" | "access_log_path") => "weir writes no admin access log",
        (_, "tracing") => "weir does no tracing",
        (_, "typed_per_filter_config" | "per_filter_config") => {
            "weir has no per-route filter configuration"
        }
        (_, "metadata" | "filter_metadata") => "weir keeps no metadata",
        (_, "rate_limits") => "weir has no rate limiting",
        (_, "cors") => "weir has no CORS policy",
        ("Bootstrap", "dynamic_resources") => {
            "weir has no xDS: it reads one static file, reloaded when it changes; put every resource in static_resources"
        }
        ("Bootstrap", "layered_runtime" | "runtime") => {
            "weir has no runtime layer; its settings live in the config file"
        }
        ("Bootstrap", "stats_sinks" | "stats_config" | "stats_flush_interval") => {
            "weir pushes no stats and has no stat tags to configure: Prometheus scrapes /stats/prometheus on admin.address or stats.address"
        }
        ("Bootstrap", "overload_manager") => {
            "weir has no overload manager; it sheds load per enrolled pod (docs/pods.md)"
        }
        ("Bootstrap", "cluster_manager") => "weir has no cluster manager settings",
        ("StaticResources", "secrets") => {
            "weir has no SDS secrets: name the PEM files with `filename` where the certificate is used"
        }
        ("Listener", "listener_filters") => {
            "weir has no listener filters (tls_inspector and http_inspector are accepted: weir detects TLS and HTTP itself)"
        }
        ("Listener", "filter_chain_matcher" | "default_filter_chain") => {
            "weir listeners have one filter chain; several certificates chosen by SNI are `tls.certificates[].server_names`"
        }
        ("Listener", "use_original_dst") => {
            "weir claims intercepted connections by original destination with `bind_to_port: false` listeners (docs/envoy.md)"
        }
        ("FilterChain", "filter_chain_match") => {
            "weir listeners have one filter chain and match no connection properties; several certificates chosen by SNI are `tls.certificates[].server_names`"
        }
        ("HttpConnectionManager", "rds") => {
            "weir has no RDS: write the routes inline as route_config"
        }
        ("HttpConnectionManager", "scoped_routes") => "weir has no scoped routes",
        ("HttpConnectionManager", "stream_idle_timeout") => {
            "weir has no per-stream idle timeout: listeners[].timeouts.idle closes idle connections and a route's timeout bounds each request"
        }
        ("HttpConnectionManager", "http3_protocol_options") => "weir does not serve HTTP/3",
        ("HttpConnectionManager", "local_reply_config") => "weir's local replies are fixed",
        ("HttpConnectionManager", "generate_request_id" | "preserve_external_request_id") => {
            "weir always generates x-request-id as Envoy does by default; it cannot be turned off"
        }
        (
            "HttpConnectionManager",
            "normalize_path" | "merge_slashes" | "path_with_escaped_slashes_action",
        ) => "weir does not normalize paths",
        (
            "RouteConfiguration",
            "request_headers_to_add"
            | "request_headers_to_remove"
            | "response_headers_to_add"
            | "response_headers_to_remove",
        ) => "weir has no headers at the route table level: add them to each virtual host or route",
        ("RouteConfiguration", "vhds") => "weir has no VHDS: list the virtual hosts inline",
        (
            "VirtualHost",
            "request_headers_to_remove" | "response_headers_to_add" | "response_headers_to_remove",
        ) => "weir has these only on routes: add them to each route of the virtual host",
        ("VirtualHost", "virtual_clusters") => "weir has no virtual clusters",
        ("VirtualHost", "require_tls") => {
            "weir has no require_tls; a redirect route with scheme_redirect: https does it per route"
        }
        ("RouteMatch", "path_separated_prefix") => {
            "weir has no path_separated_prefix: use prefix, or a safe_regex such as `/api(/.*)?`"
        }
        ("RouteMatch", "path_match_policy") => "weir has no URI template matching: use safe_regex",
        ("RouteMatch", "connect_matcher") => "weir does not proxy CONNECT",
        ("RouteMatch", "regex") => "unsafe regex matching was removed from Envoy: use safe_regex",
        ("RouteMatch", "grpc") => {
            "weir has no gRPC match; match the content-type header with safe_regex `application/grpc.*`"
        }
        ("RouteMatch", "runtime_fraction") => "weir has no runtime fractions",
        ("RouteMatch", "tls_context" | "dynamic_metadata" | "filter_state") => {
            "weir matches requests by path, headers, methods and query parameters only"
        }
        ("HeaderMatcher", "range_match") => "weir has no range match on a header",
        ("HeaderMatcher", "treat_missing_header_as_empty") => {
            "weir has no treat_missing_header_as_empty"
        }
        ("RouteAction", "hash_policy") => "weir has no hash-based load balancing",
        ("RouteAction", "request_mirror_policies" | "request_mirror_policy") => {
            "weir mirrors no requests"
        }
        (
            "RouteAction",
            "cluster_header" | "cluster_specifier_plugin" | "inline_cluster_specifier_plugin",
        ) => "weir routes to a cluster named in the config (cluster or weighted_clusters)",
        ("RouteAction", "regex_rewrite" | "path_rewrite_policy") => {
            "weir rewrites paths only with prefix_rewrite"
        }
        (
            "RouteAction",
            "auto_host_rewrite" | "host_rewrite_header" | "host_rewrite_path_regex",
        ) => "weir rewrites the Host only to a literal (host_rewrite_literal)",
        ("RouteAction", "idle_timeout") => {
            "weir has no per-route idle timeout; the route's timeout bounds the whole request"
        }
        ("RouteAction", "max_stream_duration" | "max_grpc_timeout" | "grpc_timeout_offset") => {
            "weir has no stream duration limits; use the route's timeout"
        }
        ("RouteAction", "upgrade_configs") => {
            "weir allows upgrades per listener (HCM upgrade_configs), not per route"
        }
        ("RouteAction", "internal_redirect_policy") => "weir follows no redirects",
        (
            "RetryPolicy",
            "retry_host_predicate"
            | "host_selection_retry_max_attempts"
            | "retry_priority"
            | "retry_options_predicates",
        ) => "weir has no retry host or priority selection: a retry may pick any endpoint",
        ("RetryPolicy", "retriable_headers" | "retriable_request_headers") => {
            "weir retries on the retry_on conditions and retriable_status_codes only"
        }
        ("RetryPolicy", "per_try_idle_timeout") => "weir has per_try_timeout only",
        ("RetryPolicy", "rate_limited_retry_back_off") => {
            "weir has no rate-limited back-off; retry_back_off applies to every retry"
        }
        ("Cluster", "health_checks") => {
            "weir has no active health checks; outlier_detection ejects failing endpoints passively"
        }
        ("Cluster", "eds_cluster_config") => {
            "weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS"
        }
        ("Cluster", "lb_subset_config") => {
            "weir has no subsets: make one cluster per subset, each on its own Service"
        }
        (
            "Cluster",
            "ring_hash_lb_config"
            | "maglev_lb_config"
            | "original_dst_lb_config"
            | "least_request_lb_config"
            | "round_robin_lb_config"
            | "load_balancing_policy"
            | "common_lb_config",
        ) => "weir's lb_policy takes no options",
        ("Cluster", "upstream_connection_options") => "weir sets no upstream socket options",
        ("Cluster" | "DnsCluster" | "DnsCacheConfig", "dns_failure_refresh_rate") => {
            "weir retries a failed resolution after dns_refresh_rate"
        }
        ("Cluster", "use_tcp_for_dns_lookups") => {
            "weir asks DNS over UDP, and over TCP when a reply is truncated or UDP fails"
        }
        ("Cluster", "upstream_http_protocol_options") => {
            "weir's upstream TLS takes its SNI from tls.sni or the endpoint's name, not the request's Host"
        }
        ("LbEndpoint", "load_balancing_weight")
        | ("LocalityLbEndpoints", "load_balancing_weight") => {
            "weir balances over endpoints without weights; split traffic by weight between clusters with weighted_clusters"
        }
        ("LbEndpoint", "health_check_config") => "weir has no active health checks",
        ("ClusterLoadAssignment", "policy") => "weir has no overprovisioning or drop policy",
        ("OutlierDetection", _) => {
            "weir's outlier detection has consecutive_5xx, consecutive_gateway_failure, interval, base_ejection_time and max_ejection_percent only"
        }
        (
            "CommonTlsContext",
            "tls_certificate_sds_secret_configs"
            | "validation_context_sds_secret_config"
            | "tls_certificate_provider_instance",
        ) => "weir has no SDS: name the PEM files with `filename`",
        (
            "CertificateValidationContext",
            "match_subject_alt_names" | "match_typed_subject_alt_names" | "verify_subject_alt_name",
        ) => {
            "weir verifies the upstream certificate against tls.sni (the endpoint's name by default), not a list of SANs"
        }
        ("CertificateValidationContext", "verify_certificate_spki" | "verify_certificate_hash") => {
            "weir does not pin certificates"
        }
        ("CertificateValidationContext", "crl") => "weir checks no revocation lists",
        ("TlsParameters", "cipher_suites" | "ecdh_curves" | "signature_algorithms") => {
            "weir uses rustls' cipher suites, curves and signature algorithms"
        }
        (
            "CaresDnsResolverConfig",
            "use_resolvers_as_fallback"
            | "filter_unroutable_families"
            | "udp_max_queries"
            | "rotate_nameservers"
            | "edns0_max_payload_size"
            | "max_udp_channel_duration"
            | "reinit_channel_on_timeout",
        ) => {
            "weir's resolver has resolvers, timeout, attempts, search_domains and ndots (top-level `dns`) only"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_reason_or_the_generic_one() {
        assert_eq!(
            why("Admin", "access_log_path"),
            "weir writes no admin access log"
        );
        assert_eq!(
            why("Cluster", "bogus"),
            "Cluster.bogus is not supported: weir has no such setting"
        );
    }
}
