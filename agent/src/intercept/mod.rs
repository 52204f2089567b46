//! Interception: what weir does with a connection the eBPF data path
//! redirected to it, on top of the L7 engine (`proxy`), which never refers
//! back to it. Modules follow the life of an intercepted connection:
//! `detect` (first bytes: HTTP/1, TLS + `sni`, or opaque) -> `outbound`
//! (route by original destination to the engine's virtual listeners) or
//! `inbound` (to the pod's application through an [`AppConnector`]) ->
//! `passthrough` (L4 splice, implicit HTTP passthrough, black hole).
//! `peers` and the `x-weir-source` header (a `source` token, not a name)
//! carry the source pod's identity from the outbound side to the inbound
//! side; `same_node` delivers to pods on this node in one pass, through
//! the engine's connection hook (`connector`); `identity` counts everything
//! with that identity (Istio's standard metrics). The state all of them share ([`Shared`]) belongs to one
//! [`Interceptor`]: nothing is process-global.
//! Design: `docs/architecture.md` ("Identity"); metrics: `docs/metrics.md`.

mod authz;
mod bounded;
mod connector;
pub(crate) mod detect;
mod identity;
mod inbound;
mod mesh_link;
mod outbound;
mod pairs;
mod passthrough;
mod peers;
mod same_node;
pub(crate) mod sni;
mod source;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpStream;

pub use self::mesh_link::{Cidr, MeshLinkError, MeshOptions};
pub use self::same_node::{LocalGuard, LocalPod};
use crate::addr::{ClientAddr, OrigDst};
use crate::pods::Workload;
use crate::proxy::http::{RequestPlace, ShedWatch};
use crate::proxy::metrics::{Metrics, MetricsError};
use crate::proxy::runtime::Runtime;
use crate::proxy::upstream::connector::{ConnectError, connect_from};
use crate::proxy::upstream::egress::{Egress, EgressError};

/// An enrolled pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodIdentity {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// Who it runs as: with the namespace, its principal for authorization.
    pub service_account: Arc<str>,
    /// Its workload's name (its controller), Istio's `*_workload` label.
    pub workload: Arc<str>,
}

/// Growth of one pod's counts towards one destination the kernel decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectFlow {
    pub dst: SocketAddr,
    /// Refused with EPERM (`REGISTRY_ONLY`); else let through directly.
    pub refused: bool,
    pub connections: u64,
    pub closed: u64,
    /// Bytes to the pod, as the proxied connections' `sent`.
    pub sent: u64,
    /// Bytes from the pod.
    pub received: u64,
}

/// Connects to an enrolled pod's application (implemented by the
/// enrollment code: from the proxy's reserved source inside the pod).
pub trait AppConnector: Send + Sync + 'static {
    /// Connect to the pod's application at `addr` (from the proxy's reserved source inside the pod).
    fn connect_app(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>>;
}

