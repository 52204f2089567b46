//! Where `weir run` learns which pods are on its node: a pods file, or the
//! Kubernetes API. Both publish the same list of [`PodSpec`]s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pods::{KubernetesOptions, PodSpec, watch_node_pods, watch_pods_file};

use super::RunError;

/// How often the pods file is read besides when inotify says it changed.
const PODS_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub enum PodSource {
    /// A YAML pods file (docs/pods.md), read again when it changes.
    File(PathBuf),
    /// The pods the API server schedules on this node.
    Kubernetes(KubernetesOptions),
}

/// A started pod source: its latest list, and the task keeping it current.
pub(super) struct Started {
    pub(super) pods: watch::Receiver<Arc<Vec<PodSpec>>>,
    pub(super) task: JoinHandle<()>,
}

impl PodSource {
    /// Returns once the first complete list is known: a pods file that
    /// parses, or the API server's first list of the node's pods (waited for
    /// with back-off, so an agent started during an API outage comes up when
    /// the API does, and never enrols or prunes from an empty guess).
    pub(super) async fn start(&self) -> Result<Started, RunError> {
        match self {
            PodSource::File(path) => {
                let watch = watch_pods_file(path, PODS_POLL)?;
                Ok(Started {
                    pods: watch.pods,
                    task: watch.task,
                })
            }
            PodSource::Kubernetes(options) => {
                log::info!(
                    "Kubernetes API: listing pods on node {} ({})",
                    options.node_name,
                    options.kubeconfig.as_ref().map_or(
                        "in-cluster config".to_owned(),
                        |p| format!("kubeconfig {}", p.display())
                    )
                );
                let watch = watch_node_pods(options).await?;
                Ok(Started {
                    pods: watch.pods,
                    task: watch.task,
                })
            }
        }
    }
}
