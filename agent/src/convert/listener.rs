//! A listener: its address, its one filter chain, the HTTP connection
//! manager in it, and that manager's HTTP filters.

use super::common::ip_socket_address;
use super::dns::{DnsCache, dns_cache};
use super::route::{Served, route_config};
use super::tls::{self, Side};
use super::walk::{Cx, Field, Obj, type_name};
use crate::config::{
    Codec, DEFAULT_SERVER_NAME, DocPath, DownstreamTlsConfig, ListenerConfig, ListenerLimitsConfig,
    ListenerTimeoutsConfig,
};

const HCM_NAMES: [&str; 2] = [
    "envoy.filters.network.http_connection_manager",
    "envoy.http_connection_manager",
];
const HCM_TYPES: [&str; 2] = [
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager",
];
const ROUTER_NAMES: [&str; 2] = ["envoy.filters.http.router", "envoy.router"];
const ROUTER_TYPES: [&str; 2] = [
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.config.filter.http.router.v2.Router",
];
const DFP_FILTER_NAMES: [&str; 1] = ["envoy.filters.http.dynamic_forward_proxy"];
const DFP_FILTER_TYPES: [&str; 2] = [
    "envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
    "envoy.config.filter.http.dynamic_forward_proxy.v2alpha.FilterConfig",
];
/// Listener filters with nothing to carry: weir tells TLS from HTTP itself.
const HARMLESS_LISTENER_FILTERS: [&str; 4] = [
    "envoy.filters.listener.tls_inspector",
    "envoy.listener.tls_inspector",
    "envoy.filters.listener.http_inspector",
    "envoy.listener.http_inspector",
];
const HARMLESS_LISTENER_FILTER_TYPES: [&str; 2] = [
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
];

/// A converted listener, before its name is made unique.
pub(super) struct Listener {
    pub config: ListenerConfig,
    /// Envoy's listener name, the fallback when two managers share a stat_prefix.
    pub envoy_name: Option<String>,
    pub stat_prefix_path: DocPath,
}

/// What the listeners' dynamic forward proxy filters ask for, to match
/// with the clusters' caches.
pub(super) struct DfpFilter {
    pub path: DocPath,
    pub cache: DnsCache,
}

pub(super) fn listener(
    cx: &mut Cx,
    f: &Field<'_>,
    weir_path: &str,
    dfp: &mut Vec<DfpFilter>,
) -> Option<Listener> {
    let mut o = cx.obj(f, "Listener")?;
    let envoy_name = o.get("name").and_then(|n| cx.string(&n));
    let address = o
        .require(cx, "address")
        .and_then(|a| ip_socket_address(cx, &a, "a listener address"));
    let bind_to_port = o
        .get("bind_to_port")
        .and_then(|b| cx.bool(&b))
        .unwrap_or(true);
    // Settings that shape only Envoy's own stats and socket handling.
    o.skip(&[
        "traffic_direction",
        "enable_reuse_port",
        "reuse_port",
        "stat_prefix",
        "listener_filters_timeout",
        "continue_on_listener_filters_timeout",
    ]);
    if let Some(filters) = o.get("listener_filters") {
        for lf in cx.seq(&filters) {
            listener_filter(cx, &lf);
        }
    }
    let chains = o.get("filter_chains");
    let path = o.path.clone();
    o.finish(cx);
    let chains = chains.map(|c| cx.seq(&c)).unwrap_or_default();
    let Some(chain) = chains.first() else {
        cx.refuse(
            &path,
            "a listener needs one filter chain with an http_connection_manager",
        );
        return None;
    };
    for extra in &chains[1..] {
        cx.refuse(
            &extra.path,
            "weir listeners have one filter chain; several certificates chosen by SNI are tls.certificates[].server_names",
        );
    }
    let chain = filter_chain(cx, chain, weir_path, dfp)?;
    if chains.len() > 1 {
        return None;
    }
    Some(Listener {
        config: ListenerConfig {
            name: chain.hcm.stat_prefix,
            address: address?,
            bind_to_port,
            server_names: Vec::new(),
            timeouts: chain.hcm.timeouts,
            limits: chain.hcm.limits,
            tls: chain.tls,
            codec: chain.hcm.codec,
            upgrade_types: chain.hcm.upgrade_types,
            server_name: chain.hcm.server_name,
            access_log: chain.hcm.access_log,
            virtual_hosts: chain.hcm.virtual_hosts,
        },
        envoy_name,
        stat_prefix_path: chain.hcm.stat_prefix_path,
    })
}

