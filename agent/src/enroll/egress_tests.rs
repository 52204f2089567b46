use super::*;
use crate::config::parse_str;

fn plan(yaml: &str, mesh: &[(IpAddr, u8)]) -> (Vec<(Destination, Verdict)>, EgressPolicy) {
    let cfg = parse_str(yaml, "test.yaml").unwrap();
    let system_dns = ["10.96.0.10".parse().unwrap(), "127.0.0.53".parse().unwrap()];
    egress_plan(&EgressInputs {
        config: &cfg,
        mesh_networks: mesh,
        system_dns: &system_dns,
    })
}

fn dest(net: &str, prefix: u8, port: u16) -> Destination {
    Destination {
        net: net.parse().unwrap(),
        prefix,
        port,
    }
}

const LISTENERS: &str = r#"
listeners:
  - name: reviews
    address: 198.51.100.10:9080
    bind_to_port: false
    virtual_hosts: [{name: r, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]
  - name: any-http
    address: 0.0.0.0:80
    bind_to_port: false
    virtual_hosts: [{name: a, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]
  - name: bound
    address: 127.0.0.1:0
    virtual_hosts: [{name: b, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]
"#;

#[test]
fn listeners_claim_their_address_or_their_port_and_bound_ones_nothing() {
    let (table, policy) = plan(LISTENERS, &[]);
    assert_eq!(
        table,
        vec![
            (dest("198.51.100.10", 32, 9080), Verdict::Proxy),
            (dest("0.0.0.0", 0, 80), Verdict::Proxy),
        ]
    );
    assert_eq!(policy, EgressPolicy::default());
}

#[test]
fn registry_only_allows_its_list_and_the_cluster_dns_directly() {
    let yaml = format!(
        "{LISTENERS}outbound_traffic_policy: REGISTRY_ONLY\negress:\n  allow:\n    - cidr: 192.0.2.0/24\n      ports: [443, 8443]\n    - cidr: 2001:db8::7\n"
    );
    let (table, policy) = plan(&yaml, &[("10.244.0.0".parse().unwrap(), 16)]);
    assert!(policy.registry_only && !policy.unclaimed_direct);
    let direct: Vec<_> = table
        .iter()
        .filter(|(_, v)| *v == Verdict::Direct)
        .map(|(d, _)| *d)
        .collect();
    assert_eq!(
        direct,
        vec![
            dest("192.0.2.0", 24, 443),
            dest("192.0.2.0", 24, 8443),
            dest("2001:db8::7", 128, 0),
            // The system's resolver, not its loopback stub.
            dest("10.96.0.10", 32, 53),
        ]
    );
    assert!(table.contains(&(dest("10.244.0.0", 16, 0), Verdict::Proxy)));
    // Listeners come last, so they win over an allow entry for the same key.
    assert_eq!(table.last().unwrap().1, Verdict::Proxy);
}

#[test]
fn configured_dns_servers_replace_the_systems_and_allow_any_lists_nothing_direct() {
    let bound = "listeners:\n  - name: b\n    address: 127.0.0.1:0\n    virtual_hosts: [{name: b, domains: [\"*\"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]\n";
    let yaml = format!(
        "{bound}outbound_traffic_policy: REGISTRY_ONLY\negress:\n  dns_servers: [10.0.0.10]\n"
    );
    let (table, _) = plan(&yaml, &[]);
    assert_eq!(table, vec![(dest("10.0.0.10", 32, 53), Verdict::Direct)]);
    let yaml = format!("{bound}egress:\n  unclaimed: direct\n  allow: [{{cidr: 192.0.2.0/24}}]\n");
    let (table, policy) = plan(&yaml, &[]);
    assert!(table.is_empty(), "the allow list is REGISTRY_ONLY's");
    assert!(policy.unclaimed_direct && !policy.registry_only);
}

#[test]
fn nameservers_are_read_from_resolv_conf_lines() {
    let text = "# generated\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver  fd00::a # v6\noptions ndots:5\nnameserver bogus\n";
    assert_eq!(
        nameservers(text),
        vec![
            "10.96.0.10".parse::<IpAddr>().unwrap(),
            "fd00::a".parse().unwrap()
        ]
    );
}

#[test]
fn growth_is_the_difference_and_a_reset_entry_counts_whole() {
    let c = |connections, closed, bytes| weir_common::FlowCounts {
        connections,
        bytes_sent: bytes,
        bytes_received: bytes,
        closed,
    };
    assert_eq!(grown(&c(3, 1, 10), &c(3, 1, 10)), None);
    assert_eq!(grown(&c(3, 1, 10), &c(5, 2, 25)), Some(c(2, 1, 15)));
    assert_eq!(grown(&c(9, 9, 90), &c(2, 1, 5)), Some(c(2, 1, 5)));
}

#[test]
fn totals_export_growth_after_the_first_look_and_forget_idle_flows() {
    let flow = |connections| {
        let counts = weir_common::FlowCounts {
            connections,
            ..Default::default()
        };
        Flow {
            netns_cookie: 7,
            dst: "192.0.2.9:443".parse().unwrap(),
            udp: false,
            refused: true,
            counts,
            key: weir_common::FlowKey::default(),
        }
    };
    let mut totals = FlowTotals::default();
    // The first look only takes the totals: an earlier agent exported them.
    assert_eq!(totals.advance(vec![flow(5)]), (vec![], vec![]));
    let (grown, idle) = totals.advance(vec![flow(8)]);
    assert_eq!(grown.len(), 1);
    assert_eq!(grown[0].counts.connections, 3);
    assert!(idle.is_empty());
    for _ in 1..IDLE_COLLECTIONS {
        assert_eq!(totals.advance(vec![flow(8)]), (vec![], vec![]));
    }
    let (grown, idle) = totals.advance(vec![flow(8)]);
    assert!(grown.is_empty());
    assert_eq!(
        idle.len(),
        1,
        "unchanged for {IDLE_COLLECTIONS} looks: forgotten"
    );
    // Its next connection makes a new entry, counted whole.
    let (grown, _) = totals.advance(vec![flow(1)]);
    assert_eq!(grown[0].counts.connections, 1);
}
