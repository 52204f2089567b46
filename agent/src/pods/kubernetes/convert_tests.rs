use super::*;

fn pod(json: serde_json::Value) -> Pod {
    serde_json::from_value(json).expect("a valid Pod")
}

fn running(extra_status: serde_json::Value) -> Pod {
    let mut status = serde_json::json!({"phase": "Running", "qosClass": "Burstable"});
    if let (Some(status), Some(extra)) = (status.as_object_mut(), extra_status.as_object()) {
        status.extend(extra.clone());
    }
    pod(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "6f1c-2a",
                     "annotations": {"weir.dev/enroll": "true"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
        "status": status,
    }))
}

#[test]
fn a_running_pod_becomes_a_spec_located_by_the_kubelet() {
    let spec = pod_spec(&running(
        serde_json::json!({"podIP": "192.0.2.7", "podIPs": [{"ip": "192.0.2.7"}, {"ip": "2001:db8::7"}]}),
    ))
    .expect("enrollable");
    assert_eq!(spec.qualified_name(), "shop/web");
    assert_eq!(spec.uid, "6f1c-2a");
    assert_eq!(
        spec.ips,
        vec![
            "192.0.2.7".parse::<IpAddr>().unwrap(),
            "2001:db8::7".parse().unwrap()
        ]
    );
    assert_eq!(
        spec.location,
        PodLocation::Kubelet {
            qos: Some(QosClass::Burstable)
        }
    );
    assert_eq!(spec.annotations["weir.dev/enroll"], "true");
}

#[test]
fn pod_ip_alone_is_enough() {
    let spec = pod_spec(&running(serde_json::json!({"podIP": "192.0.2.8"}))).unwrap();
    assert_eq!(spec.ips, vec!["192.0.2.8".parse::<IpAddr>().unwrap()]);
}

#[test]
fn a_pod_without_an_ip_waits_for_its_sandbox() {
    assert_eq!(
        pod_spec(&running(serde_json::json!({}))),
        Err(NotEnrollable::NoPodIp)
    );
    assert_eq!(
        pod_spec(&running(serde_json::json!({"podIP": ""}))),
        Err(NotEnrollable::NoPodIp)
    );
}

#[test]
fn host_network_and_finished_pods_are_never_enrolled() {
    let mut host = running(serde_json::json!({"podIP": "198.51.100.1"}));
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(pod_spec(&host), Err(NotEnrollable::HostNetwork));
    let done = running(serde_json::json!({"podIP": "192.0.2.9", "phase": "Succeeded"}));
    assert_eq!(
        pod_spec(&done),
        Err(NotEnrollable::Finished("Succeeded".into()))
    );
}

#[test]
fn a_garbage_ip_is_named() {
    let err = pod_spec(&running(serde_json::json!({"podIP": "10.0.0.300"}))).unwrap_err();
    assert_eq!(err, NotEnrollable::BadPodIp("10.0.0.300".into()));
    assert!(err.to_string().contains("10.0.0.300"));
}

#[test]
fn an_object_without_uid_is_incomplete() {
    let p = pod(serde_json::json!({"metadata": {"name": "x", "namespace": "y"}}));
    assert_eq!(pod_spec(&p), Err(NotEnrollable::Incomplete));
}

#[test]
fn the_service_account_is_the_pods_or_kubernetes_default() {
    let with_default = pod_spec(&running(serde_json::json!({"podIP": "192.0.2.7"}))).unwrap();
    assert_eq!(with_default.service_account, "default");
    let mut named = running(serde_json::json!({"podIP": "192.0.2.7"}));
    named.spec.as_mut().unwrap().service_account_name = Some("checkout".to_owned());
    assert_eq!(pod_spec(&named).unwrap().service_account, "checkout");
}

#[test]
fn the_workload_is_the_controller_a_replica_set_read_as_its_deployment() {
    let mut from_deployment = running(serde_json::json!({"podIP": "192.0.2.7"}));
    from_deployment.metadata.owner_references = Some(vec![serde_json::from_value(
        serde_json::json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7c9d8f6b5", "uid": "u", "controller": true}),
    )
    .unwrap()]);
    assert_eq!(
        pod_spec(&from_deployment).unwrap().workload_name,
        "checkout"
    );
    let mut stateful = running(serde_json::json!({"podIP": "192.0.2.7"}));
    stateful.metadata.owner_references = Some(vec![serde_json::from_value(
        serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}),
    )
    .unwrap()]);
    assert_eq!(pod_spec(&stateful).unwrap().workload_name, "db");
    let bare = pod_spec(&running(serde_json::json!({"podIP": "192.0.2.7"}))).unwrap();
    assert_eq!(bare.workload_name, "web");
}
