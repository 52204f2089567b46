//! Build runtime state (route tables, clusters) from the typed config.
//! Everything that can be parsed or validated once happens here, so the
//! request path only reads prepared values.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::access_log::AccessLog;
use super::balance::Policy;
use super::cluster::forward_proxy::DnsCacheParams;
use super::cluster::outlier::OutlierPolicy;
use super::cluster::resolver::{Resolver, ResolverSettings};
use super::cluster::{Cluster, ClusterParams, Discovery, Family};
use super::http::{ConnSettings, ListenerContext, ListenerState};
use super::metrics::Metrics;
use super::retry::{self, RetryPolicy};
use super::route::action::{Action, Forward, Redirect};
use super::route::headers::HeaderOps;
use super::route::matcher::{self, HeaderMatcher, PathMatch, QueryMatcher, RouteMatch, ValueMatch};
use super::route::{Route, RouteTable, VirtualHost};
use super::split::Split;
use super::upstream::connect::Transport;
use super::upstream::connector::Connector;
use crate::config;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}: unknown cluster {name:?}")]
    UnknownCluster { path: String, name: String },
    #[error("{path}: invalid regex {pattern:?}: {source}")]
    Regex {
        path: String,
        pattern: String,
        source: regex::Error,
    },
    #[error("{path}: invalid header name {name:?}")]
    HeaderName { path: String, name: String },
    #[error("{path}: invalid header value {value:?}")]
    HeaderValue { path: String, value: String },
    #[error("{path}: invalid method {method:?}")]
    Method { path: String, method: String },
    #[error("{path}: invalid status {status}")]
    Status { path: String, status: u16 },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// A TLS file or setting (the message names the field and the file).
    #[error("{0}")]
    Tls(String),
    #[error("{path}: {source}")]
    AccessLog {
        path: String,
        source: crate::proxy::access_log::AccessLogError,
    },
}

/// A cluster plus the config it was built from (to keep it across reloads).
pub type ClusterMap = HashMap<String, (config::ClusterConfig, Arc<Cluster>)>;

/// Build all clusters, reusing those from `old` whose config is unchanged;
/// new ones open their connections through `connector`.
pub fn clusters(
    cfg: &config::ProxyConfig,
    old: &ClusterMap,
    metrics: &Metrics,
    connector: &Arc<dyn Connector>,
) -> Result<ClusterMap, BuildError> {
    let mut out = ClusterMap::new();
    for (i, c) in cfg.clusters.iter().enumerate() {
        if let Some((oc, existing)) = old.get(&c.name)
            && oc == c
        {
            out.insert(c.name.clone(), (c.clone(), existing.clone()));
            continue;
        }
        let params = cluster_params(c, &cfg.dns, &format!("clusters[{i}]"), metrics, connector)?;
        let cl = Cluster::new(params, metrics.cluster(&c.name));
        out.insert(c.name.clone(), (c.clone(), cl));
    }
    Ok(out)
}

/// What building `cfg` would refuse beyond the config's own validation:
/// certificate, key and CA files (or inline PEM) that do not load or parse. Nothing is
/// bound, resolved or started (`weir check-config`).
pub fn check(cfg: &config::ProxyConfig, metrics: &Metrics) -> Result<(), BuildError> {
    for (i, c) in cfg.clusters.iter().enumerate() {
        if let Some(t) = &c.tls {
            upstream_tls(c, t, &format!("clusters[{i}]"), metrics)?;
        }
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        if let Some(t) = &l.tls {
            let path = format!("listeners[{i}] ({}).tls", l.name);
            super::tls::server::TlsServer::check(t, l.codec, &path)
                .map_err(|e| BuildError::Tls(e.to_string()))?;
        }
    }
    Ok(())
}

/// The cluster's TLS client; SNI defaults to the first STRICT_DNS name.
fn upstream_tls(
    c: &config::ClusterConfig,
    t: &config::UpstreamTlsConfig,
    path: &str,
    metrics: &Metrics,
) -> Result<super::tls::client::TlsClient, BuildError> {
    let dns_name = c
        .endpoints
        .first()
        .filter(|_| c.discovery_type == config::DiscoveryType::StrictDns)
        .map(|e| e.address.as_str())
        .filter(|a| a.parse::<IpAddr>().is_err());
    let tp = format!("{path}.tls");
    super::tls::client::TlsClient::new(
        t,
        c.http2,
        dns_name,
        &tp,
        &c.name,
        metrics.tls_cluster(&c.name),
    )
    .map_err(|e| BuildError::Tls(e.to_string()))
}