fn listener_filter(cx: &mut Cx, f: &Field<'_>) {
    let Some(mut o) = cx.obj(f, "ListenerFilter") else {
        return;
    };
    let name = o
        .get("name")
        .and_then(|n| cx.string(&n))
        .unwrap_or_default();
    let config = o.get("typed_config");
    o.finish(cx);
    let type_name = type_name(config.as_ref());
    let harmless = HARMLESS_LISTENER_FILTERS.contains(&name.as_str())
        || type_name.is_some_and(|t| HARMLESS_LISTENER_FILTER_TYPES.contains(&t));
    if !harmless {
        let why = if name.contains("original_dst") {
            "weir claims intercepted connections by original destination with `bind_to_port: false` listeners (docs/envoy.md)"
        } else if name.contains("proxy_protocol") {
            "weir reads no PROXY protocol header"
        } else {
            "weir has no listener filters (tls_inspector and http_inspector are accepted: weir detects TLS and HTTP itself)"
        };
        cx.refuse(&f.path, format!("listener filter {name:?}: {why}"));
    }
}

struct Chain {
    hcm: Hcm,
    tls: Option<DownstreamTlsConfig>,
}

fn filter_chain(
    cx: &mut Cx,
    f: &Field<'_>,
    weir_path: &str,
    dfp: &mut Vec<DfpFilter>,
) -> Option<Chain> {
    let mut o = cx.obj(f, "FilterChain")?;
    o.skip(&["name"]);
    if let Some(m) = o.get("filter_chain_match") {
        // An empty match matches every connection, as weir's one chain.
        if !matches!(m.value, serde_yaml::Value::Mapping(map) if map.is_empty()) {
            cx.refuse(
                &m.path,
                "weir listeners have one filter chain and match no connection properties; several certificates chosen by SNI are tls.certificates[].server_names",
            );
        }
    }
    // Some(None): cleartext; None: refused.
    let tls = match o.get("transport_socket") {
        Some(socket) => match tls::transport_socket(cx, &socket, Side::Downstream) {
            Some(Some(context)) => tls::downstream(cx, &context).map(Some),
            Some(None) => Some(None),
            None => None,
        },
        // v2 configs put the context on the chain itself.
        None => match o.get("tls_context") {
            Some(context) => tls::downstream(cx, &context).map(Some),
            None => Some(None),
        },
    };
    let terminates_tls = matches!(tls, Some(Some(_)) | None);
    let filters = o.get("filters");
    let path = o.path.clone();
    o.finish(cx);
    let mut hcm = None;
    for filter in filters.map(|fs| cx.seq(&fs)).unwrap_or_default() {
        let at = Served {
            weir_path,
            tls: terminates_tls,
        };
        if let Some(found) = network_filter(cx, &filter, &at, dfp) {
            if hcm.is_some() {
                cx.refuse(
                    &filter.path,
                    "weir listeners have one http_connection_manager",
                );
            } else {
                hcm = Some(found);
            }
        }
    }
    let Some(hcm) = hcm else {
        cx.refuse(
            &path,
            "weir listeners serve HTTP: the filter chain needs an http_connection_manager",
        );
        return None;
    };
    Some(Chain {
        hcm: hcm?,
        tls: tls?,
    })
}

/// `Some(manager)` for the HTTP connection manager (`Some(None)` when it
/// has refusals), `None` for another network filter, which is refused.
fn network_filter(
    cx: &mut Cx,
    f: &Field<'_>,
    at: &Served<'_>,
    dfp: &mut Vec<DfpFilter>,
) -> Option<Option<Hcm>> {
    let mut o = cx.obj(f, "Filter")?;
    let name = o
        .get("name")
        .and_then(|n| cx.string(&n))
        .unwrap_or_default();
    let config = o.get("typed_config").or_else(|| o.get("config"));
    o.finish(cx);
    let type_name = type_name(config.as_ref());
    let is_hcm = match type_name {
        Some(t) => HCM_TYPES.contains(&t),
        None => HCM_NAMES.contains(&name.as_str()),
    };
    if !is_hcm {
        let what = type_name.unwrap_or(&name);
        let why = if what.contains("tcp_proxy") {
            "weir listeners serve HTTP only; intercepted TLS and TCP pass through to their original destination (bind_to_port: false listeners, outbound_traffic_policy)"
        } else {
            "weir listeners serve HTTP only, through the http_connection_manager; other network filters have no equivalent"
        };
        cx.refuse(&f.path, format!("network filter {what:?}: {why}"));
        return None;
    }
    let Some(config) = config else {
        cx.refuse(
            &f.path,
            "the http_connection_manager needs its typed_config",
        );
        return Some(None);
    };
    Some(hcm(cx, &config, at, dfp))
}

