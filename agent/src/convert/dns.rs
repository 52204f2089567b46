//! DNS: resolver settings (bootstrap, cluster, DNS cache) and the dynamic
//! forward proxy's `dns_cache_config`.

use super::common::ip_socket_address;
use super::walk::{Cx, Field, Obj, optional, type_name};
use crate::config::{ConfigDuration, DnsLookupFamily, DocPath, ResolverAddress};

const CARES_TYPES: [&str; 1] =
    ["envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"];
const GETADDRINFO_TYPES: [&str; 1] =
    ["envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"];

/// Resolver settings as Envoy spells them anywhere; each with its path so
/// a place that cannot take one refuses it there.
#[derive(Default)]
pub(super) struct Resolvers {
    pub servers: Vec<ResolverAddress>,
    pub no_search_domains: Option<DocPath>,
    pub timeout: Option<(DocPath, ConfigDuration)>,
    pub attempts: Option<(DocPath, u8)>,
}

impl Resolvers {
    /// Refuses the settings weir has only for the whole proxy (top-level
    /// `dns`), for a resolver configured on a cluster or DNS cache.
    pub fn refuse_proxy_wide(&self, cx: &mut Cx) {
        let why = "weir has this setting for the whole proxy only (top-level dns); move it to the bootstrap's typed_dns_resolver_config";
        if let Some(p) = &self.no_search_domains {
            cx.refuse(p, why);
        }
        if let Some((p, _)) = &self.timeout {
            cx.refuse(p, why);
        }
        if let Some((p, _)) = &self.attempts {
            cx.refuse(p, why);
        }
    }
}

/// The resolver fields a Bootstrap, Cluster or DnsCacheConfig may hold:
/// `typed_dns_resolver_config`, `dns_resolution_config`, the old
/// `dns_resolvers` list and `use_tcp_for_dns_lookups`.
pub(super) fn resolver_fields(cx: &mut Cx, o: &mut Obj<'_>) -> Resolvers {
    let mut out = Resolvers::default();
    let mut seen: Option<DocPath> = None;
    let mut one_source = |cx: &mut Cx, path: &DocPath| {
        if let Some(first) = &seen {
            cx.refuse(path, format!("resolvers are already set by {first}"));
            false
        } else {
            seen = Some(path.clone());
            true
        }
    };
    if let Some(f) = o.get("typed_dns_resolver_config")
        && one_source(cx, &f.path)
    {
        typed_resolver(cx, &f, &mut out);
    }
    if let Some(f) = o.get("dns_resolution_config")
        && one_source(cx, &f.path)
    {
        resolution_config(cx, &f, &mut out);
    }
    if let Some(f) = o.get("dns_resolvers")
        && one_source(cx, &f.path)
    {
        for server in cx.seq(&f) {
            if let Some(a) = resolver_address(cx, &server) {
                out.servers.push(a);
            }
        }
    }
    if let Some(tcp) = o.get("use_tcp_for_dns_lookups") {
        tcp_only(cx, &tcp);
    }
    out
}

fn tcp_only(cx: &mut Cx, f: &Field<'_>) {
    if cx.bool(f) == Some(true) {
        cx.refuse(
            &f.path,
            "weir asks DNS over UDP, and over TCP when a reply is truncated or UDP fails; it cannot use TCP only",
        );
    }
}

fn typed_resolver(cx: &mut Cx, f: &Field<'_>, out: &mut Resolvers) {
    let Some(mut o) = cx.obj(f, "TypedExtensionConfig") else {
        return;
    };
    let name = o
        .get("name")
        .and_then(|n| cx.string(&n))
        .unwrap_or_default();
    let config = o.get("typed_config");
    o.finish(cx);
    let Some(config) = config else {
        cx.refuse(&f.path, "typed_config is required");
        return;
    };
    match type_name(Some(&config)) {
        Some(t) if CARES_TYPES.contains(&t) => {
            if let Some(mut c) = cx.obj(&config, "CaresDnsResolverConfig") {
                c.skip(&["@type"]);
                cares(cx, &mut c, out);
                c.finish(cx);
            }
        }
        Some(t) if GETADDRINFO_TYPES.contains(&t) => {
            // The system resolver, as weir's default: nothing to carry.
            if let Some(mut g) = cx.obj(&config, "GetAddrInfoDnsResolverConfig") {
                g.skip(&["@type"]);
                g.finish(cx);
            }
        }
        Some(t) => cx.refuse(
            &config.path.key("@type"),
            format!("DNS resolver {t:?} ({name}) is not supported: weir takes the c-ares resolver's settings"),
        ),
        None => cx.refuse(&config.path, "@type is required"),
    }
}