fn family(f: config::DnsLookupFamily) -> Family {
    match f {
        config::DnsLookupFamily::Auto => Family::Auto,
        config::DnsLookupFamily::V4Only => Family::V4Only,
        config::DnsLookupFamily::V6Only => Family::V6Only,
    }
}

/// The resolver of a STRICT_DNS or DYNAMIC_FORWARD_PROXY cluster: the
/// top-level `dns` settings, with the cluster's own servers when it names any.
fn resolver(
    dns: &config::DnsConfig,
    c: &config::ClusterConfig,
    path: &str,
) -> Result<Arc<Resolver>, BuildError> {
    let servers = if c.dns_resolvers.is_empty() {
        &dns.resolvers
    } else {
        &c.dns_resolvers
    };
    let settings = ResolverSettings {
        servers: servers.iter().map(|a| a.0).collect(),
        timeout: *dns.timeout,
        attempts: usize::from(dns.attempts),
        search: dns.search_domains.clone(),
        ndots: dns.ndots.map(usize::from),
        family: family(c.dns_lookup_family),
    };
    Resolver::new(&settings)
        .map(Arc::new)
        .map_err(|e| BuildError::Invalid {
            path: format!("{path} (DNS)"),
            reason: e.to_string(),
        })
}

fn cluster_params(
    c: &config::ClusterConfig,
    dns: &config::DnsConfig,
    path: &str,
    metrics: &Metrics,
    connector: &Arc<dyn Connector>,
) -> Result<ClusterParams, BuildError> {
    use config::DiscoveryType;
    let discovery = match c.discovery_type {
        DiscoveryType::Static => {
            let mut addrs = Vec::new();
            for (j, e) in c.endpoints.iter().enumerate() {
                let ip: IpAddr = e.address.parse().map_err(|_| BuildError::Invalid {
                    path: format!("{path}.endpoints[{j}].address"),
                    reason: format!("STATIC endpoint {:?} is not an IP address", e.address),
                })?;
                addrs.push(SocketAddr::new(ip, e.port));
            }
            Discovery::Static(addrs)
        }
        DiscoveryType::StrictDns => Discovery::StrictDns {
            targets: c
                .endpoints
                .iter()
                .map(|e| (e.address.clone(), e.port))
                .collect(),
            refresh: *c.refresh_rate(),
            respect_ttl: c.respect_dns_ttl,
            resolver: resolver(dns, c, path)?,
        },
        DiscoveryType::DynamicForwardProxy => Discovery::DynamicForwardProxy(
            DnsCacheParams {
                refresh: *c.refresh_rate(),
                respect_ttl: c.respect_dns_ttl,
                max_hosts: c.dns_cache.max_hosts as usize,
                host_ttl: *c.dns_cache.host_ttl,
            },
            resolver(dns, c, path)?,
        ),
    };
    Ok(ClusterParams {
        name: c.name.clone(),
        discovery,
        connect_timeout: *c.connect_timeout,
        policy: policy(c.lb_policy),
        limits: limits(&c.circuit_breakers),
        outlier: c.outlier_detection.as_ref().map(|o| OutlierPolicy {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway_failure: o.consecutive_gateway_failure,
            base_ejection_time: *o.base_ejection_time,
            max_ejection_percent: o.max_ejection_percent,
        }),
        idle_timeout: *c.upstream_http.idle_timeout,
        max_requests_per_connection: c.upstream_http.max_requests_per_connection,
        transport: Transport {
            tls: match &c.tls {
                Some(t) => Some(Arc::new(upstream_tls(c, t, path, metrics)?)),
                None => None,
            },
            http2: c.http2,
            connector: Arc::clone(connector),
        },
    })
}

fn policy(p: config::LbPolicy) -> Policy {
    match p {
        config::LbPolicy::RoundRobin => Policy::RoundRobin,
        config::LbPolicy::LeastRequest => Policy::LeastRequest,
        config::LbPolicy::Random => Policy::Random,
    }
}

fn limits(cb: &config::CircuitBreakersConfig) -> [u32; 4] {
    [
        cb.max_connections,
        cb.max_pending_requests,
        cb.max_requests,
        cb.max_retries,
    ]
}

