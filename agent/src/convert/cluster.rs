//! A cluster: discovery type, endpoints, DNS, load balancing, limits,
//! outlier detection, upstream TLS and HTTP/2.

use super::common::socket_address;
use super::dns::{DnsCache, dns_cache, lookup_family, resolver_fields};
use super::tls::{self, Side};
use super::walk::{Cx, Field, Obj, optional, type_name};
use crate::config::{
    CircuitBreakersConfig, ClusterConfig, ConfigDuration, DiscoveryType, DnsCacheConfig,
    DnsLookupFamily, EndpointConfig, LbPolicy, OutlierDetectionConfig, UpstreamHttpConfig,
};

/// Envoy's defaults where a cluster sets none (weir's are the same).
const ENVOY_CONNECT_TIMEOUT: ConfigDuration = ConfigDuration::from_secs(5);

const DFP_CLUSTER_NAMES: [&str; 1] = ["envoy.clusters.dynamic_forward_proxy"];
const DFP_CLUSTER_TYPES: [&str; 2] = [
    "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
    "envoy.config.cluster.dynamic_forward_proxy.v2alpha.ClusterConfig",
];
const DNS_CLUSTER_NAMES: [&str; 1] = ["envoy.cluster.dns"];
const DNS_CLUSTER_TYPES: [&str; 1] = ["envoy.extensions.clusters.dns.v3.DnsCluster"];
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A converted cluster, and the DNS cache it names when it is a dynamic
/// forward proxy (to match with the listeners' filters).
pub(super) struct Cluster {
    pub config: ClusterConfig,
    pub dns_cache: Option<(crate::config::DocPath, DnsCache)>,
}

pub(super) fn cluster(cx: &mut Cx, f: &Field<'_>) -> Option<Cluster> {
    let mut o = cx.obj(f, "Cluster")?;
    let name = o.require(cx, "name").and_then(|n| cx.string(&n));
    let kind = discovery(cx, &mut o);
    let forward_proxy = matches!(kind, Some(Kind::ForwardProxy(_)));
    let connect_timeout = o.get("connect_timeout").map(|t| cx.duration(&t));
    let lb_policy = match o.get("lb_policy") {
        // A forward proxy cluster picks its endpoint from the request's
        // Host whatever the policy (Envoy wants CLUSTER_PROVIDED there).
        Some(_) if forward_proxy => Some(LbPolicy::default()),
        Some(p) => cx.choice(
            &p,
            &[
                ("ROUND_ROBIN", LbPolicy::RoundRobin),
                ("LEAST_REQUEST", LbPolicy::LeastRequest),
                ("RANDOM", LbPolicy::Random),
            ],
            "weir has ROUND_ROBIN, LEAST_REQUEST and RANDOM",
        ),
        None => Some(LbPolicy::default()),
    };
    let mut dns_fields = DnsFields::read(cx, &mut o);
    let strict_dns = matches!(kind, Some(Kind::StrictDns | Kind::DnsCluster(_)));
    let endpoints = endpoints(cx, &mut o, forward_proxy);
    for e in endpoints.iter().flatten() {
        if strict_dns && short_name(&e.address) {
            cx.note(
                &o.path,
                format!(
                    "endpoint {:?} is a short name: weir resolves it with its own resolv.conf search domains, so from the DaemonSet it names a service in weir-system; write {}.<namespace> (docs/envoy.md)",
                    e.address, e.address
                ),
            );
        }
    }
    let circuit_breakers = match o.get("circuit_breakers") {
        Some(c) => circuit_breakers(cx, &c),
        None => Some(CircuitBreakersConfig::default()),
    };
    let outlier_detection = o.get("outlier_detection").map(|d| outlier(cx, &d));
    let socket = o.get("transport_socket");
    // v2 put the context on the cluster itself.
    let v2_context = o.get("tls_context");
    // Some(None): cleartext; None: refused.
    let tls = match (socket, v2_context) {
        (Some(t), _) | (None, Some(t)) if forward_proxy => {
            cx.refuse(
                &t.path,
                "weir does not originate TLS on a DYNAMIC_FORWARD_PROXY cluster yet",
            );
            None
        }
        (Some(t), None) => match tls::transport_socket(cx, &t, Side::Upstream) {
            Some(Some(context)) => tls::upstream(cx, &context).map(Some),
            Some(None) => Some(None),
            None => None,
        },
        (None, Some(context)) => tls::upstream(cx, &context).map(Some),
        (Some(_), Some(context)) => {
            cx.refuse(
                &context.path,
                "only one of transport_socket and tls_context may be set",
            );
            None
        }
        (None, None) => Some(None),
    };
    let protocol = protocol_options(cx, &mut o);
    // Settings of Envoy's start-up and stats only.
    o.skip(&["wait_for_warm_on_init", "track_timeout_budgets"]);
    o.finish(cx);

    let (discovery_type, dns_cache) = match kind? {
        Kind::Static => (DiscoveryType::Static, None),
        Kind::StrictDns => (DiscoveryType::StrictDns, None),
        Kind::DnsCluster(inner) => {
            dns_fields.replaced_by(cx, inner);
            (DiscoveryType::StrictDns, None)
        }
        Kind::ForwardProxy(cache) => {
            dns_fields.forward_proxy(cx);
            (DiscoveryType::DynamicForwardProxy, Some(cache))
        }
    };
    let mut config = ClusterConfig {
        name: name?,
        discovery_type,
        connect_timeout: optional(connect_timeout)?.unwrap_or(ENVOY_CONNECT_TIMEOUT),
        lb_policy: lb_policy?,
        dns_refresh_rate: dns_fields.refresh_rate?,
        dns_lookup_family: dns_fields.family?,
        dns_resolvers: dns_fields.resolvers,
        respect_dns_ttl: dns_fields.respect_ttl?,
        endpoints: endpoints?,
        dns_cache: DnsCacheConfig::default(),
        circuit_breakers: circuit_breakers?,
        outlier_detection: optional(outlier_detection)?,
        upstream_http: protocol.upstream_http?,
        tls: tls?,
        http2: protocol.http2?,
    };
    if let Some((_, cache)) = &dns_cache {
        config.dns_cache = DnsCacheConfig {
            name: Some(cache.name.clone()),
            max_hosts: cache.max_hosts.unwrap_or(config.dns_cache.max_hosts),
            host_ttl: cache.host_ttl.unwrap_or(config.dns_cache.host_ttl),
        };
        config.dns_lookup_family = cache.family;
        if let Some(rate) = cache.refresh_rate {
            config.dns_refresh_rate = Some(rate);
        }
        config.dns_resolvers = cache.servers.clone();
    }
    Some(Cluster { config, dns_cache })
}

