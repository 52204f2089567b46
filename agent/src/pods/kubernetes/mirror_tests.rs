//! The mirror's bookkeeping, event by event: what the watch shows becomes the
//! published list only when it is complete, and errors never empty it.

use super::*;

fn pod(name: &str, ip: Option<&str>) -> Pod {
    let mut status = serde_json::json!({"phase": "Running"});
    if let Some(ip) = ip {
        status["podIP"] = ip.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "annotations": {"weir.dev/enroll": "true"}},
        "spec": {"containers": []},
        "status": status,
    }))
    .expect("a valid Pod")
}

fn mirror() -> Mirror {
    Mirror::new(
        "n1".to_owned(),
        Box::pin(futures_util::stream::empty()),
        Box::pin(futures_util::stream::empty()),
    )
}

fn names(mirror: &Mirror) -> Vec<String> {
    mirror.list().into_iter().map(|p| p.name).collect()
}

fn error() -> watcher::Error {
    watcher::Error::NoResourceVersion
}

#[test]
fn a_relist_replaces_the_list_only_when_complete() {
    let mut m = mirror();
    m.apply(Ok(watcher::Event::Init));
    m.apply(Ok(watcher::Event::InitApply(pod("a", Some("192.0.2.1")))));
    m.apply(Ok(watcher::Event::InitApply(pod("b", Some("192.0.2.2")))));
    assert!(
        names(&m).is_empty(),
        "published before the list was complete"
    );
    assert_eq!(m.apply(Ok(watcher::Event::InitDone)), Applied::Listed);
    assert_eq!(names(&m), ["a", "b"]);

    // After a 410 the watcher lists again: "b" is gone, "c" is new; until the
    // relist is done the old list stands.
    m.apply(Ok(watcher::Event::Init));
    m.apply(Ok(watcher::Event::InitApply(pod("a", Some("192.0.2.1")))));
    assert_eq!(names(&m), ["a", "b"]);
    m.apply(Ok(watcher::Event::InitApply(pod("c", Some("192.0.2.3")))));
    m.apply(Ok(watcher::Event::InitDone));
    assert_eq!(names(&m), ["a", "c"]);
}

#[test]
fn errors_keep_the_last_known_pods() {
    let mut m = mirror();
    m.apply(Ok(watcher::Event::Init));
    m.apply(Ok(watcher::Event::InitApply(pod("a", Some("192.0.2.1")))));
    m.apply(Ok(watcher::Event::InitDone));
    assert_eq!(m.apply(Err(error())), Applied::Nothing);
    assert!(!m.health.healthy);
    assert_eq!(m.apply(Err(error())), Applied::Nothing);
    // `Init` alone is not an answer from the API server.
    m.apply(Ok(watcher::Event::Init));
    assert!(!m.health.healthy);
    assert_eq!(names(&m), ["a"]);
    m.apply(Ok(watcher::Event::InitApply(pod("a", Some("192.0.2.1")))));
    assert!(m.health.healthy);
}

#[test]
fn pods_come_and_go_with_their_ip_and_their_deletion() {
    let mut m = mirror();
    m.apply(Ok(watcher::Event::InitDone));
    assert_eq!(
        m.apply(Ok(watcher::Event::Apply(pod("a", None)))),
        Applied::Changed
    );
    assert!(
        names(&m).is_empty(),
        "a pod without an IP is not handed over"
    );
    assert!(m.waiting.contains_key("uid-a"));
    m.apply(Ok(watcher::Event::Apply(pod("a", Some("192.0.2.1")))));
    assert_eq!(names(&m), ["a"]);
    assert!(m.waiting.is_empty());
    m.apply(Ok(watcher::Event::Delete(pod("a", Some("192.0.2.1")))));
    assert!(names(&m).is_empty());
}

#[test]
fn reasons_of_pods_gone_during_an_outage_are_forgotten_at_the_relist() {
    let mut m = mirror();
    m.apply(Ok(watcher::Event::InitDone));
    m.apply(Ok(watcher::Event::Apply(pod("a", None))));
    assert!(m.waiting.contains_key("uid-a"));
    // "a" was deleted while the watch was down: the relist does not show it.
    m.apply(Err(error()));
    m.apply(Ok(watcher::Event::Init));
    m.apply(Ok(watcher::Event::InitApply(pod("b", None))));
    m.apply(Ok(watcher::Event::InitDone));
    assert!(!m.waiting.contains_key("uid-a"), "{:?}", m.waiting);
    assert!(m.waiting.contains_key("uid-b"));
}

fn namespace(annotations: serde_json::Value) -> Namespace {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ns", "annotations": annotations},
    }))
    .expect("a valid Namespace")
}

/// A pod of namespace `ns` that says nothing itself.
fn unannotated(name: &str, ip: Option<&str>) -> Pod {
    let mut pod = pod(name, ip);
    pod.metadata.annotations = None;
    pod
}

#[tokio::test]
async fn the_first_list_waits_for_the_namespaces_and_carries_their_defaults() {
    let pods = futures_util::stream::iter(vec![
        Ok(watcher::Event::Init),
        Ok(watcher::Event::InitApply(unannotated(
            "b",
            Some("192.0.2.2"),
        ))),
        Ok(watcher::Event::InitDone),
    ]);
    // Slower than the pods: the list must not be published without it.
    let namespaces = futures_util::stream::iter(vec![
        Err(watcher::Error::NoResourceVersion),
        Ok(watcher::Event::Init),
        Ok(watcher::Event::InitApply(namespace(
            serde_json::json!({"weir.dev/enroll": "true"}),
        ))),
        Ok(watcher::Event::InitDone),
    ]);
    let mut m = Mirror::new("n1".to_owned(), Box::pin(pods), Box::pin(namespaces));
    let listed = m.until_listed().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].policy().unwrap().enroll, "{:?}", listed[0]);
}

#[tokio::test]
async fn a_namespace_watch_that_ends_before_listing_is_an_error() {
    let pods =
        futures_util::stream::iter(vec![Ok(watcher::Event::Init), Ok(watcher::Event::InitDone)]);
    let mut m = Mirror::new(
        "n1".to_owned(),
        Box::pin(pods),
        Box::pin(futures_util::stream::empty()),
    );
    let err = m.until_listed().await.unwrap_err();
    assert!(err.to_string().contains("namespace watch"), "{err}");
}

#[test]
fn namespace_defaults_reach_the_pods_and_their_waiting_reasons() {
    let mut m = mirror();
    m.apply(Ok(watcher::Event::InitDone));
    assert!(m.namespaces.apply(Ok(watcher::Event::Apply(namespace(
        serde_json::json!({"weir.dev/enroll": "true", "weir.dev/fail-mode": "closed"}),
    )))));
    // Enrolled by its namespace alone: its wait for a sandbox is reported.
    m.apply(Ok(watcher::Event::Apply(unannotated("a", None))));
    assert!(m.waiting.contains_key("uid-a"));
    m.apply(Ok(watcher::Event::Apply(unannotated(
        "a",
        Some("192.0.2.1"),
    ))));
    let list = m.list();
    assert_eq!(
        list[0]
            .annotations
            .get("weir.dev/fail-mode")
            .map(String::as_str),
        Some("closed")
    );
    assert!(list[0].policy().unwrap().enroll);
    // The namespace lets go: the pod is no longer asked for.
    assert!(
        m.namespaces
            .apply(Ok(watcher::Event::Apply(namespace(serde_json::json!({})))))
    );
    assert!(!m.list()[0].policy().unwrap().enroll);
}
