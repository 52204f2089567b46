//! The bootstrap: admin, static resources, the proxy-wide DNS resolver;
//! then what spans listeners and clusters (forward proxy caches, names).

use std::collections::HashSet;

use super::cluster::{Cluster, cluster};
use super::common::ip_socket_address;
use super::dns::resolver_fields;
use super::listener::{DfpFilter, Listener, listener};
use super::walk::{Cx, Field};
use crate::config::{AdminConfig, DnsConfig, ProxyConfig};

pub(super) fn bootstrap(cx: &mut Cx, root: &Field<'_>) -> Option<ProxyConfig> {
    let mut o = cx.obj(root, "Bootstrap")?;
    let admin = o.get("admin").map(|a| admin(cx, &a));
    // The node's identity matters to an xDS server and stat tags only.
    o.skip(&["node"]);
    let resolvers = resolver_fields(cx, &mut o);
    let resources = o.get("static_resources");
    o.finish(cx);

    let mut dns = DnsConfig {
        resolvers: resolvers.servers,
        ..DnsConfig::default()
    };
    if resolvers.no_search_domains.is_some() {
        dns.search_domains = Some(Vec::new());
    }
    if let Some((_, t)) = resolvers.timeout {
        dns.timeout = t;
    }
    if let Some((_, n)) = resolvers.attempts {
        dns.attempts = n;
    }

    let Some(resources) = resources else {
        cx.refuse(
            &root.path,
            "static_resources is required: weir has no dynamic resources",
        );
        return None;
    };
    let mut r = cx.obj(&resources, "StaticResources")?;
    let listener_fields = r.get("listeners");
    let cluster_fields = r.get("clusters");
    r.finish(cx);

    let mut clusters = Vec::new();
    let mut ok = true;
    for (i, c) in cluster_fields
        .map(|c| cx.seq(&c))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        cx.origin(format!("clusters[{i}]"), &c.path);
        match cluster(cx, c) {
            Some(c) => clusters.push(c),
            None => ok = false,
        }
    }
    let mut filters = Vec::new();
    let mut listeners = Vec::new();
    for (i, l) in listener_fields
        .map(|l| cx.seq(&l))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let weir_path = format!("listeners[{i}]");
        cx.origin(weir_path.clone(), &l.path);
        match listener(cx, l, &weir_path, &mut filters) {
            Some(l) => listeners.push(l),
            None => ok = false,
        }
    }
    match_dns_caches(cx, &filters, &clusters);
    let listeners = unique_names(cx, listeners);

    let mut config: ProxyConfig =
        serde_yaml::from_str("{}").expect("weir's config has a default for every top-level field");
    config.admin = super::walk::optional(admin)?;
    config.dns = dns;
    config.listeners = listeners?;
    config.clusters = clusters.into_iter().map(|c| c.config).collect();
    ok.then_some(config)
}

fn admin(cx: &mut Cx, f: &Field<'_>) -> Option<AdminConfig> {
    let mut o = cx.obj(f, "Admin")?;
    cx.origin("admin".to_owned(), &o.path);
    let address = o
        .require(cx, "address")
        .and_then(|a| ip_socket_address(cx, &a, "the admin address"));
    for log in ["access_log_path", "access_log"] {
        if let Some(l) = o.get(log) {
            cx.note(&l.path, "weir writes no admin access log: left out");
        }
    }
    // Where Envoy's CPU profiler writes; weir has no profiler endpoint.
    o.skip(&["profile_path"]);
    o.finish(cx);
    let address = address?;
    if !address.ip().is_loopback() {
        cx.note(
            &f.path.key("address"),
            format!(
                "the admin on {address} answers /config_dump to anyone who can reach it, as Envoy's did; consider 127.0.0.1 and a stats.address for Prometheus (docs/envoy.md)"
            ),
        );
    }
    Some(AdminConfig { address })
}

/// Envoy needs the dynamic forward proxy filter and cluster to name the
/// same cache with the same settings; weir keeps it on the cluster only.
fn match_dns_caches(cx: &mut Cx, filters: &[DfpFilter], clusters: &[Cluster]) {
    for filter in filters {
        let found = clusters
            .iter()
            .filter_map(|c| c.dns_cache.as_ref())
            .find(|(_, cache)| cache.name == filter.cache.name);
        match found {
            None => cx.refuse(
                &filter.path.key("name"),
                format!(
                    "no dynamic forward proxy cluster uses the DNS cache {:?}: weir keeps the cache on the cluster (cluster_type envoy.clusters.dynamic_forward_proxy)",
                    filter.cache.name
                ),
            ),
            Some((path, cache)) if *cache != filter.cache => cx.refuse(
                &filter.path,
                format!("differs from the cluster's dns_cache_config of the same name ({path}); Envoy requires them identical and weir keeps one, on the cluster"),
            ),
            Some(_) => {}
        }
    }
}

/// weir uses a listener's name where Envoy used its manager's stat_prefix,
/// but weir's names are unique; a repeated prefix takes the Envoy
/// listener's name instead.
fn unique_names(
    cx: &mut Cx,
    listeners: Vec<Listener>,
) -> Option<Vec<crate::config::ListenerConfig>> {
    let mut used: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut ok = true;
    for mut l in listeners {
        if used.insert(l.config.name.clone()) {
            out.push(l.config);
            continue;
        }
        match l.envoy_name.take().filter(|n| !used.contains(n)) {
            Some(name) => {
                cx.note(
                    &l.stat_prefix_path,
                    format!(
                        "stat_prefix {:?} is used by an earlier listener and weir's listener names are unique: this one is named {name:?}, its Envoy listener name, so its stats are under that name",
                        l.config.name
                    ),
                );
                used.insert(name.clone());
                l.config.name = name;
                out.push(l.config);
            }
            None => {
                cx.refuse(
                    &l.stat_prefix_path,
                    format!(
                        "stat_prefix {:?} is used by an earlier listener, and weir's listener names (its stat_prefix) are unique: give each one its own",
                        l.config.name
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}