/// A cluster of fixed `endpoints` with every other setting at its config
/// default (round robin, default circuit breakers and keep-alive, no
/// outlier detection, cleartext HTTP/1.1).
pub fn static_cluster(
    name: &str,
    endpoints: Vec<SocketAddr>,
    connect_timeout: std::time::Duration,
    metrics: &Metrics,
    connector: &Arc<dyn Connector>,
) -> Arc<Cluster> {
    let http = config::UpstreamHttpConfig::default();
    let params = ClusterParams {
        name: name.to_owned(),
        discovery: Discovery::Static(endpoints),
        connect_timeout,
        policy: policy(config::LbPolicy::default()),
        limits: limits(&config::CircuitBreakersConfig::default()),
        outlier: None,
        idle_timeout: *http.idle_timeout,
        max_requests_per_connection: http.max_requests_per_connection,
        transport: Transport {
            tls: None,
            http2: false,
            connector: Arc::clone(connector),
        },
    };
    Cluster::new(params, metrics.cluster(name))
}

/// A listener (not bound) whose one virtual host, `vhost`, takes every
/// authority and whose one route (`prefix: /`) does `action`; connection
/// settings are those of a `bind_to_port: false` listener that sets none.
pub fn catch_all_listener(
    name: &str,
    vhost: &str,
    action: Action,
    metrics: &Metrics,
) -> ListenerContext {
    let route = Route {
        name: None,
        matcher: RouteMatch {
            path: PathMatch::Prefix("/".to_owned()),
            case_sensitive: true,
            headers: Vec::new(),
            methods: None,
            query: Vec::new(),
        },
        action,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    };
    let vh = VirtualHost {
        name: vhost.to_owned(),
        routes: vec![route],
        request_headers: HeaderOps::default(),
    };
    let state = ListenerState {
        routes: RouteTable::new(vec![(vh, vec!["*".to_owned()])]),
        settings: conn_settings(
            &config::ListenerTimeoutsConfig::default(),
            &config::ListenerLimitsConfig::default(),
            config::Codec::default(),
            config::DEFAULT_SERVER_NAME,
            &config::default_upgrade_types(false),
        ),
        tls: None,
    };
    ListenerContext::new(name, state, metrics)
}

fn conn_settings(
    timeouts: &config::ListenerTimeoutsConfig,
    limits: &config::ListenerLimitsConfig,
    codec: config::Codec,
    server_name: &str,
    upgrade_types: &[String],
) -> ConnSettings {
    let kb = limits.max_request_headers_kb.max(1) as usize;
    ConnSettings {
        idle_timeout: timeouts.idle.non_zero(),
        header_read_timeout: timeouts.request_headers.non_zero(),
        request_timeout: timeouts.request.non_zero(),
        max_header_bytes: kb * 1024,
        max_headers: limits.max_headers_count.max(1) as usize,
        codec,
        server: http::HeaderValue::from_str(server_name)
            .unwrap_or_else(|_| http::HeaderValue::from_static(config::DEFAULT_SERVER_NAME)),
        upgrade_types: upgrade_types
            .iter()
            .map(|t| t.to_ascii_lowercase())
            .collect(),
        max_connections_per_client: limits.max_connections_per_client,
        access_log: None,
    }
}

/// Route table and connection settings of one listener.
pub fn listener_state(
    l: &config::ListenerConfig,
    path: &str,
    clusters: &ClusterMap,
    metrics: &Metrics,
) -> Result<ListenerState, BuildError> {
    let mut vhosts = Vec::new();
    for (i, vh) in l.virtual_hosts.iter().enumerate() {
        let vp = format!("{path}.virtual_hosts[{i}]");
        let mut routes = Vec::new();
        for (j, r) in vh.routes.iter().enumerate() {
            routes.push(route(r, &format!("{vp}.routes[{j}]"), clusters)?);
        }
        let v = VirtualHost {
            name: vh.name.clone(),
            routes,
            request_headers: header_ops(
                &vh.request_headers_to_add,
                &[],
                &format!("{vp}.request_headers_to_add"),
            )?,
        };
        vhosts.push((v, vh.domains.clone()));
    }
    let mut settings = conn_settings(
        &l.timeouts,
        &l.limits,
        l.codec,
        &l.server_name,
        &l.effective_upgrade_types(),
    );
    if !l.access_log.is_empty() {
        // Opened anew by each reload, so a reload after logrotate moved
        // the file writes to the new one.
        let log = AccessLog::open(&l.access_log, &metrics.access_log_dropped(&l.name)).map_err(
            |source| BuildError::AccessLog {
                path: format!("{path}.access_log"),
                source,
            },
        )?;
        settings.access_log = Some(Arc::new(log));
    }
    Ok(ListenerState {
        routes: RouteTable::new(vhosts),
        settings,
        tls: match &l.tls {
            Some(t) => Some(
                super::tls::server::TlsServer::new(
                    t,
                    l.codec,
                    &format!("{path}.tls"),
                    &l.name,
                    metrics.tls_listener(&l.name),
                )
                .map_err(|e| BuildError::Tls(e.to_string()))?,
            ),
            None => None,
        },
    })
}

