//! The test API server itself: real objects, field selectors, RBAC through a
//! service account's TokenRequest token, an outage and a restart on the same
//! port, and the kubelet stand-in for ConfigMap volumes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, core::ObjectMeta};
use serde_json::json;
use weir_tests::kube::{ApiServer, ConfigMapVolume, client_from_kubeconfig};

const NS: &str = "harness";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_serves_pods_rbac_restarts_and_configmap_volumes() -> Result<()> {
    let mut server = ApiServer::start().await?;
    let admin = server.client();
    create(Api::all(admin.clone()), namespace(NS)).await?;
    for (name, node) in [("a", "node-a"), ("b", "node-b")] {
        create(Api::namespaced(admin.clone(), NS), pod(name, node)).await?;
    }
    ensure!(pods_on(&admin, "node-a").await? == ["a"]);

    // kubectl (the user's tool) reads the same objects through the admin kubeconfig.
    let listed = server.kubectl(&["get", "pods", "-n", NS, "-o", "name"])?;
    ensure!(
        listed.lines().collect::<Vec<_>>() == ["pod/a", "pod/b"],
        "{listed}"
    );

    service_account_sees_only_what_rbac_grants(&server).await?;

    server.stop_apiserver();
    let down = tokio::time::timeout(Duration::from_secs(10), pods_on(&admin, "node-a")).await;
    ensure!(!matches!(down, Ok(Ok(_))), "the API answered while stopped");
    server.start_apiserver().await?;
    // Same port, certificates and storage: the old client and objects carry on.
    ensure!(pods_on(&admin, "node-b").await? == ["b"]);

    configmap_updates_reach_the_volume_atomically(&admin).await
}

async fn service_account_sees_only_what_rbac_grants(server: &ApiServer) -> Result<()> {
    let admin = server.client();
    create(
        Api::namespaced(admin.clone(), NS),
        service_account("reader"),
    )
    .await?;
    let kubeconfig = server.service_account_kubeconfig(NS, "reader").await?;
    let reader = client_from_kubeconfig(&kubeconfig).await?;
    let pods: Api<Pod> = Api::all(reader.clone());
    ensure!(
        forbidden(pods.list(&ListParams::default()).await),
        "the account listed pods before any role allowed it"
    );

    create(Api::all(admin.clone()), pod_reader_role()).await?;
    create(Api::all(admin.clone()), binding("reader")).await?;
    // RBAC reads bindings from an informer: a new one applies a moment later.
    let allowed = weir_tests::wait::until_async(Duration::from_secs(20), || async {
        pods.list(&ListParams::default().fields("spec.nodeName=node-a"))
            .await
            .is_ok_and(|list| list.items.len() == 1)
    })
    .await;
    ensure!(allowed, "the bound account could not list pods");
    let secrets: Api<Secret> = Api::namespaced(reader, NS);
    ensure!(
        forbidden(secrets.list(&ListParams::default()).await),
        "the pod reader listed secrets"
    );
    Ok(())
}

async fn configmap_updates_reach_the_volume_atomically(admin: &Client) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("weir-cm-volume-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(&dir);
    let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    maps.create(&PostParams::default(), &config_map("one"))
        .await?;
    let volume = ConfigMapVolume::new(&dir)?;
    let file = volume.path("config.yaml");
    let _following = volume.follow(maps.clone(), "weir-config");
    let reads = |want: &'static str| {
        let file = file.clone();
        move || std::fs::read_to_string(&file).is_ok_and(|s| s == want)
    };
    ensure!(weir_tests::wait::until(
        Duration::from_secs(20),
        reads("one")
    ));
    let first = std::fs::read_link(dir.join("..data"))?;

    let mut update = config_map("two");
    update.metadata.resource_version = maps.get("weir-config").await?.metadata.resource_version;
    maps.replace("weir-config", &PostParams::default(), &update)
        .await?;
    ensure!(weir_tests::wait::until(
        Duration::from_secs(20),
        reads("two")
    ));
    // The kubelet's layout: the key links into ..data, which a rename moved to a
    // new payload directory; the old one is gone.
    ensure!(std::fs::read_link(&file)? == Path::new("..data/config.yaml"));
    let second = std::fs::read_link(dir.join("..data"))?;
    ensure!(second != first && !dir.join(&first).exists());
    ensure!(second.to_string_lossy().starts_with(".."));
    Ok(())
}

async fn pods_on(client: &Client, node: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={node}");
    let list = pods.list(&ListParams::default().fields(&selector)).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect())
}

fn forbidden<T>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

async fn create<K>(api: Api<K>, object: K) -> Result<()>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
{
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {object:?}"))?;
    Ok(())
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: meta(name),
        ..Default::default()
    }
}

fn service_account(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name),
        ..Default::default()
    }
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
    }))
    .expect("a valid Pod")
}

fn pod_reader_role() -> ClusterRole {
    serde_json::from_value(json!({
        "metadata": {"name": "harness-pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }))
    .expect("a valid ClusterRole")
}

fn binding(account: &str) -> ClusterRoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": "harness-pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "harness-pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NS}],
    }))
    .expect("a valid ClusterRoleBinding")
}

fn config_map(content: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta("weir-config"),
        data: Some(BTreeMap::from([("config.yaml".into(), content.into())])),
        ..Default::default()
    }
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}
