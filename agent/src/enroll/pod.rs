//! One enrolled pod: its listeners, its data-path handles and its accept tasks.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_common::{
    INBOUND_FLAG_ALL_PORTS, INBOUND_FLAG_FAIL_CLOSED, InboundSettings, POD_FLAG_FAIL_CLOSED,
    POD_FLAG_UNCLAIMED_DIRECT, POD_FLAG_UNCLAIMED_PROXY, PodSettings,
};

use super::{CpuShare, Intercept, LocalPodGuard, NodeBudget, PodBudget, PodContext, accept};
use crate::datapath::{
    Datapath, DatapathError, EgressAttachment, IngressAttachment, OrigDstTable, PodRegistration,
};
use crate::inpod::{InPodError, PodListeners, SocketFactory};
use crate::netns::NetNs;
use crate::pods::{
    FailMode, InboundPorts, PodLocation, PodPolicy, PodSpec, ResolveError, Unclaimed, resolve,
};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    InPod(#[from] InPodError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("preparing the in-pod listeners: {0}")]
    Listener(#[source] std::io::Error),
    #[error("{count} {what} listed, at most {max} are supported")]
    TooManyPorts {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// What an enrolled pod holds, descriptor by descriptor (`cargo xtask bench
/// node` counts them; `tests/e2e/agent_lifecycle.rs` fails if they grow):
/// - its four in-pod listeners (egress and inbound, IPv4 and IPv6), one
///   descriptor each, shared by its one accept loop and [`AcceptTasks`];
/// - one handle on its network namespace (in `pod.sockets`): the socket
///   factory enters the namespace through it, resetting bypassed
///   connections does too, and it keeps the namespace from vanishing while
///   enrolled;
/// - no `bpf_link`: pinned (as `weir run` always does), a link is held by
///   its pin alone (`datapath::pin::AttachedLink`); unpinned (tests, a data
///   path without a pin root), the link's descriptor is what keeps it, so it
///   is held;
/// - no thread: one socket factory serves every pod (`inpod/factory.rs`).
pub struct EnrolledPod {
    label: String,
    ips: Vec<IpAddr>,
    location: PodLocation,
    policy: PodPolicy,
    netns_cookie: u64,
    egress_ports: (u16, u16),
    registration: PodRegistration,
    egress: EgressAttachment,
    ingress: IngressAttachment,
    accept_tasks: AcceptTasks,
    pod: Arc<PodContext>,
    /// Same-node delivery to this pod, while enrolled.
    local: Option<LocalPodGuard>,
}

/// The pod's accept loop (one task for its four listeners), sharing each
/// listener with it (an `Arc`, not a duplicated descriptor). Dropping stops
/// the pod's listening at once, so an agent shutting down in process
/// behaves like one that exited, while pinned state stays.
struct AcceptTasks {
    task: JoinHandle<()>,
    listeners: Vec<Arc<tokio::net::TcpListener>>,
    /// Tells the loop to take what is queued and end (a hand-over).
    stop: watch::Sender<bool>,
}

/// After a successor's listeners replaced ours in the maps, a `connect()`
/// that read our port just before can still be completing its handshake
/// (microseconds on the node); accepting on a while longer takes it.
const HANDOVER_LINGER: Duration = Duration::from_millis(100);

impl AcceptTasks {
    /// Registers the listeners with the runtime and starts the pod's accept
    /// loop on them, keeping a reference to each to shut it down.
    fn start(
        listeners: Vec<(std::net::TcpListener, accept::Side)>,
        acceptor: accept::PodAcceptor,
    ) -> std::io::Result<Self> {
        let mut served = Vec::with_capacity(listeners.len());
        for (listener, side) in listeners {
            served.push((Arc::new(accept::into_tokio(listener)?), side));
        }
        let stop = watch::channel(false).0;
        let listeners = served.iter().map(|(l, _)| Arc::clone(l)).collect();
        let task = accept::spawn(served, acceptor, stop.subscribe());
        Ok(Self {
            task,
            listeners,
            stop,
        })
    }

    /// The pod is served by another agent now: accept on for
    /// [`HANDOVER_LINGER`], take every connection still queued, then close
    /// (no queued connection is reset).
    async fn finish(mut self) {
        tokio::time::sleep(HANDOVER_LINGER).await;
        self.stop.send_replace(true);
        let _ = (&mut self.task).await;
    }
}

impl Drop for AcceptTasks {
    fn drop(&mut self) {
        // Aborted first, so a loop that next wakes to the shutdown below is
        // cancelled rather than reporting its listener gone (one polled on
        // another worker at this moment may still log one accept error).
        self.task.abort();
        // An aborted task drops its listener only when a runtime worker next
        // gets to it; until then the data path's liveness check would still
        // see a listener, and connections queued on it would be reset rather
        // than sent direct (fail-open) or refused (fail-closed). Shutting a
        // listening socket down takes it out of LISTEN and out of the lookup
        // tables now, through any reference to it (ours: the task may
        // still hold its own).
        for listener in &self.listeners {
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

impl EnrolledPod {
    /// Binds the pod's listeners, registers and attaches it, and starts
    /// serving its connections. Must run inside the tokio runtime.
    pub(super) fn enroll(
        datapath: &mut Datapath,
        node_budget: &Arc<NodeBudget>,
        orig_dst: &Arc<OrigDstTable>,
        intercept: &Arc<dyn Intercept>,
        cgroup2_root: &Path,
        spec: &PodSpec,
        policy: PodPolicy,
    ) -> Result<Self, EnrollError> {
        let resolved = resolve(spec, cgroup2_root)?;
        let egress_listeners = PodListeners::bind(&resolved.netns)?;
        let inbound_listeners = PodListeners::bind(&resolved.netns)?;
        let netns = Arc::new(resolved.netns);
        let sockets = Arc::new(
            SocketFactory::node()
                .map_err(InPodError::Factory)?
                .for_pod(Arc::clone(&netns)),
        );
        let pod = Arc::new(PodContext {
            namespace: Arc::from(spec.namespace.as_str()),
            name: Arc::from(spec.name.as_str()),
            uid: spec.uid.clone(),
            egress: PodContext::egress_for(spec, &sockets),
            workload: spec.workload(),
            workload_name: Arc::from(spec.workload_name.as_str()),
            sockets,
            outbound: Arc::new(PodBudget::new(Arc::clone(node_budget), policy.limits)),
            inbound: Arc::new(PodBudget::new(Arc::clone(node_budget), policy.limits)),
            cpu: Arc::new(CpuShare::new(
                node_budget.cpu_millicores(policy.max_cpu_millicores),
            )),
        });
        let egress_ports = (
            egress_listeners
                .v4
                .local_addr()
                .map_err(EnrollError::Listener)?
                .port(),
            egress_listeners
                .v6
                .local_addr()
                .map_err(EnrollError::Listener)?
                .port(),
        );
        let netns_cookie = egress_listeners.netns_cookie;
        let registration =
            datapath.register_pod(netns_cookie, pod_settings(egress_ports, &policy)?)?;
        let egress = datapath.attach_egress(&resolved.cgroup_dir, &spec.uid)?;
        let ingress = datapath.attach_ingress(
            &netns,
            &spec.uid,
            &spec.ips,
            inbound_settings(&policy, intercept.tunnel_port())?,
            &inbound_listeners.v4,
            &inbound_listeners.v6,
        )?;
        // Hooked with this agent's layout now: hooks an agent of another
        // layout pinned for the pod go (after, so none is ever missing).
        let retired = datapath.retire_other_layouts(&spec.uid)?;
        if retired > 0 {
            log::info!(
                "pod {}/{}: detached the hooks of another map layout",
                spec.namespace,
                spec.name
            );
        }
        let accept_tasks = AcceptTasks::start(
            vec![
                (egress_listeners.v4, accept::Side::Outbound),
                (egress_listeners.v6, accept::Side::Outbound),
                (inbound_listeners.v4, accept::Side::Inbound),
                (inbound_listeners.v6, accept::Side::Inbound),
            ],
            accept::PodAcceptor {
                netns_cookie,
                orig_dst: Arc::clone(orig_dst),
                intercept: Arc::clone(intercept),
                pod: Arc::clone(&pod),
            },
        )
        .map_err(EnrollError::Listener)?;
        let local = intercept.local_pod(&pod, &spec.ips, &policy.inbound_ports);
        let label = format!("{}/{}", spec.namespace, spec.name);
        log::debug!("enrolled pod {label} (uid {})", spec.uid);
        Ok(Self {
            label,
            ips: spec.ips.clone(),
            location: spec.location.clone(),
            policy,
            netns_cookie,
            egress_ports,
            registration,
            egress,
            ingress,
            accept_tasks,
            pod,
            local,
        })
    }

    pub fn label(&self) -> String {
        self.label.clone()
    }

    pub fn policy(&self) -> &PodPolicy {
        &self.policy
    }

    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    pub fn netns_cookie(&self) -> u64 {
        self.netns_cookie
    }

    pub(super) fn netns(&self) -> &NetNs {
        self.pod.sockets.netns()
    }

    pub(super) fn context(&self) -> &PodContext {
        &self.pod
    }

    /// Whether `spec` still describes the pod where it was enrolled (same
    /// addresses and cgroup), so a policy change can be applied in place.
    pub(super) fn same_placement(&self, spec: &PodSpec) -> bool {
        self.ips == spec.ips && self.location == spec.location
    }

    /// Applies changed annotations (fail mode, ports) without re-enrolling.
    pub(super) fn update_policy(
        &mut self,
        policy: PodPolicy,
        intercept: &Arc<dyn Intercept>,
        node_budget: &NodeBudget,
    ) -> Result<(), EnrollError> {
        self.registration
            .update(pod_settings(self.egress_ports, &policy)?)?;
        self.ingress
            .update(inbound_settings(&policy, intercept.tunnel_port())?)?;
        self.pod.outbound.set_limits(policy.limits);
        self.pod.inbound.set_limits(policy.limits);
        self.pod
            .cpu
            .set_millicores(node_budget.cpu_millicores(policy.max_cpu_millicores));
        if policy.inbound_ports != self.policy.inbound_ports {
            self.local = intercept.local_pod(&self.pod, &self.ips, &policy.inbound_ports);
        }
        log::debug!("pod {}: annotations changed, applied", self.label);
        self.policy = policy;
        Ok(())
    }

    /// Another agent serves the pod now (its listeners are in the maps):
    /// stop listening once what is queued is accepted, and leave the
    /// entries, links and pins, which are the other agent's now.
    /// Connections already accepted run on.
    pub(super) async fn release(self) {
        drop(self.local);
        // Link handles before listeners. Pinned, they hold no descriptor
        // (the pins do): a successor of the same layout adopted the pins, and
        // one of another layout removed ours, which detached our programs
        // there and then. Unpinned, these handles are all that keeps our
        // programs attached; once they find no listener of ours they would
        // send the pod direct, or refuse it when fail-closed.
        drop(self.egress);
        drop(self.ingress);
        drop(self.registration);
        self.accept_tasks.finish().await;
        log::debug!("pod {}: handed over", self.label);
    }

    /// Removes everything the pod had: entries, links, pins, listeners. The
    /// hooks go first, so the pod connects directly rather than into a closing
    /// listener, even when it is fail-closed.
    pub(super) fn unenroll(self) {
        // Same-node delivery stops first: new upstream connections take the
        // network path, like everyone else's.
        drop(self.local);
        // The pod's own upstream connections: idle ones close now, none is
        // opened for it any more (a request still coming on a connection it
        // has open to weir gets a 503, a spliced one a reset).
        self.pod.egress.close();
        self.registration.remove();
        self.ingress.remove();
        self.egress.remove();
        drop(self.accept_tasks);
        log::debug!("un-enrolled pod {}", self.label);
    }
}

fn pod_settings(egress_ports: (u16, u16), policy: &PodPolicy) -> Result<PodSettings, EnrollError> {
    let mut settings = PodSettings {
        egress_port_v4: egress_ports.0,
        egress_port_v6: egress_ports.1,
        flags: (if policy.fail_mode == FailMode::Closed {
            POD_FLAG_FAIL_CLOSED
        } else {
            0
        }) | match policy.unclaimed {
            Some(Unclaimed::Direct) => POD_FLAG_UNCLAIMED_DIRECT,
            Some(Unclaimed::Proxy) => POD_FLAG_UNCLAIMED_PROXY,
            None => 0,
        },
        ..PodSettings::default()
    };
    fill_ports(
        &mut settings.exclude_outbound_ports,
        &policy.exclude_outbound_ports,
        "excluded outbound ports",
    )?;
    Ok(settings)
}

/// `tunnel_port` is steered too when the pod lists its ports: the mesh
/// tunnel ends in the pod whatever it serves.
fn inbound_settings(
    policy: &PodPolicy,
    tunnel_port: Option<u16>,
) -> Result<InboundSettings, EnrollError> {
    let mut settings = InboundSettings::default();
    if policy.fail_mode == FailMode::Closed {
        settings.flags |= INBOUND_FLAG_FAIL_CLOSED;
    }
    match &policy.inbound_ports {
        InboundPorts::All => settings.flags |= INBOUND_FLAG_ALL_PORTS,
        InboundPorts::Listed(ports) => {
            let mut ports = ports.clone();
            if let Some(tunnel) = tunnel_port.filter(|p| !ports.contains(p)) {
                ports.push(tunnel);
            }
            fill_ports(
                &mut settings.ports,
                &ports,
                "inbound ports (with the mesh tunnel's)",
            )?
        }
    }
    Ok(settings)
}

fn fill_ports<const N: usize>(
    slots: &mut [u16; N],
    ports: &[u16],
    what: &'static str,
) -> Result<(), EnrollError> {
    if ports.len() > N {
        return Err(EnrollError::TooManyPorts {
            what,
            count: ports.len(),
            max: N,
        });
    }
    slots[..ports.len()].copy_from_slice(ports);
    Ok(())
}