/// What a source pod may have of the proxy per request (implemented by
/// enrolment's budgets): beyond it a request gets Envoy's overload 503.
pub trait RequestShare: Send + Sync + 'static {
    /// A place for one more request in flight, held until its response
    /// head, or the reason label it is refused for.
    fn admit(&self) -> Result<RequestPlace, &'static str>;
    /// Fires when the pod's idle connections should close (its share of a
    /// node near its cap is used up).
    fn shed(&self) -> Option<ShedWatch> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("original destination: {0}")]
    Connect(#[from] ConnectError),
    #[error("connect to the application at {0}: {1}")]
    App(SocketAddr, #[source] std::io::Error),
    #[error("splicing: {0}")]
    Splice(#[source] std::io::Error),
    #[error("closed after {0:?} without a byte either way (opaque_idle_timeout)")]
    Idle(std::time::Duration),
    #[error("idle connection shed: its pod is over its share near the node's cap")]
    Shed,
    #[error("closed: authorization_policies deny its source")]
    Denied,
    #[error("relay dropped unfinished: its pod's relay task ended")]
    RelayDropped,
}

/// Delivers the tunnel's streams to one pod as its inbound side serves a
/// connection, the source being the peer's workload.
struct TunnelDelivery {
    interceptor: Interceptor,
    pod: PodIdentity,
    app: Arc<dyn AppConnector>,
}

impl mesh_link::Deliver for TunnelDelivery {
    fn deliver(
        &self,
        source: mesh_link::MeshSource,
        target: SocketAddr,
        stream: crate::tunnel::TunnelStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let interceptor = self.interceptor.clone();
        let pod = self.pod.clone();
        let app = Arc::clone(&self.app);
        Box::pin(async move {
            let client = inbound::Client::Mesh(source);
            let serve = inbound::serve(&interceptor.inner, stream, target, client, pod, app);
            interceptor.within_drain(Box::pin(serve)).await;
        })
    }

    fn draining(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut drain = self.interceptor.inner.runtime.drain_watch();
        Box::pin(async move {
            drain.signaled().await;
        })
    }
}

/// What one interceptor's outbound side, inbound side and upstream
/// connector share: who weir's own sockets are, which pods are on this
/// node, the source tokens, and the metrics.
struct Shared {
    metrics: identity::InterceptMetrics,
    peers: peers::Peers,
    same_node: same_node::LocalPods,
    sources: source::Sources,
    /// The tunnel to other nodes' weir, when the agent has mesh credentials.
    mesh: Option<Arc<mesh_link::MeshLink>>,
    authz: authz::AuthzMetrics,
}

impl Shared {
    /// Fresh state; the metric families are registered in `registry`.
    fn new(registry: &prometheus::Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            metrics: identity::InterceptMetrics::new(registry)?,
            peers: peers::Peers::default(),
            same_node: same_node::LocalPods::default(),
            sources: source::Sources::default(),
            mesh: None,
            authz: authz::AuthzMetrics::new(registry)?,
        })
    }

    /// The principal of enrolled pod `pod` of this node, in the mesh's
    /// trust domain (Kubernetes' default without the mesh).
    fn principal_of(&self, pod: &PodIdentity) -> authz::Principal {
        let trust_domain = self
            .mesh
            .as_ref()
            .map_or(authz::DEFAULT_TRUST_DOMAIN, |m| m.trust_domain());
        authz::Principal::new(trust_domain, &pod.namespace, &pod.service_account)
    }

    /// Connect to `addr` for `egress`'s pod: through the tunnel to the
    /// weir of another node's pod when that is where `addr` is, else plain
    /// TCP from the pod's network namespace ([`Shared::connect_from`]).
    async fn connect_upstream(
        &self,
        egress: Option<&Egress>,
        addr: SocketAddr,
    ) -> Result<passthrough::Upstream, ConnectError> {
        if let Some(mesh) = &self.mesh
            && let Some(stream) = mesh.connect(egress, addr).await?
        {
            return Ok(passthrough::Upstream::Tunnel(stream));
        }
        Ok(passthrough::Upstream::Tcp(
            self.connect_from(egress, addr).await?,
        ))
    }

    /// Connect to `addr` from `egress` (an enrolled pod's network
    /// namespace; the node's without one), counting what the pod's side
    /// could not open.
    async fn connect_from(
        &self,
        egress: Option<&Egress>,
        addr: SocketAddr,
    ) -> Result<TcpStream, ConnectError> {
        connect_from(egress, addr).await.inspect_err(|e| {
            if let ConnectError::Egress(_, why) = e {
                self.metrics
                    .pod_connect_failed(matches!(why, EgressError::Closed(_)));
            }
        })
    }

    /// Fresh state whose families are in the returned `Metrics`.
    #[cfg(test)]
    fn for_tests() -> (Arc<Self>, Metrics) {
        let m = Metrics::new().unwrap();
        (Arc::new(Self::new(m.registry()).unwrap()), m)
    }
}

/// Serves intercepted connections with the runtime's current config
/// (read per connection, so reloads apply to new connections). Its HTTP
/// connections drain with the runtime (`Runtime::drain_all`); spliced TCP
/// connections run until either side closes.
#[derive(Clone)]
pub struct Interceptor {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    passthrough: passthrough::HttpPassthrough,
}

impl Interceptor {
    /// An interceptor and the engine it serves through: the runtime's
    /// clusters connect through interception's connector (same-node
    /// delivery, weir's own sockets known to the inbound side), and its
    /// metric families join `metrics`' registry.
    pub fn new(metrics: Arc<Metrics>) -> Result<Self, MetricsError> {
        Self::build(metrics, None)
    }

    /// An interceptor whose enrolled pods reach enrolled pods of other
    /// nodes through the mesh tunnel, with the credentials of `mesh`
    /// (checked now: an error names the file and what is wrong with it).
    pub fn with_mesh(metrics: Arc<Metrics>, mesh: &MeshOptions) -> Result<Self, MeshLinkError> {
        let link = mesh_link::MeshLink::new(mesh, metrics.registry())?;
        Ok(Self::build(metrics, Some(Arc::new(link)))?)
    }

