//! A one-node cluster for the Kubernetes end-to-end test and the enrolment
//! benchmark: a real API server with `daemonset/` applied, the simulated node
//! as the only node, this process as its kubelet (API objects on the node, a
//! sandbox per pod named after the API's UID, the status the kubelet
//! reports), and the agent run as the DaemonSet's container runs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::configmap_volume::Following;
use super::{ApiServer, ConfigMapVolume, NodeForward};
use crate::agent::{AgentOptions, AgentProcess, KubernetesSource};
use crate::pins::PinRoot;
use crate::support::sim_server;
use crate::{PodProcess, SimNode, SimPod, wait};

/// The namespace the pods are created in.
pub const NAMESPACE: &str = "default";
/// The agent's admin address, as the DaemonSet's config names it (in the
/// node's namespace).
pub const ADMIN: &str = "127.0.0.1:15000";
const CONFIG_PATH_IN_IMAGE: &str = "/etc/weir/config.yaml";

/// What the kubelet and the scheduler would do for one pod: the API object
/// on this node, its sandbox (netns + cgroup named after the API's UID), and
/// the processes in it.
pub struct KubePod {
    pub sim: SimPod,
    pub processes: Vec<PodProcess>,
}

/// The API server (with `kubectl apply -k daemonset/` done) and the name of
/// the one node.
pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub server: ApiServer,
    pub node_name: String,
}