/// A single-label DNS name other than localhost, which the search domains
/// of whoever resolves it complete.
fn short_name(address: &str) -> bool {
    !address.contains('.')
        && !address.contains(':')
        && !address.eq_ignore_ascii_case("localhost")
        && address.parse::<std::net::IpAddr>().is_err()
}

enum Kind {
    Static,
    StrictDns,
    /// Envoy's newer spelling of STRICT_DNS, its DNS settings in the
    /// cluster type's `DnsCluster` (the cluster's own are deprecated).
    DnsCluster(DnsFields),
    ForwardProxy((crate::config::DocPath, DnsCache)),
}

fn discovery(cx: &mut Cx, o: &mut Obj<'_>) -> Option<Kind> {
    let kind = o.get("type");
    let custom = o.get("cluster_type");
    match (kind, custom) {
        (Some(k), None) => {
            let text = cx.str(&k)?;
            match text {
                "STATIC" => Some(Kind::Static),
                "STRICT_DNS" => Some(Kind::StrictDns),
                "LOGICAL_DNS" => {
                    cx.refuse(
                        &k.path,
                        "weir has no LOGICAL_DNS: STRICT_DNS uses every resolved address, where LOGICAL_DNS used the first; write type: STRICT_DNS if that suits the upstream",
                    );
                    None
                }
                "EDS" => {
                    cx.refuse(
                        &k.path,
                        "weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS",
                    );
                    None
                }
                "ORIGINAL_DST" => {
                    cx.refuse(
                        &k.path,
                        "weir passes intercepted connections to their original destination itself (outbound_traffic_policy: ALLOW_ANY)",
                    );
                    None
                }
                other => {
                    cx.refuse(
                        &k.path,
                        format!("{other:?} is not supported: weir has STATIC, STRICT_DNS and the dynamic forward proxy cluster"),
                    );
                    None
                }
            }
        }
        (None, Some(c)) => custom_cluster(cx, &c),
        (Some(_), Some(c)) => {
            cx.refuse(&c.path, "only one of type and cluster_type may be set");
            None
        }
        // Envoy's default type.
        (None, None) => Some(Kind::Static),
    }
}

