//! The example configs in `config/`: all validate, and each expresses its Envoy seed.

use std::path::Path;
use std::time::Duration;

use super::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");

#[test]
fn every_example_in_config_dir_validates() {
    let dir = DIR;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "seed-000-egress.yaml",
            "seed-001-films.yaml",
            "seed-002-split.yaml",
            "seed-003-edge.yaml",
            "seed-004-egress-registry.yaml",
            "seed-004-timeout.yaml"
        ]
    );
    for name in &names {
        let path = Path::new(dir).join(name);
        if let Err(err) = load_file(&path) {
            panic!("{err}");
        }
    }
}

#[test]
fn seeds_express_the_envoy_originals() {
    let load = |name: &str| {
        let path = Path::new(DIR).join(name);
        load_file(&path).unwrap_or_else(|e| panic!("{e}"))
    };
    let egress = load("seed-000-egress.yaml");
    assert_eq!(egress.listeners[0].address.to_string(), "127.0.0.1:9001");
    assert_eq!(
        egress.clusters[0].discovery_type,
        DiscoveryType::DynamicForwardProxy
    );
    assert!(egress.clusters[0].endpoints.is_empty());
    assert_eq!(
        egress.clusters[0].dns_cache.name.as_deref(),
        Some("proxy_dns_cache")
    );

    let films = load("seed-001-films.yaml");
    let film = &films.clusters[0];
    assert_eq!(
        (film.discovery_type, *film.connect_timeout),
        (DiscoveryType::StrictDns, Duration::from_millis(250))
    );
    let prefixes: Vec<_> = films.listeners[0].virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.matcher.path_match.clone())
        .collect();
    assert_eq!(
        prefixes,
        [
            PathMatch::Prefix("/films".into()),
            PathMatch::Prefix("/ratings".into())
        ]
    );

    let split = load("seed-002-split.yaml");
    let RouteAction::Route(forward) = &split.listeners[0].virtual_hosts[0].routes[0].action else {
        panic!("seed 002 has no forward route");
    };
    assert_eq!(
        forward.target,
        ClusterTarget::Weighted(vec![
            WeightedClusterConfig {
                name: "backend_v1".into(),
                weight: 80
            },
            WeightedClusterConfig {
                name: "backend_v2".into(),
                weight: 20
            },
        ])
    );

    let edge = load("seed-003-edge.yaml");
    let order: Vec<_> = edge.listeners[0].virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match (&r.matcher.path_match, &r.action) {
            (PathMatch::Prefix(p), RouteAction::Route(f)) => {
                format!("{p}->{}", f.target.cluster_names().join(","))
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        order,
        [
            "/pong->pong-cluster",
            "/ping->ping-cluster",
            "/->ping-cluster"
        ]
    );

    let timeout = load("seed-004-timeout.yaml");
    let RouteAction::Route(forward) = &timeout.listeners[0].virtual_hosts[0].routes[0].action
    else {
        panic!("seed 004 has no forward route");
    };
    assert_eq!(*forward.timeout, Duration::from_millis(500));

    let registry = load("seed-004-egress-registry.yaml");
    assert_eq!(
        registry.outbound_traffic_policy,
        OutboundTrafficPolicy::RegistryOnly
    );
    let https = &registry.listeners[1];
    assert!(!https.bind_to_port);
    assert_eq!(
        (https.address.port(), https.server_names.as_slice()),
        (443, ["httpbin.org".to_owned()].as_slice())
    );
}