struct Hcm {
    stat_prefix: String,
    stat_prefix_path: DocPath,
    codec: Codec,
    server_name: String,
    timeouts: ListenerTimeoutsConfig,
    limits: ListenerLimitsConfig,
    upgrade_types: Option<Vec<String>>,
    access_log: Vec<crate::config::AccessLogConfig>,
    virtual_hosts: Vec<crate::config::VirtualHostConfig>,
}

fn hcm(cx: &mut Cx, f: &Field<'_>, at: &Served<'_>, dfp: &mut Vec<DfpFilter>) -> Option<Hcm> {
    let mut o = cx.obj(f, "HttpConnectionManager")?;
    o.skip(&["@type"]);
    let stat_prefix = o.require(cx, "stat_prefix");
    let stat_prefix_path = stat_prefix
        .as_ref()
        .map_or_else(|| o.path.clone(), |s| s.path.clone());
    let stat_prefix = stat_prefix.and_then(|s| cx.string(&s));
    let codec = match o.get("codec_type") {
        Some(c) => cx.choice(
            &c,
            &[
                ("AUTO", Codec::Auto),
                ("HTTP1", Codec::Http1),
                ("HTTP2", Codec::Http2),
            ],
            "weir serves AUTO, HTTP1 and HTTP2",
        ),
        None => Some(Codec::Auto),
    };
    let virtual_hosts = o
        .require(cx, "route_config")
        .map(|r| route_config(cx, &r, at));
    let filters_ok = match o.get("http_filters") {
        Some(list) => http_filters(cx, &list, dfp),
        None => {
            cx.refuse(
                &o.path,
                "http_filters needs the router: without it Envoy forwards nothing",
            );
            false
        }
    };
    let server_name = o
        .get("server_name")
        .map(|s| cx.string(&s))
        .unwrap_or_else(|| Some(DEFAULT_SERVER_NAME.to_owned()));
    if let Some(t) = o.get("server_header_transformation") {
        cx.choice(
            &t,
            &[("OVERWRITE", ())],
            "weir always sets the server header to server_name (OVERWRITE)",
        );
    }
    let mut timeouts = ListenerTimeoutsConfig::default();
    let mut limits = ListenerLimitsConfig::default();
    let mut ok = true;
    if let Some(common) = o.get("common_http_protocol_options") {
        ok &= downstream_protocol_options(cx, &common, &mut timeouts, &mut limits);
    }
    if let Some(t) = o.get("request_headers_timeout") {
        match cx.duration(&t) {
            Some(d) => timeouts.request_headers = d,
            None => ok = false,
        }
    }
    if let Some(t) = o.get("request_timeout") {
        match cx.duration(&t) {
            Some(d) => timeouts.request = d,
            None => ok = false,
        }
    }
    if let Some(kb) = o.get("max_request_headers_kb") {
        match cx.u32(&kb) {
            Some(kb) => limits.max_request_headers_kb = kb,
            None => ok = false,
        }
    }
    let upgrade_types = o.get("upgrade_configs").map(|u| upgrade_configs(cx, &u));
    let access_log = match o.get("access_log") {
        Some(list) => super::access_log::access_logs(cx, &list),
        None => Some(Vec::new()),
    };
    same_as_weir(cx, &mut o);
    o.finish(cx);
    if !filters_ok || !ok {
        return None;
    }
    Some(Hcm {
        stat_prefix: stat_prefix?,
        stat_prefix_path,
        codec: codec?,
        server_name: server_name?,
        timeouts,
        limits,
        upgrade_types: super::walk::optional(upgrade_types)?,
        access_log: access_log?,
        virtual_hosts: virtual_hosts?,
    })
}

/// Manager fields whose value weir has fixed: accepted at that value,
/// refused at any other.
fn same_as_weir(cx: &mut Cx, o: &mut Obj<'_>) {
    let xff = "weir neither appends to nor trusts x-forwarded-for";
    if let Some(f) = o.get("use_remote_address")
        && cx.bool(&f) == Some(true)
    {
        cx.refuse(&f.path, xff);
    }
    if let Some(f) = o.get("xff_num_trusted_hops")
        && cx.u32(&f).is_some_and(|n| n != 0)
    {
        cx.refuse(&f.path, xff);
    }
    if let Some(f) = o.get("generate_request_id")
        && cx.bool(&f) == Some(false)
    {
        cx.refuse(
            &f.path,
            "weir always adds an x-request-id when the request has none",
        );
    }
    // Empty protocol options are Envoy's defaults, which weir's are.
    for (field, message) in [
        ("http_protocol_options", "Http1ProtocolOptions"),
        ("http2_protocol_options", "Http2ProtocolOptions"),
    ] {
        if let Some(f) = o.get(field)
            && let Some(opts) = cx.obj(&f, message)
        {
            opts.finish(cx);
        }
    }
}

