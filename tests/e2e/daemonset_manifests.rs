//! `daemonset/` and `daemonset/uninstall/` against a real API server: kubectl's
//! server-side dry run and a real apply validate every object, and the objects
//! read back hold what the agent needs and no more: its capabilities, its
//! config's ports in the probes and scrape annotations, and a service account
//! that may read pods and nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use weir_tests::agent::weir_bin;
use weir_tests::kube::{ApiServer, client_from_kubeconfig};

const NS: &str = "weir-system";

fn manifests(dir: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../daemonset")
        .join(dir)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_validate_on_a_real_server_and_grant_only_what_weir_needs() -> Result<()> {
    let server = ApiServer::start().await?;
    let base = manifests("");
    let uninstall = manifests("uninstall");

    // A dry run creates nothing, so the namespaced objects need their namespace
    // to exist first: the one object applied ahead.
    server.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &format!("{base}/namespace.yaml"),
    ])?;
    let base_file = server.rendered_for_this_server(Path::new(&base))?;
    let base_file = base_file.to_string_lossy().into_owned();
    server.kubectl(&[
        "apply",
        "-f",
        &base_file,
        "--server-side",
        "--dry-run=server",
    ])?;
    server.kubectl(&[
        "apply",
        "-k",
        &uninstall,
        "--server-side",
        "--dry-run=server",
    ])?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(server.client(), NS);
    ensure!(
        daemonsets.get_opt("weir").await?.is_none(),
        "the dry run created the DaemonSet"
    );
    server.kubectl(&["apply", "-f", &base_file, "--server-side"])?;
    server.kubectl(&["apply", "-k", &uninstall, "--server-side"])?;

    let config = agent_config(&server.client()).await?;
    let agent = daemonsets.get("weir").await?;
    let pod = pod_spec(&agent)?;
    let container = only_container(&pod.containers)?;
    check_agent_container(container, &config)?;
    check_agent_pod(&agent, pod, &config)?;

    let cleaner = daemonsets.get("weir-uninstall").await?;
    check_uninstall(pod_spec(&cleaner)?)?;

    service_account_reads_pods_only(&server).await
}

/// The ConfigMap's config as the API holds it, written to a file that the
/// real `weir check-config` accepts.
struct AgentConfig {
    admin_port: u16,
    stats_port: u16,
}

async fn agent_config(client: &Client) -> Result<AgentConfig> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let text = maps
        .get("weir-config")
        .await?
        .data
        .and_then(|mut data| data.remove("config.yaml"))
        .context("ConfigMap weir-config has no config.yaml")?;
    let file =
        std::env::temp_dir().join(format!("weir-daemonset-config-{}.yaml", std::process::id()));
    std::fs::write(&file, &text)?;
    let checked = Command::new(weir_bin()?)
        .arg("check-config")
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let checked = checked?;
    ensure!(
        checked.status.success(),
        "weir check-config refused the ConfigMap's config: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let config = weir::config::parse_str(&text, "weir-config")?;
    let admin = config
        .admin
        .context("the config has no admin listener")?
        .address;
    // The kubelet probes 127.0.0.1 on the node; admin must listen there and only there.
    ensure!(admin.ip().is_loopback(), "admin listens on {admin}");
    let stats = config
        .stats
        .context("the config has no stats listener")?
        .address;
    Ok(AgentConfig {
        admin_port: admin.port(),
        stats_port: stats.port(),
    })
}

fn pod_spec(daemonset: &DaemonSet) -> Result<&PodSpec> {
    daemonset
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .context("DaemonSet without a pod template")
}

fn only_container(containers: &[Container]) -> Result<&Container> {
    match containers {
        [one] => Ok(one),
        _ => anyhow::bail!("expected one container, found {}", containers.len()),
    }
}

fn check_agent_container(container: &Container, config: &AgentConfig) -> Result<()> {
    check_least_privilege(container, &agent_capabilities())?;
    let args = container.args.clone().unwrap_or_default();
    ensure!(
        args == ["run", "--kubernetes", "--config", "/etc/weir/config.yaml"],
        "{args:?}"
    );
    let env = container.env.as_deref().unwrap_or_default();
    let node_name = env
        .iter()
        .find(|var| var.name == "NODE_NAME")
        .and_then(|var| var.value_from.as_ref()?.field_ref.as_ref())
        .map(|field| field.field_path.as_str());
    ensure!(
        node_name == Some("spec.nodeName"),
        "NODE_NAME from {node_name:?}"
    );

    for (kind, probe) in [
        ("readiness", &container.readiness_probe),
        ("liveness", &container.liveness_probe),
        ("startup", &container.startup_probe),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .with_context(|| format!("no {kind} httpGet probe"))?;
        ensure!(get.path.as_deref() == Some("/ready"), "{kind}: {get:?}");
        ensure!(get.host.as_deref() == Some("127.0.0.1"), "{kind}: {get:?}");
        ensure!(
            get.port == IntOrString::Int(config.admin_port.into()),
            "{kind} probes port {:?}, the config's admin port is {}",
            get.port,
            config.admin_port
        );
    }
    let metrics = container
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|port| port.name.as_deref() == Some("metrics"))
        .context("no metrics port")?;
    ensure!(metrics.container_port == i32::from(config.stats_port));

    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mount = |path: &str| mounts.iter().find(|m| m.mount_path == path);
    let bpffs = mount("/sys/fs/bpf").context("no bpffs mount")?;
    ensure!(
        bpffs.read_only != Some(true),
        "bpffs must be writable for pins"
    );
    let cgroup_root = env
        .iter()
        .find(|var| var.name == "WEIR_CGROUP2_ROOT")
        .and_then(|var| var.value.as_deref())
        .context("no WEIR_CGROUP2_ROOT")?;
    let cgroup = mount(cgroup_root).context("WEIR_CGROUP2_ROOT is not a mount")?;
    ensure!(cgroup.read_only == Some(true));
    Ok(())
}