impl Cluster {
    /// Starts the API server and applies the DaemonSet's kustomize base.
    pub fn start(node: &SimNode) -> Result<Cluster> {
        let rt = tokio::runtime::Runtime::new()?;
        let server = rt.block_on(ApiServer::start())?;
        let cluster = Cluster {
            node_name: format!("node-{}", node.id()),
            rt,
            server,
        };
        let base = cluster.server.rendered_for_this_server(&daemonset_dir())?;
        cluster
            .server
            .kubectl(&["apply", "-f", &base.to_string_lossy()])?;
        Ok(cluster)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.server.client(), NAMESPACE)
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.server.client(), "weir-system")
    }

    /// The agent's config, as an operator edits it: the ConfigMap's `config.yaml`.
    pub fn set_config(&self, text: String) -> Result<()> {
        let patch = json!({"data": {"config.yaml": text}});
        self.rt.block_on(self.configmaps().patch(
            "weir-config",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))?;
        Ok(())
    }

    /// Creates the API object and the sandbox (no process in it yet); the
    /// status is reported by [`Cluster::report_running`].
    pub fn create_pod(&self, node: &SimNode, name: &str, enroll: bool) -> Result<KubePod> {
        let annotations = if enroll {
            json!({"weir.dev/enroll": "true"})
        } else {
            json!({})
        };
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
            "spec": {
                "nodeName": self.node_name,
                "containers": [{"name": "app", "image": "sim-server"}],
            },
        }))?;
        let created = self
            .rt
            .block_on(self.pods().create(&PostParams::default(), &pod))?;
        let uid = created.metadata.uid.context("the API gives a uid")?;
        Ok(KubePod {
            sim: node.add_pod_with_uid(name, &uid)?,
            processes: Vec::new(),
        })
    }

    /// Reports the pod running with its addresses, as the kubelet does;
    /// returns once the API server has acknowledged the patch.
    pub fn report_running(&self, pod: &SimPod) -> Result<()> {
        self.rt.block_on(report_running(&self.pods(), pod))
    }

    /// A pod made and reported running: its pause process, and when `app`,
    /// `sim-server http <name without backend-> 0.0.0.0:8080`.
    pub fn start_pod(
        &self,
        node: &SimNode,
        name: &str,
        enroll: bool,
        app: bool,
    ) -> Result<KubePod> {
        let mut pod = self.create_pod(node, name, enroll)?;
        pod.processes.push(pod.sim.start_pause()?);
        if app {
            pod.processes.push(pod.sim.start_server(
                &sim_server(),
                &["http", name.trim_start_matches("backend-"), "0.0.0.0:8080"],
                8080,
            )?);
        }
        self.report_running(&pod.sim)?;
        Ok(pod)
    }

    /// Runs `weir` on `node` as the DaemonSet's container does: its args
    /// (the config path mapped to a ConfigMap volume this process keeps in
    /// sync, holding `config` once started), its capabilities, its service
    /// account's token, the API reached over the node's own network; and
    /// waits until it is ready.
    pub fn run_agent(&self, node: &SimNode, config: String) -> Result<DaemonSetAgent> {
        self.set_config(config)?;
        let pins = PinRoot::new();
        let etc =
            std::env::temp_dir().join(format!("weir-k8s-{}-{}-etc", std::process::id(), node.id()));
        let volume_dir = RemoveDir(etc.clone());
        let volume = ConfigMapVolume::new(&etc)?;
        let config_file = volume.path("config.yaml");
        let following = {
            let _entered = self.rt.enter();
            volume.follow(self.configmaps(), "weir-config")
        };
        anyhow::ensure!(
            wait::until(Duration::from_secs(10), || config_file.exists()),
            "the ConfigMap volume was not written"
        );

        let daemonset = self.rt.block_on(
            Api::<DaemonSet>::namespaced(self.server.client(), "weir-system").get("weir"),
        )?;
        let container = daemonset
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .context("the DaemonSet has a container")?;
        let run_args: Vec<String> = container
            .args
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                if a == CONFIG_PATH_IN_IMAGE {
                    config_file.to_string_lossy().into_owned()
                } else {
                    a
                }
            })
            .collect();
        anyhow::ensure!(
            run_args.contains(&"--kubernetes".to_owned()),
            "the DaemonSet's args lack --kubernetes: {run_args:?}"
        );
        let capabilities: Vec<String> = container
            .security_context
            .and_then(|s| s.capabilities)
            .and_then(|c| c.add)
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_lowercase())
            .collect();
        let kubeconfig = self.rt.block_on(
            self.server
                .service_account_kubeconfig("weir-system", "weir"),
        )?;
        // The node reaches the API server over its own network.
        let api_addr: SocketAddr = self.server.url().trim_start_matches("https://").parse()?;
        let forward = {
            let _entered = self.rt.enter();
            NodeForward::start(node.router(), api_addr)?
        };
        let kubeconfig = forward.rewrite_kubeconfig(&kubeconfig, &self.server.url())?;
        let options = AgentOptions {
            capabilities: Some(capabilities),
            kubernetes: Some(KubernetesSource {
                kubeconfig,
                node_name: self.node_name.clone(),
            }),
            // The node's cgroup tree, where the DaemonSet mounts the host's.
            env: vec![(
                "WEIR_CGROUP2_ROOT".to_owned(),
                node.cgroup_root().to_string_lossy().into_owned(),
            )],
            run_args: Some(run_args),
            admin: Some(ADMIN.parse()?),
            ..AgentOptions::default()
        };
        let agent = AgentProcess::start_with_options(node, "", "pods: []\n", pins.path(), options)?;
        agent.wait_ready(node, Duration::from_secs(60))?;
        Ok(DaemonSetAgent {
            agent,
            _following: following,
            _forward: forward,
            _volume_dir: volume_dir,
            _pins: pins,
        })
    }
}

/// [`Cluster::report_running`] for callers already in the runtime (many
/// patches at once).
pub async fn report_running(pods: &Api<Pod>, pod: &SimPod) -> Result<()> {
    let status = json!({"status": {
        "phase": "Running",
        "qosClass": "BestEffort",
        "podIP": pod.ip4.to_string(),
        "podIPs": [{"ip": pod.ip4.to_string()}, {"ip": pod.ip6.to_string()}],
    }});
    pods.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("reporting pod {} running", pod.name))?;
    Ok(())
}

/// The agent of [`Cluster::run_agent`] and what it runs on.
pub struct DaemonSetAgent {
    // Dropped in this order: the agent first, while its API path, config
    // and pins are still there.
    pub agent: AgentProcess,
    _following: Following,
    _forward: NodeForward,
    _volume_dir: RemoveDir,
    _pins: PinRoot,
}

fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .join("daemonset")
}

/// Removes a directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
