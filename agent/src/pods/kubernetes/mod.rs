//! The Kubernetes pod source: the pods the API server has scheduled on this
//! node, as [`PodSpec`]s for the same enrolment the pods file feeds.
//!
//! A kube-rs watcher lists and watches `pods` with `spec.nodeName=<node>`; this
//! module mirrors them (a reflector of converted specs, so each event costs one
//! conversion) and publishes the list whenever it changes. A relist (after a
//! 410 Gone, or a restart of the watch) is buffered and swapped in whole when
//! complete, and while the API is unreachable the last known list stays
//! published: an outage never reads as "no pods". Lost and regained watches are
//! logged once per change, not per retry.
//!
//! A second watcher follows Namespaces: a namespace's `weir.dev/*`
//! annotations are defaults for its pods ([`namespaces`]), merged into each
//! published spec, so enrolment reads one set of annotations per pod.

mod convert;
mod health;
mod namespaces;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use convert::{NotEnrollable, pod_spec};

use super::policy::ANNOTATION_ENROLL;
use super::spec::PodSpec;
use health::WatchHealth;
use namespaces::NamespaceDefaults;

/// Where to find the API server and which node this agent serves.
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// The node's name, as in `spec.nodeName` (the DaemonSet passes it from
    /// the downward API as `NODE_NAME`).
    pub node_name: String,
    /// A kubeconfig file; `None`: in-cluster (the service account's token and
    /// CA, and the API server's address from `KUBERNETES_SERVICE_HOST`, an IP,
    /// so no DNS is needed).
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("the node name is empty; set NODE_NAME (downward API spec.nodeName) or --node-name")]
    NoNodeName,
    #[error("reading kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("in-cluster Kubernetes config: {0} (outside a cluster, pass --kubeconfig)")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("the {0} watch ended before its first complete list")]
    WatchEnded(&'static str),
}

/// A running watch of this node's pods.
#[derive(Debug)]
pub struct KubernetesPods {
    /// The node's pods as last listed and watched; changes only when they change.
    pub pods: watch::Receiver<Arc<Vec<PodSpec>>>,
    /// The watch task; it ends by itself once every `pods` receiver is dropped.
    pub task: JoinHandle<()>,
}

/// Connects, lists this node's pods (waiting, with back-off, until the API
/// server answers) and returns once the first complete list is published.
/// Must be called inside a tokio runtime.
pub async fn watch_node_pods(
    options: &KubernetesOptions,
) -> Result<KubernetesPods, KubernetesError> {
    if options.node_name.is_empty() {
        return Err(KubernetesError::NoNodeName);
    }
    let client = Client::try_from(client_config(options).await?)?;
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", options.node_name);
    let events = watcher(pods, watcher::Config::default().fields(&selector)).default_backoff();
    // Every namespace, since any may hold a pod of this node; only their
    // `weir.dev/` annotations are kept.
    let namespaces: Api<Namespace> = Api::all(client);
    let namespace_events = watcher(namespaces, watcher::Config::default()).default_backoff();
    let mut mirror = Mirror::new(
        options.node_name.clone(),
        Box::pin(events),
        Box::pin(namespace_events),
    );
    let initial = mirror.until_listed().await?;
    log::info!(
        "Kubernetes API: {} pod(s) on node {}, {} namespace(s) with weir.dev/ defaults",
        initial.len(),
        options.node_name,
        mirror.namespaces.len()
    );
    let (tx, pods) = watch::channel(Arc::new(initial));
    let task = tokio::spawn(mirror.run(tx));
    Ok(KubernetesPods { pods, task })
}

async fn client_config(options: &KubernetesOptions) -> Result<Config, KubernetesError> {
    match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubernetesError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| KubernetesError::Kubeconfig {
                    path: path.clone(),
                    source,
                })
        }
        None => Ok(Config::incluster_env()?),
    }
}

type Events<K = Pod> =
    std::pin::Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

/// The node's pods as the watch has shown them.
struct Mirror {
    node: String,
    events: Events,
    namespace_events: Events<Namespace>,
    /// Namespaces' defaults for their pods' annotations.
    namespaces: NamespaceDefaults,
    /// Enrollable pods by UID, with their own annotations only.
    pods: BTreeMap<String, PodSpec>,
    /// A relist in progress: swapped into `pods` when complete, with the
    /// UIDs it showed (so reasons of pods gone meanwhile are forgotten).
    relist: Option<(BTreeMap<String, PodSpec>, std::collections::HashSet<String>)>,
    /// Why each pod that asks to be enrolled is not handed over yet, by UID,
    /// so each reason is logged once.
    waiting: BTreeMap<String, NotEnrollable>,
    health: WatchHealth,
}

impl Mirror {
    fn new(node: String, events: Events, namespace_events: Events<Namespace>) -> Self {
        Self {
            node,
            events,
            namespace_events,
            namespaces: NamespaceDefaults::new(),
            pods: BTreeMap::new(),
            relist: None,
            waiting: BTreeMap::new(),
            health: WatchHealth::default(),
        }
    }