/// The c-ares resolver's settings weir has (the rest are refused by `finish`).
fn cares(cx: &mut Cx, c: &mut Obj<'_>, out: &mut Resolvers) {
    if let Some(r) = c.get("resolvers") {
        for server in cx.seq(&r) {
            if let Some(a) = resolver_address(cx, &server) {
                out.servers.push(a);
            }
        }
    }
    if let Some(opts) = c.get("dns_resolver_options") {
        resolver_options(cx, &opts, out);
    }
    if let Some(t) = c.get("query_timeout_seconds")
        && let Some(secs) = cx.u64(&t)
    {
        out.timeout = Some((t.path, ConfigDuration::from_secs(secs)));
    }
    if let Some(t) = c.get("query_tries")
        && let Some(n) = cx.u32(&t)
    {
        match u8::try_from(n) {
            Ok(n) => out.attempts = Some((t.path, n)),
            Err(_) => cx.refuse(&t.path, format!("{n} tries: weir takes at most 255")),
        }
    }
}

fn resolution_config(cx: &mut Cx, f: &Field<'_>, out: &mut Resolvers) {
    let Some(mut o) = cx.obj(f, "DnsResolutionConfig") else {
        return;
    };
    if let Some(r) = o.get("resolvers") {
        for server in cx.seq(&r) {
            if let Some(a) = resolver_address(cx, &server) {
                out.servers.push(a);
            }
        }
    }
    if let Some(opts) = o.get("dns_resolver_options") {
        resolver_options(cx, &opts, out);
    }
    o.finish(cx);
}

fn resolver_options(cx: &mut Cx, f: &Field<'_>, out: &mut Resolvers) {
    let Some(mut o) = cx.obj(f, "DnsResolverOptions") else {
        return;
    };
    if let Some(tcp) = o.get("use_tcp_for_dns_lookups") {
        tcp_only(cx, &tcp);
    }
    if let Some(n) = o.get("no_default_search_domain")
        && cx.bool(&n) == Some(true)
    {
        out.no_search_domains = Some(n.path);
    }
    o.finish(cx);
}

/// A DNS server: an IP and a port (c-ares reads port 0 as 53).
fn resolver_address(cx: &mut Cx, f: &Field<'_>) -> Option<ResolverAddress> {
    let mut addr = ip_socket_address(cx, f, "a DNS server")?;
    if addr.port() == 0 {
        addr.set_port(53);
    }
    Some(ResolverAddress(addr))
}

/// Envoy's DNS lookup families weir has.
pub(super) fn lookup_family(cx: &mut Cx, f: &Field<'_>) -> Option<DnsLookupFamily> {
    cx.choice(
        f,
        &[
            ("AUTO", DnsLookupFamily::Auto),
            ("V4_ONLY", DnsLookupFamily::V4Only),
            ("V6_ONLY", DnsLookupFamily::V6Only),
        ],
        "weir has AUTO, V4_ONLY and V6_ONLY",
    )
}

/// A `dns_cache_config` of the dynamic forward proxy filter or cluster.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DnsCache {
    pub name: String,
    pub family: DnsLookupFamily,
    pub refresh_rate: Option<ConfigDuration>,
    pub host_ttl: Option<ConfigDuration>,
    pub max_hosts: Option<u32>,
    pub servers: Vec<ResolverAddress>,
}

pub(super) fn dns_cache(cx: &mut Cx, f: &Field<'_>) -> Option<DnsCache> {
    let mut o = cx.obj(f, "DnsCacheConfig")?;
    let name = o.require(cx, "name").and_then(|n| cx.string(&n));
    let family = match o.get("dns_lookup_family") {
        Some(fam) => lookup_family(cx, &fam),
        None => Some(DnsLookupFamily::Auto),
    };
    let refresh_rate = o.get("dns_refresh_rate").map(|r| cx.duration(&r));
    let host_ttl = o.get("host_ttl").map(|t| cx.duration(&t));
    let max_hosts = o.get("max_hosts").map(|m| cx.u32(&m));
    let resolvers = resolver_fields(cx, &mut o);
    resolvers.refuse_proxy_wide(cx);
    o.finish(cx);
    Some(DnsCache {
        name: name?,
        family: family?,
        refresh_rate: optional(refresh_rate)?,
        host_ttl: optional(host_ttl)?,
        max_hosts: optional(max_hosts)?,
        servers: resolvers.servers,
    })
}
