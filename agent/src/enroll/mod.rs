//! Enrollment: turning the desired set of pods into data-path state and
//! in-pod listeners, and back. The pod source (a pods file or the
//! Kubernetes API) feeds [`Enroller::reconcile`]; the proxy receives the
//! intercepted connections through [`Intercept`].

mod accept;
mod budget;
mod bypass;
mod cpu;
mod egress;
mod pod;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};

use crate::addr::OrigDst;
use crate::datapath::{Datapath, DatapathError, OrigDstTable, Pruned};
use crate::inpod::{PodSocketFactory, SocketFactory};
use crate::pods::{InboundPorts, PodSpec, Workload};
use crate::proxy::upstream::egress::{Egress, MakingSocket, SocketMaker};

pub use budget::{ConnPermit, NodeBudget, PodBudget, RESERVED_DESCRIPTORS, Refusal, RequestPermit};
pub use cpu::{CpuCounters, CpuShare};
pub use egress::{EgressInputs, egress_plan, system_dns_servers};
pub use pod::{EnrollError, EnrolledPod};

/// Who a connection belongs to, for routing decisions and metrics.
#[derive(Debug)]
pub struct PodContext {
    /// Shared, not copied, by every connection's metrics labels.
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub uid: String,
    sockets: Arc<PodSocketFactory>,
    /// Where the pod's upstream connections leave from: its own network
    /// namespace (sockets from `sockets`), pooled for it alone; closed when
    /// the pod is un-enrolled.
    pub egress: Egress,
    /// Who it runs as (its mesh identity), also the tag of `egress`.
    pub workload: Workload,
    /// Its workload's name (its controller), for metrics.
    pub workload_name: Arc<str>,
    /// The pod's share of the proxy for the connections it makes...
    outbound: Arc<PodBudget>,
    /// ...and for connections to it.
    inbound: Arc<PodBudget>,
    /// The proxy CPU its connections may use, both ways.
    pub cpu: Arc<CpuShare>,
}

impl PodContext {
    /// A place for one more HTTP request the pod sends through the proxy,
    /// or why not (`weir.dev/max-requests`).
    pub fn admit_outbound_request(&self) -> Result<RequestPermit, Refusal> {
        self.outbound.admit_request()
    }

    /// Fires when the pod's idle outbound connections should close.
    pub fn outbound_shed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbound.shed_watch()
    }

    /// Connects to the pod's application at `app` from the proxy's reserved
    /// source address (127.0.0.6 or ::6), which the inbound steering passes.
    pub async fn connect_app(&self, app: SocketAddr) -> std::io::Result<TcpStream> {
        let source: SocketAddr = match app {
            SocketAddr::V4(_) => (weir_common::PROXY_INBOUND_SOURCE_V4, 0).into(),
            SocketAddr::V6(_) => (weir_common::PROXY_INBOUND_SOURCE_V6, 0).into(),
        };
        let socket = self.sockets.socket(source).await?;
        let std_stream: std::net::TcpStream = socket.into();
        tokio::net::TcpSocket::from_std_stream(std_stream)
            .connect(app)
            .await
    }
}

/// The pod's upstream sockets, made inside its network namespace by the
/// socket factory thread (the engine's [`SocketMaker`] for its [`Egress`]).
/// Loopback destinations are the agent's own: the proxy config is the
/// node's, so a cluster endpoint on 127.0.0.1 names something beside the
/// agent, not the pod's loopback (which the pod's own connections to
/// loopback reach without weir: the connect hooks leave them alone).
struct PodSockets(Arc<PodSocketFactory>);

impl SocketMaker for PodSockets {
    fn socket(&self, remote: SocketAddr) -> MakingSocket<'_> {
        Box::pin(async move {
            if remote.ip().to_canonical().is_loopback() {
                return match remote {
                    SocketAddr::V4(_) => TcpSocket::new_v4(),
                    SocketAddr::V6(_) => TcpSocket::new_v6(),
                };
            }
            let socket = self.0.socket_for(remote).await?;
            Ok(TcpSocket::from_std_stream(socket.into()))
        })
    }
}

impl PodContext {
    /// The egress of pod `spec` whose sockets `sockets` makes, tagged
    /// with its [`Workload`] for whatever connects for it (the mesh tunnel
    /// presents that workload's identity).
    fn egress_for(spec: &PodSpec, sockets: &Arc<PodSocketFactory>) -> Egress {
        Egress::tagged(
            spec.qualified_name(),
            PodSockets(Arc::clone(sockets)),
            Some(Box::new(spec.workload())),
        )
    }
}