fn custom_cluster(cx: &mut Cx, f: &Field<'_>) -> Option<Kind> {
    let mut o = cx.obj(f, "CustomClusterType")?;
    let name = o.require(cx, "name").and_then(|n| cx.string(&n));
    let config = o.get("typed_config");
    o.finish(cx);
    let name = name?;
    let type_name = type_name(config.as_ref());
    let is = |names: &[&str], types: &[&str]| match type_name {
        Some(t) => types.contains(&t),
        None => names.contains(&name.as_str()),
    };
    if is(&DNS_CLUSTER_NAMES, &DNS_CLUSTER_TYPES) {
        return dns_cluster(cx, config.as_ref());
    }
    if !is(&DFP_CLUSTER_NAMES, &DFP_CLUSTER_TYPES) {
        cx.refuse(
            &f.path,
            format!("cluster type {:?} is not supported: weir has STATIC, STRICT_DNS (also as envoy.cluster.dns) and envoy.clusters.dynamic_forward_proxy", type_name.unwrap_or(&name)),
        );
        return None;
    }
    let Some(config) = config else {
        cx.refuse(
            &f.path,
            "typed_config with the dns_cache_config is required",
        );
        return None;
    };
    let mut c = cx.obj(&config, "dynamic_forward_proxy.ClusterConfig")?;
    c.skip(&["@type"]);
    let cache = c.require(cx, "dns_cache_config");
    for flag in [
        "allow_insecure_cluster_options",
        "allow_coalesced_connections",
    ] {
        if let Some(x) = c.get(flag)
            && cx.bool(&x) == Some(true)
        {
            cx.refuse(&x.path, format!("weir has no {flag}"));
        }
    }
    c.finish(cx);
    let cache = cache?;
    let parsed = dns_cache(cx, &cache)?;
    Some(Kind::ForwardProxy((cache.path, parsed)))
}

fn dns_cluster(cx: &mut Cx, config: Option<&Field<'_>>) -> Option<Kind> {
    let Some(config) = config else {
        // No settings: Envoy's defaults, as a STRICT_DNS cluster's.
        return Some(Kind::StrictDns);
    };
    let mut c = cx.obj(config, "DnsCluster")?;
    c.skip(&["@type"]);
    if let Some(single) = c.get("all_addresses_in_single_endpoint")
        && cx.bool(&single) == Some(true)
    {
        cx.refuse(
            &single.path,
            "weir has no LOGICAL_DNS: STRICT_DNS uses every resolved address, where this used the first; leave it out if that suits the upstream",
        );
    }
    let fields = DnsFields::read(cx, &mut c);
    c.finish(cx);
    Some(Kind::DnsCluster(fields))
}

/// A cluster's own DNS settings, with where they were written.
struct DnsFields {
    /// `Some(None)`: not written, weir's default applies (Envoy's too:
    /// 5 s for a cluster, 60 s for a forward proxy's DNS cache).
    refresh_rate: Option<Option<ConfigDuration>>,
    family: Option<DnsLookupFamily>,
    respect_ttl: Option<bool>,
    resolvers: Vec<crate::config::ResolverAddress>,
    written: Vec<crate::config::DocPath>,
}

impl DnsFields {
    fn read(cx: &mut Cx, o: &mut Obj<'_>) -> Self {
        let mut written = Vec::new();
        let refresh_rate = match o.get("dns_refresh_rate") {
            Some(r) => {
                written.push(r.path.clone());
                cx.duration(&r).map(Some)
            }
            None => Some(None),
        };
        let family = match o.get("dns_lookup_family") {
            Some(f) => {
                written.push(f.path.clone());
                lookup_family(cx, &f)
            }
            None => Some(DnsLookupFamily::Auto),
        };
        let respect_ttl = match o.get("respect_dns_ttl") {
            Some(r) => {
                written.push(r.path.clone());
                cx.bool(&r)
            }
            None => Some(false),
        };
        let any_resolver = [
            "typed_dns_resolver_config",
            "dns_resolution_config",
            "dns_resolvers",
        ]
        .iter()
        .find(|k| o.has(k))
        .map(|k| o.path.key(k));
        written.extend(any_resolver);
        let resolvers = resolver_fields(cx, o);
        resolvers.refuse_proxy_wide(cx);
        Self {
            refresh_rate,
            family,
            respect_ttl,
            resolvers: resolvers.servers,
            written,
        }
    }