    /// Consumes events until the first complete list of both pods and
    /// namespaces: publishing pods before their namespaces' defaults are
    /// known would un-enrol, for a moment, every pod a namespace enrols
    /// (an agent restart must not).
    async fn until_listed(&mut self) -> Result<Vec<PodSpec>, KubernetesError> {
        let mut pods_listed = false;
        while !(pods_listed && self.namespaces.listed) {
            tokio::select! {
                item = self.events.next(), if !pods_listed => {
                    let item = item.ok_or(KubernetesError::WatchEnded("pod"))?;
                    pods_listed = self.apply(item) == Applied::Listed;
                }
                item = self.namespace_events.next(), if !self.namespaces.listed => {
                    let item = item.ok_or(KubernetesError::WatchEnded("namespace"))?;
                    self.namespaces.apply(item);
                }
            }
        }
        Ok(self.list())
    }

    async fn run(mut self, tx: watch::Sender<Arc<Vec<PodSpec>>>) {
        let mut namespaces_open = true;
        loop {
            let changed = tokio::select! {
                item = self.events.next() => {
                    let Some(item) = item else {
                        log::error!("Kubernetes API: the pod watch ended; keeping the last known pods");
                        return;
                    };
                    self.apply(item) != Applied::Nothing
                }
                item = self.namespace_events.next(), if namespaces_open => {
                    let Some(item) = item else {
                        log::error!("Kubernetes API: the namespace watch ended; keeping the last known namespace defaults");
                        namespaces_open = false;
                        continue;
                    };
                    self.namespaces.apply(item)
                }
                () = tx.closed() => return,
            };
            if changed {
                let pods = self.list();
                tx.send_if_modified(|current| {
                    let changed = **current != pods;
                    if changed {
                        *current = Arc::new(pods);
                    }
                    changed
                });
            }
        }
    }

    fn apply(&mut self, item: Result<watcher::Event<Pod>, watcher::Error>) -> Applied {
        let (node, known) = (&self.node, self.pods.len());
        let event = self.health.event(
            item,
            |e| {
                log::warn!(
                    "Kubernetes API: watching pods on node {node} failed: {e}; keeping the last known {known} pod(s) and retrying"
                );
            },
            || log::info!("Kubernetes API: watching pods on node {node} again"),
        );
        let Some(event) = event else {
            return Applied::Nothing;
        };
        match event {
            watcher::Event::Init => {
                self.relist = Some(Default::default());
                Applied::Nothing
            }
            watcher::Event::InitApply(pod) => {
                let converted = self.convert(&pod);
                if let Some((listed, seen)) = self.relist.as_mut() {
                    seen.extend(pod.metadata.uid.clone());
                    if let Some((uid, spec)) = converted {
                        listed.insert(uid, spec);
                    }
                }
                Applied::Nothing
            }
            watcher::Event::InitDone => {
                let (listed, seen) = self.relist.take().unwrap_or_default();
                self.pods = listed;
                let pods = &self.pods;
                self.waiting
                    .retain(|uid, _| seen.contains(uid) && !pods.contains_key(uid));
                Applied::Listed
            }
            watcher::Event::Apply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                match self.convert(&pod) {
                    Some((uid, spec)) => self.pods.insert(uid, spec),
                    None => self.pods.remove(&uid),
                };
                Applied::Changed
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = &pod.metadata.uid {
                    self.pods.remove(uid);
                    self.waiting.remove(uid);
                }
                Applied::Changed
            }
        }
    }

    /// The pod's spec when it can be enrolled; otherwise `None`, and the
    /// reason logged once if the pod asks to be enrolled.
    fn convert(&mut self, pod: &Pod) -> Option<(String, PodSpec)> {
        match pod_spec(pod) {
            Ok(spec) => {
                if self.waiting.remove(&spec.uid).is_some() {
                    log::info!(
                        "pod {}: sandbox ready at {:?}",
                        spec.qualified_name(),
                        spec.ips
                    );
                }
                Some((spec.uid.clone(), spec))
            }
            Err(why) => {
                let meta = &pod.metadata;
                let asks = self.namespaces.effective(
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.annotations.as_ref(),
                    ANNOTATION_ENROLL,
                ) == Some("true");
                if let (true, Some(uid)) = (asks, &meta.uid)
                    && self.waiting.get(uid) != Some(&why)
                {
                    log::info!(
                        "pod {}/{}: not enrolled yet: {why}",
                        meta.namespace.as_deref().unwrap_or_default(),
                        meta.name.as_deref().unwrap_or_default()
                    );
                    self.waiting.insert(uid.clone(), why);
                }
                None
            }
        }
    }

    /// The pods with their namespaces' defaults merged in.
    fn list(&self) -> Vec<PodSpec> {
        self.pods
            .values()
            .map(|pod| self.namespaces.inherit(pod))
            .collect()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Nothing,
    Changed,
    Listed,
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