/// A connection an enrolled pod's application made, redirected to the proxy.
pub struct OutboundConn {
    pub stream: TcpStream,
    /// Where the application was connecting.
    pub orig_dst: OrigDst,
    pub pod: Arc<PodContext>,
    /// The connection's place in the pod's budget: keep it while serving.
    pub permit: ConnPermit,
}

/// A connection to an enrolled pod's port, steered to the proxy.
pub struct InboundConn {
    pub stream: TcpStream,
    /// The pod address and port the client connected to.
    pub dst: SocketAddr,
    pub peer: SocketAddr,
    pub pod: Arc<PodContext>,
    /// The connection's place in the pod's budget: keep it while serving.
    pub permit: ConnPermit,
}

/// Which way an intercepted connection goes, from the pod's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// The pod connected out.
    Outbound,
    /// Something connected to the pod.
    Inbound,
}

impl Way {
    pub fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// What the proxy does with intercepted connections. Implementations spawn
/// their own tasks and must never block the caller.
pub trait Intercept: Send + Sync + 'static {
    fn outbound(&self, conn: OutboundConn);
    fn inbound(&self, conn: InboundConn);

    /// `pod` is enrolled at `ips` with inbound interception on `ports`: the
    /// proxy may deliver to it straight from its outbound side (same-node
    /// delivery). Kept while the pod stays enrolled with these ports;
    /// dropping the returned value withdraws it.
    fn local_pod(
        &self,
        _pod: &Arc<PodContext>,
        _ips: &[IpAddr],
        _ports: &InboundPorts,
    ) -> Option<LocalPodGuard> {
        None
    }

    /// A port every enrolled pod steers to the proxy whatever its
    /// `weir.dev/inbound-ports` lists: the mesh tunnel's far end (15008),
    /// when the proxy has the mesh.
    fn tunnel_port(&self) -> Option<u16> {
        None
    }

    /// Whether outbound traffic no listener claims may pass (`ALLOW_ANY`):
    /// decides what happens to a pod's bypassed connections by default.
    fn allows_any_destination(&self) -> bool {
        true
    }

    /// `pod` made `connections` directly, outside the mesh, while no agent
    /// served it; `reset` of them were reset now that one does.
    fn bypassed(&self, _pod: &PodContext, _connections: u64, _reset: u64) {}

    /// A connection `way` of `pod` was reset, over its budget.
    fn refused(&self, _pod: &PodContext, _way: Way, _reason: Refusal) {}

    /// Where the CPU `pod`'s own work takes is counted, for its work that
    /// is not one connection's (its accept loop).
    fn cpu_counters(&self, _pod: &PodContext) -> Option<CpuCounters> {
        None
    }

    /// What `pod`'s connections the kernel let go direct or refused did
    /// since last reported (`flow.counts` is the growth).
    fn direct(&self, _pod: &PodContext, _flow: &crate::datapath::Flow) {}
}

/// Whatever an [`Intercept`] keeps for a pod enrolled on this node.
pub type LocalPodGuard = Box<dyn std::any::Any + Send + Sync>;

/// The proxy's worker threads (of the runtime enrolment runs on).
fn workers() -> usize {
    tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers())
}

/// The node's enrolled pods, by uid.
pub struct Enroller {
    datapath: Datapath,
    node_budget: Arc<NodeBudget>,
    orig_dst: Arc<OrigDstTable>,
    intercept: Arc<dyn Intercept>,
    cgroup2_root: PathBuf,
    pods: HashMap<String, EnrolledPod>,
    flow_totals: egress::FlowTotals,
}

/// What one reconciliation did, for logs and tests.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub enrolled: Vec<String>,
    /// Uids of the pods enrolled (listeners of this agent's now in the maps).
    pub enrolled_uids: Vec<String>,
    pub updated: Vec<String>,
    pub unenrolled: Vec<String>,
    /// Pods that should be enrolled but could not be, with why.
    pub failed: Vec<(String, String)>,
}