/// Not privileged, every capability dropped and exactly `required` added back.
fn check_least_privilege(container: &Container, required: &[String]) -> Result<()> {
    let security = container
        .security_context
        .as_ref()
        .with_context(|| format!("{}: no securityContext", container.name))?;
    ensure!(
        security.privileged == Some(false),
        "{}: privileged",
        container.name
    );
    ensure!(security.allow_privilege_escalation == Some(false));
    ensure!(security.read_only_root_filesystem == Some(true));
    let caps = security.capabilities.clone().unwrap_or_default();
    ensure!(
        caps.drop.as_deref() == Some(&["ALL".to_owned()][..]),
        "{caps:?}"
    );
    let mut added = caps.add.unwrap_or_default();
    added.sort();
    let mut required = required.to_vec();
    required.sort();
    ensure!(
        added == required,
        "{}: capabilities.add {added:?}, the agent requires {required:?}",
        container.name
    );
    Ok(())
}

/// What the agent declares it needs (`weir capabilities`), in the manifest's
/// spelling: `CAP_BPF` is `BPF`.
fn agent_capabilities() -> Vec<String> {
    weir::privilege::REQUIRED
        .iter()
        .map(|r| {
            let name = r.capability.to_string();
            name.strip_prefix("CAP_").unwrap_or(&name).to_owned()
        })
        .collect()
}

fn check_agent_pod(daemonset: &DaemonSet, pod: &PodSpec, config: &AgentConfig) -> Result<()> {
    ensure!(pod.host_network == Some(true) && pod.host_pid == Some(true));
    ensure!(pod.priority_class_name.as_deref() == Some("system-node-critical"));
    ensure!(pod.service_account_name.as_deref() == Some("weir"));
    let tolerates_all = pod
        .tolerations
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none());
    ensure!(tolerates_all, "does not tolerate every taint");
    let strategy = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref());
    ensure!(strategy == Some("RollingUpdate"));

    let annotations = daemonset
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    let annotation = |key: &str| annotations.get(key).map(String::as_str);
    ensure!(annotation("prometheus.io/scrape") == Some("true"));
    ensure!(annotation("prometheus.io/path") == Some("/stats/prometheus"));
    ensure!(
        annotation("prometheus.io/port") == Some(config.stats_port.to_string().as_str()),
        "scrape port {:?}, the config's stats port is {}",
        annotation("prometheus.io/port"),
        config.stats_port
    );
    Ok(())
}

/// `weir uninstall` (then `--wait`) with the host's bpffs and no capability:
/// removing pins is unlinking files user 0 owns.
fn check_uninstall(pod: &PodSpec) -> Result<()> {
    ensure!(pod.host_pid != Some(true) && pod.host_network != Some(true));
    ensure!(pod.automount_service_account_token == Some(false));
    let init = only_container(pod.init_containers.as_deref().unwrap_or_default())?;
    let wait = only_container(&pod.containers)?;
    for (container, args) in [(init, &["uninstall"][..]), (wait, &["uninstall", "--wait"])] {
        ensure!(
            container.args.as_deref().unwrap_or_default() == args,
            "{}: {:?}",
            container.name,
            container.args
        );
        check_least_privilege(container, &[])?;
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        let paths: Vec<_> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        ensure!(
            paths == ["/sys/fs/bpf"],
            "{}: mounts {paths:?}",
            container.name
        );
    }
    Ok(())
}

/// The manifests' ServiceAccount, with a token as its pods get one: it lists and
/// watches the pods of one node cluster-wide, and can do nothing else.
async fn service_account_reads_pods_only(server: &ApiServer) -> Result<()> {
    let admin: Api<Pod> = Api::namespaced(server.client(), "default");
    admin
        .create(&PostParams::default(), &pod("app", "node-x"))
        .await?;
    admin
        .create(&PostParams::default(), &pod("other", "node-y"))
        .await?;

    let kubeconfig: PathBuf = server.service_account_kubeconfig(NS, "weir").await?;
    let weir = client_from_kubeconfig(&kubeconfig).await?;
    let pods: Api<Pod> = Api::all(weir.clone());
    let on_node = "spec.nodeName=node-x";
    let listed = pods.list(&ListParams::default().fields(on_node)).await?;
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ensure!(names == ["app"], "{names:?}");

    // From resourceVersion 0 a watch starts with the current pods as ADDED.
    let mut events = pods
        .watch(&WatchParams::default().fields(on_node), "0")
        .await?
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .context("no watch event")?
        .context("watch ended")??;
    ensure!(
        matches!(&first, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("app")),
        "{first:?}"
    );

    let in_default: Api<Pod> = Api::namespaced(weir.clone(), "default");
    ensure!(forbidden(
        in_default
            .create(&PostParams::default(), &pod("mine", "node-x"))
            .await
    ));
    ensure!(forbidden(
        in_default.delete("app", &DeleteParams::default()).await
    ));
    let secrets: Api<Secret> = Api::all(weir.clone());
    ensure!(forbidden(secrets.list(&ListParams::default()).await));
    let own_secrets: Api<Secret> = Api::namespaced(weir, NS);
    ensure!(forbidden(own_secrets.list(&ListParams::default()).await));
    Ok(())
}

fn forbidden<T: std::fmt::Debug>(result: kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
    }))
    .expect("a valid Pod")
}