    fn build(
        metrics: Arc<Metrics>,
        mesh: Option<Arc<mesh_link::MeshLink>>,
    ) -> Result<Self, MetricsError> {
        let shared = Arc::new(Shared {
            mesh,
            ..Shared::new(metrics.registry())?
        });
        let connector = Arc::new(connector::InterceptConnector::new(Arc::clone(&shared)));
        let runtime = Arc::new(Runtime::with_connector(metrics, connector.clone()));
        connector.serves(&runtime);
        let passthrough = passthrough::HttpPassthrough::new(runtime.metrics.clone(), connector);
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                shared,
                passthrough,
            }),
        })
    }

    /// The engine intercepted connections are served by.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// An enrolled pod's application connected to `orig_dst`; serve it,
    /// each HTTP request within the pod's `share` when it has one, every
    /// upstream connection from `egress` (the pod's network namespace;
    /// the node's without one) and pooled for it alone.
    pub async fn serve_outbound(
        &self,
        stream: TcpStream,
        orig_dst: OrigDst,
        source: PodIdentity,
        share: Option<Arc<dyn RequestShare>>,
        egress: Option<Egress>,
    ) {
        let serve = outbound::serve(&self.inner, stream, orig_dst, source, share, egress);
        self.within_drain(Box::pin(serve)).await;
    }

    /// Runs one intercepted connection, counted as open for a shutdown to
    /// wait on, and closed when a drain's grace runs out: HTTP finishes
    /// sooner on its own (`connection: close`, GOAWAY), spliced TLS and TCP
    /// have no such signal and run until then.
    ///
    /// `serve` comes boxed: an async fn keeps its argument and `select!` its
    /// own copy, so inline the connection's whole future was held twice in
    /// its task from the accept on, silent or not (outbound: 2 x 17.8 KiB,
    /// `-Zprint-type-sizes`).
    async fn within_drain<F: Future<Output = ()>>(&self, serve: Pin<Box<F>>) {
        let _open = self.inner.runtime.hand_over();
        let mut drain = self.inner.runtime.drain_watch();
        tokio::select! {
            () = serve => {}
            () = drain.expired() => log::debug!("intercepted connection closed: the drain time ran out"),
        }
    }

    /// A connection to enrolled pod `pod` at `dst` (its own address:port) from `peer`; serve it.
    pub async fn serve_inbound(
        &self,
        stream: TcpStream,
        dst: SocketAddr,
        peer: SocketAddr,
        pod: PodIdentity,
        app: Arc<dyn AppConnector>,
    ) {
        let inner = &self.inner;
        self.within_drain(Box::pin(inbound::serve(
            inner,
            stream,
            dst,
            inbound::Client::Peer(ClientAddr(peer)),
            pod,
            app,
        )))
        .await;
    }

    /// The port enrolled pods must steer to weir for the mesh tunnel's far
    /// end, when this interceptor has the mesh.
    pub fn tunnel_port(&self) -> Option<u16> {
        self.inner
            .shared
            .mesh
            .as_ref()
            .map(|_| crate::tunnel::TUNNEL_PORT)
    }

    /// A connection to the tunnel port of enrolled pod `pod` (running as
    /// `workload`) at `dst`, from `peer`: serve the tunnel's far end, each
    /// stream delivered to the pod's application as an inbound connection
    /// from the workload the peer's certificate names. Without the mesh it
    /// is an inbound connection like any other.
    pub async fn serve_tunnel(
        &self,
        stream: TcpStream,
        dst: SocketAddr,
        peer: SocketAddr,
        pod: PodIdentity,
        workload: Workload,
        app: Arc<dyn AppConnector>,
    ) {
        let Some(mesh) = self.inner.shared.mesh.clone() else {
            return self.serve_inbound(stream, dst, peer, pod, app).await;
        };
        let deliver = TunnelDelivery {
            interceptor: self.clone(),
            pod: pod.clone(),
            app,
        };
        self.within_drain(Box::pin(
            mesh.serve(stream, dst, peer, &workload, &pod, deliver),
        ))
        .await;
    }

    /// Record that `pod` is enrolled at `ips`, for same-node delivery,
    /// until the returned guard drops. Registering again (changed
    /// annotations) replaces the entry; the older guard then removes nothing.
    pub fn register_local(&self, ips: &[IpAddr], pod: LocalPod) -> LocalGuard {
        self.inner.shared.same_node.register(ips, pod)
    }

    /// Whether the current config lets outbound traffic no listener claims
    /// through (`outbound_traffic_policy: ALLOW_ANY`).
    pub fn allows_any_destination(&self) -> bool {
        self.inner.runtime.virtual_listeners.load().policy
            == crate::config::OutboundTrafficPolicy::AllowAny
    }

    /// Pod `pod` made `connections` directly while no agent served it;
    /// `reset` of them were reset (see `enroll::bypass`).
    pub fn count_bypassed(&self, pod: &PodIdentity, connections: u64, reset: u64) {
        self.inner
            .shared
            .metrics
            .bypassed(&pod.namespace, &pod.name, connections, reset);
    }

    /// What `pod`'s connections the kernel decided alone (let direct or
    /// refused at `connect()`, `datapath::flows`) did since last reported:
    /// counted under the same labels as the proxied ones.
    pub fn count_direct(&self, pod: &PodIdentity, flow: &DirectFlow) {
        let m = &self.inner.shared.metrics;
        let principal = self.inner.shared.principal_of(pod).uri();
        let destination = m.passthrough_destination(flow.dst.to_string());
        let labels = identity::Labels {
            direction: detect::Direction::Outbound,
            source: identity::Party::of(pod, &principal),
            destination: &destination,
            destination_pod: identity::Party::UNKNOWN,
            // Nothing of weir's is on the path: plain as the pod sent it.
            security: "none",
        };
        m.direct(&labels, flow);
    }

    /// A connection `direction` of `pod` was reset over its budget.
    pub fn count_refused(&self, pod: &PodIdentity, direction: &str, reason: &str) {
        self.inner
            .shared
            .metrics
            .refused(direction, &pod.namespace, &pod.name, reason);
    }

    /// Where the proxy CPU spent on `pod`'s connections is counted: (used, throttled).
    pub fn cpu_counters(&self, pod: &PodIdentity) -> (prometheus::Counter, prometheus::Counter) {
        self.inner.shared.metrics.cpu(&pod.namespace, &pod.name)
    }

    /// The pod an `x-weir-source` value names, if this interceptor made it.
    pub fn source_of(&self, value: &http::HeaderValue) -> Option<PodIdentity> {
        self.inner.shared.sources.pod_of(value)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of_val;

    use tokio::net::TcpListener;

    use super::*;

    /// What one intercepted connection's future holds from its accept on,
    /// whether or not it ever sends a byte (the silent and opaque floods of
    /// `cargo xtask bench neighbours`). The ways on (HTTP, the splice, the
    /// tunnel) are boxed when taken; inline, an outbound connection held
    /// 36 KiB before its first byte.
    const WAITING_BOUND: usize = 2048;

    /// A pod whose application cannot be reached (for tests that never
    /// get that far).
    pub(super) struct NoApp;

    impl AppConnector for NoApp {
        fn connect_app(
            &self,
            _: SocketAddr,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<TcpStream>> + Send + '_>> {
            Box::pin(async { Err(std::io::ErrorKind::Unsupported.into()) })
        }
    }

    async fn accepted() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    #[tokio::test]
    async fn a_connection_waiting_for_its_first_bytes_holds_little() {
        let interceptor = Interceptor::new(Arc::new(Metrics::new().unwrap())).unwrap();
        let pod = PodIdentity {
            namespace: "ns".into(),
            name: "a".into(),
            service_account: "default".into(),
            workload: "a".into(),
        };
        let dst: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let (stream, _client) = accepted().await;
        let outbound = interceptor.serve_outbound(stream, OrigDst(dst), pod.clone(), None, None);
        let (stream, _client) = accepted().await;
        let inbound = interceptor.serve_inbound(stream, dst, dst, pod.clone(), Arc::new(NoApp));
        let (stream, _client) = accepted().await;
        let workload = Workload {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            name: pod.workload.clone(),
        };
        let tunnel = interceptor.serve_tunnel(stream, dst, dst, pod, workload, Arc::new(NoApp));
        for (way, size) in [
            ("outbound", size_of_val(&outbound)),
            ("inbound", size_of_val(&inbound)),
            ("tunnel", size_of_val(&tunnel)),
        ] {
            assert!(
                size <= WAITING_BOUND,
                "an {way} connection's future is {size} bytes before its first byte (bound {WAITING_BOUND})"
            );
        }
    }
}
