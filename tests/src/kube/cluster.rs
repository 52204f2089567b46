//! A one-node cluster for tests and the demo: the real API server with
//! `daemonset/` applied, this process playing the scheduler and the kubelet
//! (pods' sandboxes on a [`SimNode`], their status, the ConfigMap volume), and
//! the agent run as the DaemonSet's container runs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{ApiServer, ConfigMapVolume, NodeForward};
use crate::agent::{AgentOptions, AgentProcess, KubernetesSource};
use crate::pins::PinRoot;
use crate::support::sim_server;
use crate::{PodProcess, SimNode, SimPod, wait};

/// Where the DaemonSet's admin listener is (its probes' port).
pub const ADMIN: &str = "127.0.0.1:15000";
/// The namespace test pods live in.
pub const NAMESPACE: &str = "default";

/// A pod the cluster scheduled on the node, with its sandbox.
pub struct KubePod {
    pub sim: SimPod,
    pub processes: Vec<PodProcess>,
}

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub server: ApiServer,
    pub node_name: String,
}

/// The workspace's `daemonset/` kustomization.
pub fn daemonset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .join("daemonset")
}

impl Cluster {
    /// The API server started and `kubectl apply -k daemonset/` done.
    pub fn start(node: &SimNode) -> Result<Cluster> {
        let rt = tokio::runtime::Runtime::new()?;
        let server = rt.block_on(ApiServer::start())?;
        server.kubectl(&["apply", "-k", &daemonset_dir().to_string_lossy()])?;
        Ok(Cluster {
            rt,
            server,
            node_name: format!("node-{}", node.id()),
        })
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.server.client(), NAMESPACE)
    }

    /// The agent's config, as an operator edits it: the ConfigMap's `config.yaml`.
    pub fn set_config(&self, text: &str) -> Result<()> {
        let configmaps: Api<ConfigMap> = Api::namespaced(self.server.client(), "weir-system");
        let patch = json!({"data": {"config.yaml": text}});
        self.rt.block_on(configmaps.patch(
            "weir-config",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ))?;
        Ok(())
    }

    /// Creates the API object and the sandbox (no process in it yet); the
    /// status comes with [`Cluster::report_running`].
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

    /// What the kubelet reports once the sandbox runs.
    pub fn report_running(&self, pod: &KubePod) -> Result<()> {
        let status = json!({"status": {
            "phase": "Running",
            "qosClass": "BestEffort",
            "podIP": pod.sim.ip4.to_string(),
            "podIPs": [{"ip": pod.sim.ip4.to_string()}, {"ip": pod.sim.ip6.to_string()}],
        }});
        self.rt.block_on(self.pods().patch_status(
            &pod.sim.name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        ))?;
        Ok(())
    }

    /// A running pod; with `app`, an HTTP server on 8080 answering with the
    /// pod's name less `backend-`.
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
            let version = name.trim_start_matches("backend-");
            pod.processes.push(pod.sim.start_server(
                &sim_server(),
                &["http", version, "0.0.0.0:8080"],
                8080,
            )?);
        }
        self.report_running(&pod)?;
        Ok(pod)
    }

    /// `weir run` as the DaemonSet's container runs it: its args (the config
    /// path mapped to a ConfigMap volume this kubelet keeps in step with the
    /// API), its capabilities, its service account's token, the node's cgroup
    /// tree for the host's; the API reached over the node's own network.
    pub fn start_agent(
        &self,
        node: &SimNode,
        pins: &PinRoot,
        etc: &Path,
    ) -> Result<DaemonSetAgent> {
        let volume = ConfigMapVolume::new(etc)?;
        let config_file = volume.path("config.yaml");
        let configmaps: Api<ConfigMap> = Api::namespaced(self.server.client(), "weir-system");
        let following = {
            let _entered = self.rt.enter();
            volume.follow(configmaps, "weir-config")
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
                if a == "/etc/weir/config.yaml" {
                    config_file.to_string_lossy().into_owned()
                } else {
                    a
                }
            })
            .collect();
        anyhow::ensure!(
            run_args.iter().any(|a| a == "--kubernetes"),
            "the DaemonSet does not run weir with --kubernetes: {run_args:?}"
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
        let api: SocketAddr = self.server.url().trim_start_matches("https://").parse()?;
        let forward = {
            let _entered = self.rt.enter();
            NodeForward::start(node.router(), api)?
        };
        let kubeconfig = forward.rewrite_kubeconfig(&kubeconfig, &self.server.url())?;
        let options = AgentOptions {
            capabilities: Some(capabilities),
            kubernetes: Some(KubernetesSource {
                kubeconfig,
                node_name: self.node_name.clone(),
            }),
            env: vec![(
                "WEIR_CGROUP2_ROOT".to_owned(),
                node.cgroup_root().to_string_lossy().into_owned(),
            )],
            run_args: Some(run_args),
            admin: Some(ADMIN.parse()?),
            ..AgentOptions::default()
        };
        let agent = AgentProcess::start_with_options(node, "", "pods: []\n", pins.path(), options)?;
        Ok(DaemonSetAgent {
            agent,
            _following: following,
            _forward: forward,
        })
    }
}

/// The agent and what keeps its world running: the ConfigMap volume's sync
/// and the node's route to the API server.
pub struct DaemonSetAgent {
    pub agent: AgentProcess,
    _following: super::configmap_volume::Following,
    _forward: NodeForward,
}