fn downstream_protocol_options(
    cx: &mut Cx,
    f: &Field<'_>,
    timeouts: &mut ListenerTimeoutsConfig,
    limits: &mut ListenerLimitsConfig,
) -> bool {
    let Some(mut o) = cx.obj(f, "HttpProtocolOptions") else {
        return false;
    };
    let mut ok = true;
    if let Some(t) = o.get("idle_timeout") {
        match cx.duration(&t) {
            Some(d) => timeouts.idle = d,
            None => ok = false,
        }
    }
    if let Some(n) = o.get("max_headers_count") {
        match cx.u32(&n) {
            Some(n) => limits.max_headers_count = n,
            None => ok = false,
        }
    }
    o.finish(cx);
    ok
}

fn upgrade_configs(cx: &mut Cx, f: &Field<'_>) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut ok = true;
    for u in cx.seq(f) {
        let Some(mut o) = cx.obj(&u, "UpgradeConfig") else {
            ok = false;
            continue;
        };
        let kind = o.require(cx, "upgrade_type").and_then(|t| cx.string(&t));
        let enabled = o.get("enabled").and_then(|e| cx.bool(&e)).unwrap_or(true);
        o.finish(cx);
        match kind {
            Some(kind) if enabled => out.push(kind),
            Some(_) => {}
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The manager's HTTP filters: the router (weir's implicit last stage) and
/// the dynamic forward proxy carry over; anything else is refused.
fn http_filters(cx: &mut Cx, f: &Field<'_>, dfp: &mut Vec<DfpFilter>) -> bool {
    let mut ok = true;
    let mut router = false;
    for filter in cx.seq(f) {
        let Some(mut o) = cx.obj(&filter, "HttpFilter") else {
            ok = false;
            continue;
        };
        let name = o
            .get("name")
            .and_then(|n| cx.string(&n))
            .unwrap_or_default();
        let config = o.get("typed_config").or_else(|| o.get("config"));
        if let Some(d) = o.get("disabled")
            && cx.bool(&d) == Some(true)
        {
            cx.refuse(
                &d.path,
                "weir has no per-route filter configuration to enable it",
            );
            ok = false;
        }
        o.skip(&["is_optional"]);
        o.finish(cx);
        let type_name = type_name(config.as_ref());
        let is = |names: &[&str], types: &[&str]| match type_name {
            Some(t) => types.contains(&t),
            None => names.contains(&name.as_str()),
        };
        if is(&ROUTER_NAMES, &ROUTER_TYPES) {
            router = true;
            if let Some(c) = &config
                && let Some(mut r) = cx.obj(c, "Router")
            {
                r.skip(&["@type"]);
                r.finish(cx);
            }
        } else if is(&DFP_FILTER_NAMES, &DFP_FILTER_TYPES) {
            match config.as_ref().and_then(|c| dfp_filter(cx, c)) {
                Some(found) => dfp.push(found),
                None => ok = false,
            }
        } else {
            ok = false;
            let what = type_name.unwrap_or(&name);
            let why = if what.contains("fault") {
                "weir has no fault injection".to_owned()
            } else {
                format!(
                    "HTTP filter {what:?} is not supported: weir carries over the router (implicit) and dynamic_forward_proxy only"
                )
            };
            cx.refuse(&filter.path, why);
        }
    }
    if !router {
        cx.refuse(
            &f.path,
            "http_filters needs the router: without it Envoy forwards nothing",
        );
        ok = false;
    }
    ok
}

fn dfp_filter(cx: &mut Cx, f: &Field<'_>) -> Option<DfpFilter> {
    let mut o = cx.obj(f, "dynamic_forward_proxy.FilterConfig")?;
    o.skip(&["@type"]);
    let cache = o.require(cx, "dns_cache_config");
    if let Some(s) = o.get("save_upstream_address")
        && cx.bool(&s) == Some(true)
    {
        cx.refuse(&s.path, "weir keeps no filter state");
    }
    o.finish(cx);
    let cache = cache?;
    Some(DfpFilter {
        path: cache.path.clone(),
        cache: dns_cache(cx, &cache)?,
    })
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