fn regex(pattern: &str, path: &str) -> Result<regex::Regex, BuildError> {
    matcher::full_match(pattern).map_err(|source| BuildError::Regex {
        path: path.to_string(),
        pattern: pattern.to_string(),
        source,
    })
}

fn value_match(v: &config::ValueMatch, path: &str) -> Result<ValueMatch, BuildError> {
    Ok(match v {
        config::ValueMatch::Exact(s) => ValueMatch::Exact(s.clone()),
        config::ValueMatch::SafeRegex(p) => ValueMatch::Regex(regex(p, path)?),
        config::ValueMatch::Present(b) => ValueMatch::Present(*b),
    })
}

fn header_name(n: &str, path: &str) -> Result<HeaderName, BuildError> {
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|_| BuildError::HeaderName {
        path: path.to_string(),
        name: n.to_string(),
    })
}

fn header_ops(
    add: &[config::HeaderValueOptionConfig],
    remove: &[String],
    path: &str,
) -> Result<HeaderOps, BuildError> {
    let mut ops = HeaderOps::default();
    for h in add {
        let v = HeaderValue::from_str(&h.value).map_err(|_| BuildError::HeaderValue {
            path: path.to_string(),
            value: h.value.clone(),
        })?;
        ops.add.push((header_name(&h.name, path)?, v, h.append));
    }
    for r in remove {
        ops.remove.push(header_name(r, path)?);
    }
    Ok(ops)
}

fn route(r: &config::RouteConfig, path: &str, clusters: &ClusterMap) -> Result<Route, BuildError> {
    let m = &r.matcher;
    let mp = format!("{path}.match");
    let path_match = match &m.path_match {
        config::PathMatch::Prefix(p) => PathMatch::Prefix(p.clone()),
        config::PathMatch::Path(p) => PathMatch::Exact(p.clone()),
        config::PathMatch::SafeRegex(p) => {
            let pat = if m.case_sensitive {
                p.clone()
            } else {
                format!("(?i){p}")
            };
            PathMatch::Regex(regex(&pat, &format!("{mp}.safe_regex"))?)
        }
    };
    let headers = header_matchers(&m.headers, &format!("{mp}.headers"))?;
    let methods = if m.methods.is_empty() {
        None
    } else {
        let mut v = Vec::new();
        for s in &m.methods {
            v.push(
                Method::from_bytes(s.as_bytes()).map_err(|_| BuildError::Method {
                    path: format!("{mp}.methods"),
                    method: s.clone(),
                })?,
            );
        }
        Some(v)
    };
    let mut query = Vec::new();
    for (k, q) in m.query_parameters.iter().enumerate() {
        query.push(QueryMatcher {
            name: q.name.clone(),
            value: value_match(&q.value_match, &format!("{mp}.query_parameters[{k}]"))?,
        });
    }
    let action = match &r.action {
        config::RouteAction::Route(f) => {
            Action::Forward(Box::new(forward(f, &format!("{path}.route"), clusters)?))
        }
        config::RouteAction::DirectResponse(d) => Action::Direct {
            status: status(d.status, &format!("{path}.direct_response.status"))?,
            body: Bytes::from(d.body.clone().unwrap_or_default()),
        },
        config::RouteAction::Redirect(rd) => Action::Redirect(Redirect {
            scheme: rd.scheme_redirect.clone(),
            host: rd.host_redirect.clone(),
            port: rd.port_redirect,
            path: rd.path_redirect.clone(),
            prefix_rewrite: rd.prefix_rewrite.clone(),
            status: status(rd.response_code, &format!("{path}.redirect.response_code"))?,
        }),
    };
    Ok(Route {
        name: r.name.clone(),
        matcher: RouteMatch {
            path: path_match,
            case_sensitive: m.case_sensitive,
            headers,
            methods,
            query,
        },
        action,
        request_headers: header_ops(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &format!("{path}.request_headers"),
        )?,
        response_headers: header_ops(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            &format!("{path}.response_headers"),
        )?,
    })
}

