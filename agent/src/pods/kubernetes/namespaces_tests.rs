//! Namespace defaults: what a namespace's annotations give its pods, and how
//! the watch's events change them.

use super::*;
use crate::pods::policy::{ANNOTATION_ENROLL, ANNOTATION_UNCLAIMED_TRAFFIC, Unclaimed};
use crate::pods::{DEFAULT_SERVICE_ACCOUNT, PodLocation};

fn namespace(name: &str, annotations: serde_json::Value) -> Namespace {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
    }))
    .expect("a valid Namespace")
}

fn pod(namespace: &str, annotations: &[(&str, &str)]) -> PodSpec {
    PodSpec {
        namespace: namespace.to_owned(),
        name: "web".to_owned(),
        uid: "uid-web".to_owned(),
        ips: vec!["192.0.2.1".parse().unwrap()],
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        location: PodLocation::Kubelet { qos: None },
        service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
        workload_name: "web".to_owned(),
    }
}

fn listed(namespaces: Vec<Namespace>) -> NamespaceDefaults {
    let mut d = NamespaceDefaults::new();
    d.apply(Ok(watcher::Event::Init));
    for ns in namespaces {
        d.apply(Ok(watcher::Event::InitApply(ns)));
    }
    d.apply(Ok(watcher::Event::InitDone));
    d
}

#[test]
fn an_annotated_namespace_enrols_its_pods_and_a_pod_may_opt_out() {
    let d = listed(vec![namespace(
        "shop",
        serde_json::json!({"weir.dev/enroll": "true", "weir.dev/unclaimed-traffic": "direct"}),
    )]);
    let plain = d.inherit(&pod("shop", &[]));
    let policy = plain.policy().unwrap();
    assert!(policy.enroll);
    assert_eq!(policy.unclaimed, Some(Unclaimed::Direct));

    let opted_out = d.inherit(&pod("shop", &[("weir.dev/enroll", "false")]));
    assert!(!opted_out.policy().unwrap().enroll);

    let own = d.inherit(&pod("shop", &[(ANNOTATION_UNCLAIMED_TRAFFIC, "proxy")]));
    assert_eq!(own.policy().unwrap().unclaimed, Some(Unclaimed::Proxy));

    // Another namespace inherits nothing.
    assert!(!d.inherit(&pod("other", &[])).policy().unwrap().enroll);
}

#[test]
fn only_weir_annotations_are_kept() {
    let d = listed(vec![
        namespace(
            "shop",
            serde_json::json!({"weir.dev/enroll": "true", "team": "payments"}),
        ),
        namespace("quiet", serde_json::json!({"team": "search"})),
    ]);
    assert_eq!(
        d.len(),
        1,
        "a namespace without weir.dev/ annotations is not kept"
    );
    let spec = d.inherit(&pod("shop", &[]));
    assert!(!spec.annotations.contains_key("team"));
    assert_eq!(d.effective("shop", None, ANNOTATION_ENROLL), Some("true"));
    assert_eq!(d.effective("quiet", None, ANNOTATION_ENROLL), None);
}

#[test]
fn watch_events_change_the_defaults_and_say_when() {
    let mut d = listed(Vec::new());
    assert!(d.listed);
    let enrol = namespace("shop", serde_json::json!({"weir.dev/enroll": "true"}));
    assert!(d.apply(Ok(watcher::Event::Apply(enrol.clone()))));
    assert!(
        !d.apply(Ok(watcher::Event::Apply(enrol.clone()))),
        "an unchanged namespace (a label edit, a status update) changes nothing"
    );
    let unrelated = namespace(
        "shop",
        serde_json::json!({"weir.dev/enroll": "true", "owner": "b"}),
    );
    assert!(!d.apply(Ok(watcher::Event::Apply(unrelated))));
    assert!(d.apply(Ok(watcher::Event::Apply(namespace(
        "shop",
        serde_json::json!({})
    )))));
    assert!(!d.inherit(&pod("shop", &[])).policy().unwrap().enroll);
    assert!(d.apply(Ok(watcher::Event::Apply(enrol.clone()))));
    assert!(d.apply(Ok(watcher::Event::Delete(enrol))));
    assert_eq!(d.len(), 0);
}

