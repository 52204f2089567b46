use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use super::*;
use crate::pods::{PodLocation, PodSpec};

fn parse(yaml: &str) -> Vec<PodSpec> {
    parse_pods_str(yaml, "pods.yaml").unwrap_or_else(|err| panic!("{err}"))
}

fn error(yaml: &str) -> String {
    match parse_pods_str(yaml, "pods.yaml") {
        Ok(pods) => panic!("accepted {pods:?}:\n{yaml}"),
        Err(err) => err.to_string(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

const TWO_PODS: &str = "\
pods:
  - namespace: default
    name: web
    uid: 3f2a-01
    ips: [10.0.0.5, fd00::5]
    annotations:
      weir.dev/enroll: \"true\"
      weir.dev/inbound-ports: \"8080\"
    cgroup: kubepods/besteffort/pod3f2a-01
  - {namespace: shop, name: db, uid: 3f2a-02, ips: [10.0.0.6], pid: 4242}
";

/// A valid pod for rule tests: `pod(uid, name, ip)` on one line.
fn pod(uid: &str, name: &str, ip: &str) -> String {
    format!("  - {{namespace: default, name: {name}, uid: {uid}, ips: [{ip}], pid: 1}}\n")
}

#[test]
fn parses_every_field_in_block_and_flow_style() {
    let pods = parse(TWO_PODS);
    assert_eq!(
        pods,
        vec![
            PodSpec {
                namespace: "default".into(),
                name: "web".into(),
                uid: "3f2a-01".into(),
                ips: vec![ip("10.0.0.5"), ip("fd00::5")],
                annotations: BTreeMap::from([
                    ("weir.dev/enroll".into(), "true".into()),
                    ("weir.dev/inbound-ports".into(), "8080".into()),
                ]),
                location: PodLocation::Cgroup(PathBuf::from("kubepods/besteffort/pod3f2a-01")),
                service_account: "default".to_owned(),
                workload_name: "web".to_owned(),
            },
            PodSpec {
                namespace: "shop".into(),
                name: "db".into(),
                uid: "3f2a-02".into(),
                ips: vec![ip("10.0.0.6")],
                annotations: BTreeMap::new(),
                location: PodLocation::Pid(4242),
                service_account: "default".to_owned(),
                workload_name: "db".to_owned(),
            },
        ]
    );
    assert_eq!(pods[0].key(), "3f2a-01");
    assert_eq!(pods[1].qualified_name(), "shop/db");
}

#[test]
fn an_empty_list_is_a_node_without_pods() {
    assert_eq!(parse("pods: []\n"), vec![]);
}

#[test]
fn missing_pods_key_is_an_error_not_an_empty_node() {
    assert_eq!(
        error("{}\n"),
        "pods.yaml: (document root) (line 1): missing field `pods`"
    );
    assert_eq!(
        error("pod: []\n"),
        "pods.yaml: pod (line 1): unknown field `pod`, expected `namespaces` or `pods`"
    );
}

#[test]
fn bad_ip_names_path_and_line() {
    let yaml = format!(
        "pods:\n{}  - namespace: default\n    name: b\n    uid: u2\n    ips:\n      - 10.0.0.300\n    pid: 2\n",
        pod("u1", "a", "10.0.0.1")
    );
    assert_eq!(
        error(&yaml),
        "pods.yaml: pods[1].ips[0] (line 7): invalid IP address syntax"
    );
}

#[test]
fn unknown_field_is_refused() {
    let yaml = "pods:\n  - namespace: default\n    name: a\n    uid: u1\n    ips: [10.0.0.1]\n    pid: 1\n    labels: {app: a}\n";
    assert_eq!(
        error(yaml),
        "pods.yaml: pods[0].labels (line 7): unknown field `labels`, expected one of `namespace`, `name`, `uid`, `ips`, `annotations`, `cgroup`, `pid`, `service_account`, `workload`"
    );
}

#[test]
fn missing_field_names_the_pod() {
    let yaml = "pods:\n  - namespace: default\n    name: a\n    ips: [10.0.0.1]\n    pid: 1\n";
    assert_eq!(
        error(yaml),
        "pods.yaml: pods[0] (line 2): missing field `uid`"
    );
}

#[test]
fn exactly_one_of_cgroup_and_pid() {
    let neither = "pods:\n  - {namespace: default, name: a, uid: u1, ips: [10.0.0.1]}\n";
    assert_eq!(
        error(neither),
        "pods.yaml: pods[0] (line 2): a pod needs `cgroup` (its cgroup v2 directory) or `pid` (a process in it)"
    );
    let both =
        "pods:\n  - {namespace: default, name: a, uid: u1, ips: [10.0.0.1], pid: 1, cgroup: /x}\n";
    assert_eq!(
        error(both),
        "pods.yaml: pods[0] (line 2): a pod has either `cgroup` or `pid`, not both"
    );
}

#[test]
fn annotation_values_must_be_strings() {
    let yaml = "pods:\n  - namespace: default\n    name: a\n    uid: u1\n    ips: [10.0.0.1]\n    pid: 1\n    annotations:\n      weir.dev/enroll: true\n";
    assert_eq!(
        error(yaml),
        "pods.yaml: pods[0].annotations.weir.dev/enroll (line 8): annotation values are strings; quote it: \"true\""
    );
    let port = "pods:\n  - namespace: default\n    name: a\n    uid: u1\n    ips: [10.0.0.1]\n    pid: 1\n    annotations: {weir.dev/inbound-ports: 8080}\n";
    assert_eq!(
        error(port),
        "pods.yaml: pods[0].annotations.weir.dev/inbound-ports (line 7): annotation values are strings; quote it: \"8080\""
    );
}

#[test]
fn negative_pid_is_a_type_error() {
    let yaml = "pods:\n  - namespace: default\n    name: a\n    uid: u1\n    ips: [10.0.0.1]\n    pid: -3\n";
    assert_eq!(
        error(yaml),
        "pods.yaml: pods[0].pid (line 6): invalid type: integer `-3`, expected a whole number from 0 to 4294967295"
    );
}

#[test]
fn syntax_error_has_the_parser_line() {
    let yaml = "pods:\n  - namespace: default\n    name: \"a\n    uid: u1\n";
    assert_eq!(
        error(yaml),
        "pods.yaml: pods[0].name (line 5): found unexpected end of stream, while scanning a quoted scalar at line 3 column 11"
    );
}

#[test]
fn empty_fields_are_refused() {
    let yaml = "pods:\n  - namespace: \"\"\n    name: \" \"\n    uid: \"\"\n    ips: []\n    cgroup: \"\"\n";
    assert_eq!(
        error(yaml),
        "\
pods.yaml: pods[0].namespace (line 2): namespace must not be empty
pods.yaml: pods[0].name (line 3): name must not be empty
pods.yaml: pods[0].uid (line 4): uid must not be empty
pods.yaml: pods[0].ips (line 5): a pod needs at least one IP
pods.yaml: pods[0].cgroup (line 6): cgroup must not be empty"
    );
}

#[test]
fn duplicate_uid() {
    let yaml = format!(
        "pods:\n{}{}",
        pod("u1", "a", "10.0.0.1"),
        pod("u1", "b", "10.0.0.2")
    );
    assert_eq!(
        error(&yaml),
        "pods.yaml: pods[1].uid (line 3): uid \"u1\" is already used by pod default/a (pods[0])"
    );
}

#[test]
fn duplicate_namespace_and_name() {
    let yaml = format!(
        "pods:\n{}{}{}",
        pod("u1", "a", "10.0.0.1"),
        pod("u2", "b", "10.0.0.2"),
        pod("u3", "a", "10.0.0.3")
    );
    assert_eq!(
        error(&yaml),
        "pods.yaml: pods[2].name (line 4): pod default/a is already listed at pods[0]"
    );
    // The same name in another namespace is another pod.
    let other = yaml.replacen(
        "namespace: default, name: a, uid: u3",
        "namespace: other, name: a, uid: u3",
        1,
    );
    assert_eq!(parse(&other).len(), 3);
}

#[test]
fn an_ip_belongs_to_one_pod() {
    let yaml = format!(
        "pods:\n{}{}",
        pod("u1", "a", "10.0.0.1, fd00::1"),
        pod("u2", "b", "10.0.0.2, fd00:0::1")
    );
    assert_eq!(
        error(&yaml),
        "pods.yaml: pods[1].ips[1] (line 3): IP fd00::1 is already used by pod default/a (pods[0])"
    );
    let twice = format!("pods:\n{}", pod("u1", "a", "10.0.0.1, 10.0.0.1"));
    assert_eq!(
        error(&twice),
        "pods.yaml: pods[0].ips[1] (line 2): IP 10.0.0.1 is listed twice (first at pods[0].ips[0])"
    );
}

#[test]
fn location_rules() {
    let yaml = "pods:\n  - namespace: default\n    name: a\n    uid: u1\n    ips: [10.0.0.1]\n    cgroup: kubepods/../../etc\n  - namespace: default\n    name: b\n    uid: u2\n    ips: [10.0.0.2]\n    pid: 0\n";
    assert_eq!(
        error(yaml),
        "\
pods.yaml: pods[0].cgroup (line 6): cgroup kubepods/../../etc must not contain `..`
pods.yaml: pods[1].pid (line 11): pid must be a process id, not 0"
    );
}

#[test]
fn every_issue_is_reported_with_its_own_line() {
    let yaml = format!(
        "pods:\n{}{}{}",
        pod("u1", "a", "10.0.0.1"),
        pod("u1", "a", "10.0.0.1"),
        pod("", "c", "10.0.0.3")
    );
    let err = parse_pods_str(&yaml, "pods.yaml").unwrap_err();
    let lines: Vec<(String, Option<usize>)> = err
        .issues()
        .iter()
        .map(|issue| (issue.path.clone(), issue.line))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("pods[1].uid".into(), Some(3)),
            ("pods[1].name".into(), Some(3)),
            ("pods[1].ips[0]".into(), Some(3)),
            ("pods[2].uid".into(), Some(4)),
        ]
    );
}

#[test]
fn unreadable_file_names_it() {
    let err = load_pods_file(std::path::Path::new("/nonexistent/weir-pods.yaml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/weir-pods.yaml: cannot read pods file: No such file or directory (os error 2)"
    );
    assert!(err.issues().is_empty());
}

#[test]
fn the_example_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/pods/example.yaml");
    assert_eq!(
        enrolment_in(path),
        [
            ("shop/frontend-7c9d".to_owned(), true),
            ("shop/payments-5f2b".to_owned(), true),
            ("kube-system/coredns-6d4b".to_owned(), false),
        ]
    );
    let pods = load_pods_file(std::path::Path::new(path)).unwrap();
    let payments = pods[1].policy().unwrap();
    assert_eq!(payments.fail_mode, crate::pods::FailMode::Closed);
    assert_eq!(
        payments.inbound_ports,
        crate::pods::InboundPorts::Listed(vec![8080, 8443])
    );
    assert_eq!(
        pods[0].policy().unwrap().exclude_outbound_ports,
        [5432, 6379]
    );
}

#[test]
fn a_service_account_is_a_kubernetes_name() {
    let named = parse(
        "pods:\n  - {namespace: shop, name: db, uid: u1, ips: [10.0.0.6], pid: 1, service_account: orders-db}\n",
    );
    assert_eq!(named[0].service_account, "orders-db");
    assert_eq!(named[0].workload_name, "db", "the pod's name by default");
    let with_workload = parse(
        "pods:\n  - {namespace: shop, name: db-0, uid: u1, ips: [10.0.0.6], pid: 1, workload: db}\n",
    );
    assert_eq!(with_workload[0].workload_name, "db");
    let err = error(
        "pods:\n  - {namespace: shop, name: db, uid: u1, ips: [10.0.0.6], pid: 1, service_account: Orders/DB}\n",
    );
    assert!(err.contains("service_account \"Orders/DB\""), "{err}");
    assert!(err.contains("pods.yaml"), "{err}");
}

const NAMESPACED: &str = "\
namespaces:
  - name: shop
    annotations:
      weir.dev/enroll: \"true\"
      weir.dev/fail-mode: closed
pods:
  - {namespace: shop, name: cart, uid: u1, ips: [10.0.0.1], pid: 1}
  - namespace: shop
    name: batch
    uid: u2
    ips: [10.0.0.2]
    pid: 1
    annotations: {weir.dev/enroll: \"false\"}
  - {namespace: default, name: web, uid: u3, ips: [10.0.0.3], pid: 1}
";

#[test]
fn a_namespace_s_annotations_are_defaults_for_its_pods() {
    let pods = parse(NAMESPACED);
    let cart = pods[0].policy().unwrap();
    assert!(cart.enroll, "enrolled by its namespace");
    assert_eq!(cart.fail_mode, crate::pods::FailMode::Closed);
    assert!(!pods[1].policy().unwrap().enroll, "its own annotation wins");
    assert_eq!(pods[1].annotations["weir.dev/fail-mode"], "closed");
    assert!(pods[2].annotations.is_empty(), "another namespace's pod");
}

#[test]
fn namespace_defaults_are_checked_whole_and_named_by_path_and_line() {
    let bad = NAMESPACED
        .replace("fail-mode: closed", "fail-mode: shut\n      team: payments")
        .replace("pods:\n", "  - {name: shop}\n  - {name: \"\"}\npods:\n");
    let e = error(&bad);
    assert_eq!(
        e,
        "\
pods.yaml: namespaces[0].annotations.team (line 6): only weir.dev/* annotations are defaults for a namespace's pods
pods.yaml: namespaces[0].annotations.weir.dev/fail-mode (line 5): namespace shop: annotation weir.dev/fail-mode: invalid value \"shut\": expected \"open\" or \"closed\"
pods.yaml: namespaces[1].name (line 7): namespace shop is already listed at namespaces[0]
pods.yaml: namespaces[2].name (line 8): name must not be empty"
    );
    let e = error(&NAMESPACED.replace("  - name: shop\n", "  - name: shop\n    labels: {}\n"));
    assert!(
        e.contains("namespaces[0]") && e.contains("unknown field `labels`"),
        "{e}"
    );
    let e = error(&NAMESPACED.replace("\"true\"", "true"));
    assert!(e.contains("quote it"), "{e}");
}

/// The fuzzer starts from valid files too, so that it explores past the
/// parser into validation; this seed carries the `namespaces:` list.
#[test]
fn the_fuzz_seed_with_namespace_defaults_is_a_valid_pods_file() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/pods_file/namespace-defaults.yaml"
    );
    assert_eq!(
        enrolment_in(path),
        [
            ("shop/cart-1".to_owned(), true),
            ("batch/job-1".to_owned(), true),
        ]
    );
}

/// Each pod of the file at `path`, and whether its policy enrols it.
fn enrolment_in(path: &str) -> Vec<(String, bool)> {
    let pods = load_pods_file(std::path::Path::new(path)).unwrap_or_else(|err| panic!("{err}"));
    pods.iter()
        .map(|pod| {
            let policy = pod.policy().unwrap_or_else(|err| panic!("{err}"));
            (pod.qualified_name(), policy.enroll)
        })
        .collect()
}