fn status(code: u16, path: &str) -> Result<StatusCode, BuildError> {
    StatusCode::from_u16(code).map_err(|_| BuildError::Status {
        path: path.to_string(),
        status: code,
    })
}

fn forward(
    f: &config::ForwardActionConfig,
    path: &str,
    clusters: &ClusterMap,
) -> Result<Forward, BuildError> {
    let lookup = |name: &str, p: String| {
        clusters
            .get(name)
            .map(|(_, c)| c.clone())
            .ok_or(BuildError::UnknownCluster {
                path: p,
                name: name.to_string(),
            })
    };
    let split = match &f.target {
        config::ClusterTarget::Single(n) => Split::Single(lookup(n, format!("{path}.cluster"))?),
        config::ClusterTarget::Weighted(ws) => {
            let mut items = Vec::new();
            for (k, w) in ws.iter().enumerate() {
                items.push((
                    w.weight,
                    lookup(&w.name, format!("{path}.weighted_clusters[{k}].name"))?,
                ));
            }
            Split::weighted(items).map_err(|e| BuildError::Invalid {
                path: format!("{path}.weighted_clusters"),
                reason: e.to_string(),
            })?
        }
    };
    let host_rewrite = match &f.host_rewrite_literal {
        Some(h) => Some(
            HeaderValue::from_str(h).map_err(|_| BuildError::HeaderValue {
                path: format!("{path}.host_rewrite_literal"),
                value: h.clone(),
            })?,
        ),
        None => None,
    };
    let retry = f
        .retry_policy
        .as_ref()
        .map(|rp| retry_policy(rp, &format!("{path}.retry_policy")))
        .transpose()?;
    let timeout = f.timeout.non_zero();
    let expected_timeout =
        Forward::expected_timeout_ms(timeout, retry.as_ref()).map(HeaderValue::from);
    Ok(Forward {
        split,
        timeout,
        prefix_rewrite: f.prefix_rewrite.clone(),
        host_rewrite,
        retry,
        expected_timeout,
    })
}

/// `list`'s matchers; `path` names the list in errors.
fn header_matchers(
    list: &[config::HeaderMatcherConfig],
    path: &str,
) -> Result<Vec<HeaderMatcher>, BuildError> {
    list.iter()
        .enumerate()
        .map(|(k, h)| {
            let hp = format!("{path}[{k}]");
            Ok(HeaderMatcher {
                name: header_name(&h.name, &hp)?,
                value: value_match(&h.value_match, &hp)?,
                invert: h.invert_match,
            })
        })
        .collect()
}

fn retry_policy(rp: &config::RetryPolicyConfig, path: &str) -> Result<RetryPolicy, BuildError> {
    let headers = header_matchers(&rp.retriable_headers, &format!("{path}.retriable_headers"))?;
    Ok(RetryPolicy {
        on: rp.retry_on.iter().fold(0u16, |acc, r| {
            acc | match r {
                config::RetryOn::FiveXx => retry::ON_5XX,
                config::RetryOn::GatewayError => retry::ON_GATEWAY_ERROR,
                config::RetryOn::ConnectFailure => retry::ON_CONNECT_FAILURE,
                config::RetryOn::Reset => retry::ON_RESET,
                config::RetryOn::Retriable4xx => retry::ON_RETRIABLE_4XX,
                config::RetryOn::RetriableStatusCodes => retry::ON_RETRIABLE_STATUS_CODES,
                config::RetryOn::RetriableHeaders => retry::ON_RETRIABLE_HEADERS,
                config::RetryOn::RefusedStream => retry::ON_REFUSED_STREAM,
                config::RetryOn::Cancelled => retry::ON_CANCELLED,
                config::RetryOn::DeadlineExceeded => retry::ON_DEADLINE_EXCEEDED,
                config::RetryOn::ResourceExhausted => retry::ON_RESOURCE_EXHAUSTED,
                config::RetryOn::Internal => retry::ON_INTERNAL,
                config::RetryOn::Unavailable => retry::ON_UNAVAILABLE,
            }
        }),
        status_codes: rp.retriable_status_codes.clone(),
        headers,
        avoid_previous_hosts: rp
            .retry_host_predicate
            .contains(&config::RetryHostPredicate::PreviousHosts)
            .then_some(rp.host_selection_retry_max_attempts),
        num_retries: rp.num_retries,
        per_try_timeout: rp.per_try_timeout.and_then(|d| d.non_zero()),
        base_interval: *rp.retry_back_off.base_interval,
        max_interval: rp.retry_back_off.effective_max_interval(),
    })
}
