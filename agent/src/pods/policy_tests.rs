use std::collections::BTreeMap;

use super::*;
use crate::pods::PodLocation;

fn pod(annotations: &[(&str, &str)]) -> PodSpec {
    PodSpec {
        namespace: "default".into(),
        name: "web".into(),
        uid: "u1".into(),
        ips: vec!["10.0.0.5".parse().unwrap()],
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        location: PodLocation::Pid(1),
        service_account: "default".to_owned(),
        workload_name: "web".to_owned(),
    }
}

fn enrolled(more: &[(&str, &str)]) -> PodSpec {
    let mut annotations = vec![(ANNOTATION_ENROLL, "true")];
    annotations.extend_from_slice(more);
    pod(&annotations)
}

fn error(spec: &PodSpec) -> String {
    match spec.policy() {
        Ok(policy) => panic!("accepted {policy:?}"),
        Err(err) => err.to_string(),
    }
}

fn port_list(count: u16) -> String {
    (1..=count)
        .map(|p| (8000 + p).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn annotation_names() {
    assert_eq!(ANNOTATION_ENROLL, "weir.dev/enroll");
    assert_eq!(
        ANNOTATION_EXCLUDE_OUTBOUND_PORTS,
        "weir.dev/exclude-outbound-ports"
    );
    assert_eq!(ANNOTATION_INBOUND_PORTS, "weir.dev/inbound-ports");
    assert_eq!(ANNOTATION_FAIL_MODE, "weir.dev/fail-mode");
}

#[test]
fn without_annotations_a_pod_is_left_alone() {
    assert_eq!(pod(&[]).policy(), Ok(PodPolicy::not_enrolled()));
    assert_eq!(
        pod(&[(ANNOTATION_ENROLL, "false")]).policy(),
        Ok(PodPolicy::not_enrolled())
    );
}

#[test]
fn enrolled_defaults() {
    assert_eq!(
        enrolled(&[]).policy(),
        Ok(PodPolicy {
            enroll: true,
            exclude_outbound_ports: vec![],
            inbound_ports: InboundPorts::All,
            fail_mode: FailMode::Open,
            bypassed: BypassedConnections::ByTrafficPolicy,
            limits: ConnectionLimits::default(),
            max_cpu_millicores: None,
            unclaimed: None,
        })
    );
}

#[test]
fn every_annotation_read() {
    let spec = enrolled(&[
        (ANNOTATION_EXCLUDE_OUTBOUND_PORTS, "5432,6379"),
        (ANNOTATION_INBOUND_PORTS, " 8080, 9090 "),
        (ANNOTATION_FAIL_MODE, "closed"),
        (ANNOTATION_BYPASSED_CONNECTIONS, "keep"),
        (ANNOTATION_MAX_CONNECTIONS, "100"),
        (ANNOTATION_MAX_CONNECTION_RATE, " 50 "),
        (ANNOTATION_MAX_REQUESTS, "10"),
        (ANNOTATION_MAX_CPU, "250m"),
        (ANNOTATION_UNCLAIMED_TRAFFIC, "direct"),
    ]);
    assert_eq!(
        spec.policy(),
        Ok(PodPolicy {
            enroll: true,
            exclude_outbound_ports: vec![5432, 6379],
            inbound_ports: InboundPorts::Listed(vec![8080, 9090]),
            fail_mode: FailMode::Closed,
            bypassed: BypassedConnections::Keep,
            limits: ConnectionLimits {
                max_open: 100,
                per_second: 50,
                max_requests: 10,
            },
            max_cpu_millicores: Some(250),
            unclaimed: Some(Unclaimed::Direct),
        })
    );
    let proxy = enrolled(&[(ANNOTATION_UNCLAIMED_TRAFFIC, "proxy")]);
    assert_eq!(proxy.policy().unwrap().unclaimed, Some(Unclaimed::Proxy));
    let bad = enrolled(&[(ANNOTATION_UNCLAIMED_TRAFFIC, "sometimes")]).policy();
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("weir.dev/unclaimed-traffic"),
        "the error names the annotation"
    );
    let open = enrolled(&[(ANNOTATION_FAIL_MODE, "open")]);
    assert_eq!(open.policy().unwrap().fail_mode, FailMode::Open);
    let reset = enrolled(&[(ANNOTATION_BYPASSED_CONNECTIONS, "reset")]);
    assert_eq!(reset.policy().unwrap().bypassed, BypassedConnections::Reset);
}

#[test]
fn other_annotations_of_a_pod_left_alone_are_not_read() {
    let spec = pod(&[
        (ANNOTATION_ENROLL, "false"),
        (ANNOTATION_FAIL_MODE, "shut"),
        (ANNOTATION_INBOUND_PORTS, "http"),
    ]);
    assert_eq!(spec.policy(), Ok(PodPolicy::not_enrolled()));
}

#[test]
fn bad_enroll_value() {
    assert_eq!(
        error(&pod(&[(ANNOTATION_ENROLL, "yes")])),
        "pod default/web: annotation weir.dev/enroll: invalid value \"yes\": expected \"true\" or \"false\""
    );
    assert_eq!(
        error(&pod(&[(ANNOTATION_ENROLL, "True")])),
        "pod default/web: annotation weir.dev/enroll: invalid value \"True\": expected \"true\" or \"false\""
    );
}

#[test]
fn bad_fail_mode() {
    assert_eq!(
        error(&enrolled(&[(ANNOTATION_FAIL_MODE, "shut")])),
        "pod default/web: annotation weir.dev/fail-mode: invalid value \"shut\": expected \"open\" or \"closed\""
    );
}

#[test]
fn bad_bypassed_connections() {
    assert_eq!(
        error(&enrolled(&[(ANNOTATION_BYPASSED_CONNECTIONS, "drop")])),
        "pod default/web: annotation weir.dev/bypassed-connections: invalid value \"drop\": expected \"reset\" or \"keep\""
    );
}

#[test]
fn connection_limits_are_positive_counts() {
    for bad in ["0", "-1", "ten", "", "4294967296"] {
        assert_eq!(
            error(&enrolled(&[(ANNOTATION_MAX_CONNECTIONS, bad)])),
            format!(
                "pod default/web: annotation weir.dev/max-connections: invalid value {bad:?}: expected a whole number from 1 to 4294967295"
            )
        );
    }
    assert!(
        error(&enrolled(&[(ANNOTATION_MAX_CONNECTION_RATE, "0")])).contains("max-connection-rate")
    );
    assert!(error(&enrolled(&[(ANNOTATION_MAX_REQUESTS, "0")])).contains("max-requests"));
}

#[test]
fn port_lists_hold_ports() {
    let cases = [
        ("80,http", "\"http\" is not a port (1-65535)"),
        ("0", "\"0\" is not a port (1-65535)"),
        ("65536", "\"65536\" is not a port (1-65535)"),
        ("-1", "\"-1\" is not a port (1-65535)"),
        ("80;443", "\"80;443\" is not a port (1-65535)"),
        ("80,,443", "empty item in the list"),
        ("80,", "empty item in the list"),
        ("80,443,80", "port 80 is listed twice"),
        ("", "no ports listed; remove the annotation instead"),
        (" ", "no ports listed; remove the annotation instead"),
    ];
    for annotation in [ANNOTATION_INBOUND_PORTS, ANNOTATION_EXCLUDE_OUTBOUND_PORTS] {
        for (value, reason) in cases {
            assert_eq!(
                error(&enrolled(&[(annotation, value)])),
                format!(
                    "pod default/web: annotation {annotation}: invalid value {value:?}: {reason}"
                )
            );
        }
    }
}

#[test]
fn at_most_sixteen_ports_each() {
    assert_eq!(MAX_INBOUND_PORTS, 16);
    assert_eq!(MAX_EXCLUDED_OUTBOUND_PORTS, 16);
    let sixteen = port_list(16);
    let policy = enrolled(&[
        (ANNOTATION_INBOUND_PORTS, &sixteen),
        (ANNOTATION_EXCLUDE_OUTBOUND_PORTS, &sixteen),
    ])
    .policy()
    .unwrap();
    assert_eq!(policy.exclude_outbound_ports.len(), 16);
    assert!(matches!(policy.inbound_ports, InboundPorts::Listed(ports) if ports.len() == 16));

    let seventeen = port_list(17);
    for annotation in [ANNOTATION_INBOUND_PORTS, ANNOTATION_EXCLUDE_OUTBOUND_PORTS] {
        assert_eq!(
            error(&enrolled(&[(annotation, &seventeen)])),
            format!(
                "pod default/web: annotation {annotation} lists 17 ports, more than the 16 that fit (value {seventeen:?})"
            )
        );
    }
}

#[test]
fn cpu_is_a_kubernetes_quantity() {
    let cpu = |v: &str| {
        enrolled(&[(ANNOTATION_MAX_CPU, v)])
            .policy()
            .map(|p| p.max_cpu_millicores)
    };
    assert_eq!(cpu("500m"), Ok(Some(500)));
    assert_eq!(cpu("2"), Ok(Some(2000)));
    assert_eq!(cpu("1.5"), Ok(Some(1500)));
    assert_eq!(cpu(".25"), Ok(Some(250)));
    assert_eq!(cpu(" 0.001 "), Ok(Some(1)));
    for bad in [
        "0", "0m", "1.2345", "-1", "1e3", "m", "", ".", "2000000", "1,5", "+1",
    ] {
        assert_eq!(
            error(&enrolled(&[(ANNOTATION_MAX_CPU, bad)])),
            format!(
                "pod default/web: annotation weir.dev/max-cpu: invalid value {bad:?}: expected a CPU quantity from \"1m\" to \"1024\" (\"250m\", \"2\", \"1.5\")"
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn a_namespace_default_is_checked_whole_and_its_error_names_the_namespace() {
    let defaults = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        check_namespace_defaults("shop", &defaults(&[(ANNOTATION_ENROLL, "true")])),
        Ok(())
    );
    // Read though the namespace does not enrol: a pod may enrol itself.
    let err =
        check_namespace_defaults("shop", &defaults(&[(ANNOTATION_FAIL_MODE, "shut")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "namespace shop: annotation weir.dev/fail-mode: invalid value \"shut\": expected \"open\" or \"closed\""
    );
    let err =
        check_namespace_defaults("shop", &defaults(&[(ANNOTATION_ENROLL, "yes")])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("namespace shop: annotation weir.dev/enroll:"),
        "{err}"
    );
}