#[test]
fn a_relist_replaces_the_defaults_only_when_complete_and_errors_keep_them() {
    let mut d = listed(vec![namespace(
        "shop",
        serde_json::json!({"weir.dev/enroll": "true"}),
    )]);
    assert!(!d.apply(Err(watcher::Error::NoResourceVersion)));
    assert_eq!(d.effective("shop", None, ANNOTATION_ENROLL), Some("true"));
    d.apply(Ok(watcher::Event::Init));
    d.apply(Ok(watcher::Event::InitApply(namespace(
        "other",
        serde_json::json!({"weir.dev/enroll": "true"}),
    ))));
    assert_eq!(
        d.effective("shop", None, ANNOTATION_ENROLL),
        Some("true"),
        "a half-done relist is not in force"
    );
    assert!(d.apply(Ok(watcher::Event::InitDone)));
    assert_eq!(d.effective("shop", None, ANNOTATION_ENROLL), None);
    assert_eq!(d.effective("other", None, ANNOTATION_ENROLL), Some("true"));
}

#[test]
fn an_invalid_namespace_default_is_reported_by_namespace() {
    let good: Defaults = [("weir.dev/enroll".to_owned(), "true".to_owned())].into();
    assert!(!report_invalid("shop", &good));
    let bad: Defaults = [("weir.dev/fail-mode".to_owned(), "sometimes".to_owned())].into();
    assert!(
        report_invalid("shop", &bad),
        "checked even where the namespace does not enrol"
    );
    let bad_enroll: Defaults = [("weir.dev/enroll".to_owned(), "yes".to_owned())].into();
    assert!(report_invalid("shop", &bad_enroll));
}

#[test]
fn a_namespace_label_counts_and_an_annotation_wins_over_it() {
    let labelled: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop", "labels": {"weir.dev/enroll": "true", "weir.dev/fail-mode": "closed"},
                     "annotations": {"weir.dev/fail-mode": "open"}},
    }))
    .unwrap();
    let d = listed(vec![labelled]);
    assert_eq!(d.effective("shop", None, ANNOTATION_ENROLL), Some("true"));
    assert_eq!(
        d.effective("shop", None, "weir.dev/fail-mode"),
        Some("open")
    );
}

#[test]
fn a_forbidden_namespace_list_does_not_hold_the_agent_back() {
    let mut d = NamespaceDefaults::new();
    let status = kube::core::Status {
        code: 403,
        message: "namespaces is forbidden".into(),
        ..Default::default()
    };
    let refused = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
    assert!(!d.apply(Err(refused)));
    assert!(
        d.listed,
        "the first list is not waited for when it is forbidden"
    );
    assert_eq!(d.len(), 0);
    // Another failure (the API unreachable) is waited out as before.
    let mut d = NamespaceDefaults::new();
    d.apply(Err(watcher::Error::NoResourceVersion));
    assert!(!d.listed);
    // Allowed later: the defaults come into force.
    let mut d = NamespaceDefaults::new();
    let status = kube::core::Status {
        code: 403,
        ..Default::default()
    };
    d.apply(Err(watcher::Error::InitialListFailed(kube::Error::Api(
        Box::new(status),
    ))));
    d.apply(Ok(watcher::Event::Init));
    d.apply(Ok(watcher::Event::InitApply(namespace(
        "shop",
        serde_json::json!({"weir.dev/enroll": "true"}),
    ))));
    assert!(d.apply(Ok(watcher::Event::InitDone)));
    assert_eq!(d.effective("shop", None, ANNOTATION_ENROLL), Some("true"));
}