impl Enroller {
    pub fn new(datapath: Datapath, intercept: Arc<dyn Intercept>, cgroup2_root: PathBuf) -> Self {
        // Started now, by the thread that enrols (it holds what the factory
        // keeps), rather than with the first pod: what the agent holds with
        // no pod is then what it holds again once the last pod is gone.
        // Tried again at the next enrolment if it fails.
        if let Err(e) = SocketFactory::node() {
            log::warn!("starting the socket factory: {e}");
        }
        let orig_dst = datapath.orig_dst_table();
        let descriptors =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft);
        Self {
            datapath,
            node_budget: Arc::new(NodeBudget::for_descriptors(descriptors).with_workers(workers())),
            orig_dst,
            intercept,
            cgroup2_root,
            pods: HashMap::new(),
            flow_totals: egress::FlowTotals::default(),
        }
    }

    /// Brings the enrolled set in line with `desired`: enrolls new pods that
    /// ask for it, applies changed annotations, un-enrolls the rest. A pod that
    /// fails is reported and skipped; the others proceed.
    pub fn reconcile(&mut self, desired: &[PodSpec]) -> Reconciled {
        let mut result = Reconciled::default();
        let mut wanted = HashSet::new();
        for spec in desired {
            let label = format!("{}/{}", spec.namespace, spec.name);
            let policy = match spec.policy() {
                Ok(policy) if policy.enroll => policy,
                Ok(_) => continue,
                Err(e) => {
                    // Refused like an invalid config: an enrolled pod keeps
                    // serving with its last valid annotations.
                    if self.pods.contains_key(&spec.uid) {
                        wanted.insert(spec.uid.clone());
                    }
                    result.failed.push((label, e.to_string()));
                    continue;
                }
            };
            wanted.insert(spec.uid.clone());
            let outcome = match self.pods.get_mut(&spec.uid) {
                Some(enrolled) if enrolled.same_placement(spec) => {
                    if enrolled.policy() == &policy {
                        continue;
                    }
                    enrolled
                        .update_policy(policy, &self.intercept, &self.node_budget)
                        .map(|()| &mut result.updated)
                }
                _ => {
                    if let Some(old) = self.pods.remove(&spec.uid) {
                        old.unenroll();
                    }
                    match EnrolledPod::enroll(
                        &mut self.datapath,
                        &self.node_budget,
                        &self.orig_dst,
                        &self.intercept,
                        &self.cgroup2_root,
                        spec,
                        policy,
                    ) {
                        Ok(pod) => {
                            self.pods.insert(spec.uid.clone(), pod);
                            result.enrolled_uids.push(spec.uid.clone());
                            Ok(&mut result.enrolled)
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match outcome {
                Ok(list) => list.push(label),
                Err(e) => result.failed.push((label, e.to_string())),
            }
        }
        self.settle_bypassed(&result.enrolled_uids);
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !wanted.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(pod) = self.pods.remove(&uid) {
                result.unenrolled.push(pod.label());
                pod.unenroll();
            }
        }
        result
    }

    /// Removes pinned state of pods that are no longer enrolled (gone while no
    /// agent ran). Call after the first reconciliation.
    pub fn prune(&mut self) -> Result<Pruned, DatapathError> {
        let uids: HashSet<String> = self.pods.keys().cloned().collect();
        let cookies: HashSet<u64> = self.pods.values().map(EnrolledPod::netns_cookie).collect();
        let addrs: HashSet<IpAddr> = self
            .pods
            .values()
            .flat_map(|p| p.ips().iter().copied())
            .collect();
        self.datapath.prune(&uids, &cookies, &addrs)
    }

    /// Another agent took the pod `uid` over: forget it without touching
    /// its pinned state. The returned future stops its listeners once
    /// their queues are empty; `None` if the pod is not enrolled here.
    pub fn release(&mut self, uid: &str) -> Option<impl Future<Output = ()> + Send + 'static> {
        let pod = self.pods.remove(uid)?;
        Some(pod.release())
    }

    /// The node's intercepted connections, against the descriptors left.
    pub fn node_budget(&self) -> &NodeBudget {
        &self.node_budget
    }

    /// How many pods are enrolled.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// The enrolled pod with this uid.
    pub fn pod(&self, uid: &str) -> Option<&EnrolledPod> {
        self.pods.get(uid)
    }

    /// Labels (`namespace/name`) of the enrolled pods.
    pub fn enrolled(&self) -> Vec<String> {
        let mut labels: Vec<String> = self.pods.values().map(EnrolledPod::label).collect();
        labels.sort();
        labels
    }

    /// Un-enrolls every pod for good (`weir run` on an uninstall, tests).
    pub fn unenroll_all(&mut self) {
        for (_, pod) in self.pods.drain() {
            pod.unenroll();
        }
    }
}