    /// A DnsCluster's settings replace the cluster's own, which may then
    /// not be set too: which of the two Envoy reads is not weir's to guess.
    fn replaced_by(&mut self, cx: &mut Cx, inner: DnsFields) {
        for path in &self.written {
            cx.refuse(
                path,
                "set in the cluster_type's DnsCluster too: set it in one place, the DnsCluster",
            );
        }
        *self = inner;
    }

    /// Envoy ignores a forward proxy cluster's own DNS settings: its cache's apply.
    fn forward_proxy(&mut self, cx: &mut Cx) {
        for path in &self.written {
            cx.note(
                path,
                "Envoy ignores this on a dynamic forward proxy cluster (its dns_cache_config applies): left out",
            );
        }
        self.refresh_rate = Some(None);
        self.family = Some(DnsLookupFamily::Auto);
        self.respect_ttl = Some(false);
    }
}

fn endpoints(cx: &mut Cx, o: &mut Obj<'_>, forward_proxy: bool) -> Option<Vec<EndpointConfig>> {
    let assignment = o.get("load_assignment");
    let hosts = o.get("hosts");
    if forward_proxy {
        for f in assignment.iter().chain(hosts.iter()) {
            cx.refuse(
                &f.path,
                "a dynamic forward proxy cluster has no endpoints: each request goes to its Host",
            );
        }
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut ok = true;
    if let Some(a) = assignment {
        ok &= load_assignment(cx, &a, &mut out);
    }
    // v2 clusters listed their addresses directly.
    if let Some(h) = hosts {
        for host in cx.seq(&h) {
            match socket_address(cx, &host) {
                Some((address, port)) => out.push(EndpointConfig { address, port }),
                None => ok = false,
            }
        }
    }
    ok.then_some(out)
}

fn load_assignment(cx: &mut Cx, f: &Field<'_>, out: &mut Vec<EndpointConfig>) -> bool {
    let Some(mut o) = cx.obj(f, "ClusterLoadAssignment") else {
        return false;
    };
    // A cluster has one name in weir; Envoy's second one has no use.
    o.skip(&["cluster_name"]);
    let mut ok = true;
    if let Some(localities) = o.get("endpoints") {
        for locality in cx.seq(&localities) {
            let Some(mut l) = cx.obj(&locality, "LocalityLbEndpoints") else {
                ok = false;
                continue;
            };
            // Localities matter only to zone-aware balancing, which weir does not do.
            l.skip(&["locality"]);
            if let Some(p) = l.get("priority")
                && cx.u32(&p).is_some_and(|p| p != 0)
            {
                cx.refuse(&p.path, "weir has no priorities: every endpoint is used");
                ok = false;
            }
            if let Some(eps) = l.get("lb_endpoints") {
                for ep in cx.seq(&eps) {
                    match lb_endpoint(cx, &ep) {
                        Some(e) => out.push(e),
                        None => ok = false,
                    }
                }
            }
            l.finish(cx);
        }
    }
    o.finish(cx);
    ok
}

fn lb_endpoint(cx: &mut Cx, f: &Field<'_>) -> Option<EndpointConfig> {
    let mut o = cx.obj(f, "LbEndpoint")?;
    let healthy = match o.get("health_status") {
        Some(h) => cx
            .choice(
                &h,
                &[("UNKNOWN", ()), ("HEALTHY", ())],
                "weir sends to every endpoint it has: leave unhealthy ones out",
            )
            .is_some(),
        None => true,
    };
    let endpoint = o.require(cx, "endpoint");
    o.finish(cx);
    let mut e = cx.obj(&endpoint?, "Endpoint")?;
    // Envoy's hostname serves its health checks and auto_host_rewrite only.
    e.skip(&["hostname"]);
    let address = e
        .require(cx, "address")
        .and_then(|a| socket_address(cx, &a));
    e.finish(cx);
    let (address, port) = address?;
    healthy.then_some(EndpointConfig { address, port })
}

fn circuit_breakers(cx: &mut Cx, f: &Field<'_>) -> Option<CircuitBreakersConfig> {
    let mut o = cx.obj(f, "CircuitBreakers")?;
    let thresholds = o.get("thresholds");
    o.finish(cx);
    let mut out = CircuitBreakersConfig::default();
    let mut default_seen = false;
    let mut ok = true;
    for t in thresholds.map(|t| cx.seq(&t)).unwrap_or_default() {
        let Some(mut o) = cx.obj(&t, "Thresholds") else {
            ok = false;
            continue;
        };
        let priority = match o.get("priority") {
            Some(p) => cx.choice(&p, &[("DEFAULT", true), ("HIGH", false)], "DEFAULT or HIGH"),
            None => Some(true),
        };
        let mut read = |o: &mut Obj<'_>, cx: &mut Cx, name: &str, into: &mut u32| {
            if let Some(v) = o.get(name) {
                match cx.u32(&v) {
                    Some(v) => *into = v,
                    None => ok = false,
                }
            }
        };
        let mut set = CircuitBreakersConfig::default();
        read(&mut o, cx, "max_connections", &mut set.max_connections);
        read(
            &mut o,
            cx,
            "max_pending_requests",
            &mut set.max_pending_requests,
        );
        read(&mut o, cx, "max_requests", &mut set.max_requests);
        read(&mut o, cx, "max_retries", &mut set.max_retries);
        // Only adds gauges to Envoy's stats.
        o.skip(&["track_remaining"]);
        o.finish(cx);
        match priority {
            // HIGH-priority routes are refused, so their thresholds never apply.
            Some(false) => {}
            Some(true) if default_seen => {
                cx.refuse(
                    &t.path,
                    "a second DEFAULT threshold: weir has one set of limits",
                );
                ok = false;
            }
            Some(true) => {
                default_seen = true;
                out = set;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Envoy's consecutive-failure ejection as weir's. Envoy counts a failed
/// connect as a 5xx, weir only as a gateway failure, so weir ejects on a
/// run of gateway failures as soon as Envoy would by either count.
fn outlier(cx: &mut Cx, f: &Field<'_>) -> Option<OutlierDetectionConfig> {
    let mut o = cx.obj(f, "OutlierDetection")?;
    let mut out = OutlierDetectionConfig::default();
    let mut ok = true;
    let mut u32_field = |o: &mut Obj<'_>, cx: &mut Cx, name: &str| -> Option<u32> {
        let v = o.get(name)?;
        let n = cx.u32(&v);
        ok &= n.is_some();
        n
    };
    if let Some(n) = u32_field(&mut o, cx, "consecutive_5xx") {
        out.consecutive_5xx = n;
    }
    if let Some(n) = u32_field(&mut o, cx, "consecutive_gateway_failure") {
        out.consecutive_gateway_failure = n;
    }
    if let Some(n) = u32_field(&mut o, cx, "max_ejection_percent") {
        out.max_ejection_percent = n;
    }
    for (name, into) in [
        ("interval", &mut out.interval),
        ("base_ejection_time", &mut out.base_ejection_time),
    ] {
        if let Some(v) = o.get(name) {
            match cx.duration(&v) {
                Some(d) => *into = d,
                None => ok = false,
            }
        }
    }
    let enforcing = |o: &mut Obj<'_>, cx: &mut Cx, name: &str, default: u32| -> Option<bool> {
        let Some(v) = o.get(name) else {
            return Some(default == 100);
        };
        match cx.u32(&v)? {
            100 => Some(true),
            0 if name == "enforcing_consecutive_gateway_failure" => Some(false),
            n => {
                cx.refuse(&v.path, format!("weir ejects always or (gateway failures) as Envoy's 5xx count does: {n}% enforcement has no equivalent"));
                None
            }
        }
    };
    let enforce_5xx = enforcing(&mut o, cx, "enforcing_consecutive_5xx", 100);
    let enforce_gateway = enforcing(&mut o, cx, "enforcing_consecutive_gateway_failure", 0);
    let path = o.path.clone();
    o.finish(cx);
    let (enforce_5xx, enforce_gateway) = (enforce_5xx?, enforce_gateway?);
    if !enforce_5xx {
        cx.refuse(&path, "weir always ejects on consecutive_5xx");
        return None;
    }
    out.consecutive_gateway_failure = if enforce_gateway {
        out.consecutive_gateway_failure.min(out.consecutive_5xx)
    } else {
        out.consecutive_5xx
    };
    cx.note(
        &path,
        "Envoy also ejects by success rate (on by default for clusters of 5 or more endpoints); weir ejects on consecutive failures only",
    );
    ok.then_some(out)
}

struct Protocol {
    http2: Option<bool>,
    upstream_http: Option<UpstreamHttpConfig>,
}

/// HTTP/2 and the upstream connection pool, in v3's
/// `typed_extension_protocol_options` or the deprecated cluster fields.
fn protocol_options(cx: &mut Cx, o: &mut Obj<'_>) -> Protocol {
    let mut http2 = Some(false);
    let mut pool = Some(UpstreamHttpConfig::default());
    if let Some(f) = o.get("typed_extension_protocol_options")
        && let Some(mut map) = cx.obj(&f, "typed_extension_protocol_options")
    {
        if let Some(options) = map.get(HTTP_OPTIONS_KEY) {
            http_protocol_options(cx, &options, &mut http2, &mut pool);
        }
        let path = map.path.clone();
        for key in map.unread_keys() {
            cx.refuse(
                &path.key(&key),
                format!(
                    "protocol options {key:?} are not supported: weir takes {HTTP_OPTIONS_KEY}"
                ),
            );
        }
    }
    if let Some(f) = o.get("http2_protocol_options")
        && let Some(opts) = cx.obj(&f, "Http2ProtocolOptions")
    {
        opts.finish(cx);
        http2 = http2.map(|_| true);
    }
    if let Some(f) = o.get("http_protocol_options")
        && let Some(opts) = cx.obj(&f, "Http1ProtocolOptions")
    {
        opts.finish(cx);
    }
    if let Some(f) = o.get("common_http_protocol_options") {
        upstream_pool(cx, &f, &mut pool);
    }
    if let Some(f) = o.get("max_requests_per_connection") {
        match (cx.u32(&f), pool.as_mut()) {
            (Some(n), Some(p)) => p.max_requests_per_connection = n,
            _ => pool = None,
        }
    }
    if let Some(f) = o.get("protocol_selection") {
        cx.choice(
            &f,
            &[("USE_CONFIGURED_PROTOCOL", ())],
            "weir speaks one protocol to a cluster: HTTP/1.1, or HTTP/2 with http2: true",
        );
    }
    Protocol {
        http2,
        upstream_http: pool,
    }
}

fn http_protocol_options(
    cx: &mut Cx,
    f: &Field<'_>,
    http2: &mut Option<bool>,
    pool: &mut Option<UpstreamHttpConfig>,
) {
    let Some(mut o) = cx.obj(f, "HttpProtocolOptions") else {
        *http2 = None;
        return;
    };
    o.skip(&["@type"]);
    if let Some(explicit) = o.get("explicit_http_config")
        && let Some(mut e) = cx.obj(&explicit, "ExplicitHttpConfig")
    {
        if let Some(h1) = e.get("http_protocol_options")
            && let Some(opts) = cx.obj(&h1, "Http1ProtocolOptions")
        {
            opts.finish(cx);
        }
        if let Some(h2) = e.get("http2_protocol_options")
            && let Some(opts) = cx.obj(&h2, "Http2ProtocolOptions")
        {
            opts.finish(cx);
            *http2 = http2.map(|_| true);
        }
        if let Some(h3) = e.get("http3_protocol_options") {
            cx.refuse(&h3.path, "weir does not speak HTTP/3");
        }
        e.finish(cx);
    }
    for field in ["use_downstream_protocol_config", "auto_config"] {
        if let Some(x) = o.get(field) {
            cx.refuse(
                &x.path,
                "weir speaks one protocol to a cluster: HTTP/1.1, or HTTP/2 with explicit_http_config.http2_protocol_options",
            );
        }
    }
    if let Some(common) = o.get("common_http_protocol_options") {
        upstream_pool(cx, &common, pool);
    }
    o.finish(cx);
}

fn upstream_pool(cx: &mut Cx, f: &Field<'_>, pool: &mut Option<UpstreamHttpConfig>) {
    let Some(mut o) = cx.obj(f, "HttpProtocolOptions") else {
        *pool = None;
        return;
    };
    if let Some(t) = o.get("idle_timeout") {
        match (cx.duration(&t), pool.as_mut()) {
            (Some(d), Some(p)) => p.idle_timeout = d,
            _ => *pool = None,
        }
    }
    if let Some(n) = o.get("max_requests_per_connection") {
        match (cx.u32(&n), pool.as_mut()) {
            (Some(n), Some(p)) => p.max_requests_per_connection = n,
            _ => *pool = None,
        }
    }
    o.finish(cx);
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
