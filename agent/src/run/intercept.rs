//! The seam between enrollment and interception, which do not import each
//! other: enrollment hands connections to an `enroll::Intercept` (the role),
//! interception's `Interceptor` serves them (detects the protocol, routes,
//! passes through or forwards to the pod's application); [`Seam`] is the one
//! joining them.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use tracing::Instrument;

use crate::enroll::{
    CpuCounters, CpuShare, InboundConn, Intercept, LocalPodGuard, OutboundConn, PodContext,
    Refusal, Way,
};
use crate::intercept::{
    AppConnector, DirectFlow, Interceptor, LocalPod, PodIdentity, RequestShare,
};
use crate::pods::InboundPorts;
use crate::proxy::http::{RequestPlace, ShedWatch};

/// `pod_egress`: each pod's upstream connections leave from inside its
/// network namespace (`PodContext::egress`); off, from the agent's.
pub(super) fn for_interceptor(interceptor: &Interceptor, pod_egress: bool) -> Arc<dyn Intercept> {
    Arc::new(Seam {
        interceptor: interceptor.clone(),
        pod_egress,
    })
}

/// `enroll::Intercept` served by an `Interceptor`.
struct Seam {
    interceptor: Interceptor,
    pod_egress: bool,
}

fn identity(pod: &PodContext) -> PodIdentity {
    PodIdentity {
        namespace: Arc::clone(&pod.namespace),
        name: Arc::clone(&pod.name),
        service_account: Arc::clone(&pod.workload.service_account),
        workload: Arc::clone(&pod.workload_name),
    }
}

/// A connection's task charged to its pod's CPU share (`enroll::cpu`).
struct PodCpu {
    share: Arc<CpuShare>,
    counters: CpuCounters,
}

impl PodCpu {
    fn run<F: Future>(self, task: F) -> impl Future<Output = F::Output> {
        self.share.run(task, Some(self.counters))
    }
}

impl Seam {
    fn cpu_of(&self, pod: &Arc<PodContext>) -> PodCpu {
        PodCpu {
            share: Arc::clone(&pod.cpu),
            counters: self.counters_of(pod),
        }
    }

    fn counters_of(&self, pod: &PodContext) -> CpuCounters {
        let (used, throttled) = self.interceptor.cpu_counters(&identity(pod));
        CpuCounters { used, throttled }
    }
}

/// The span a connection's log lines share (`logging`).
fn connection_span(pod: &PodContext, way: Way, dst: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "conn",
        id = crate::proxy::listener::next_connection_id(),
        pod = %format_args!("{}/{}", pod.namespace, pod.name),
        dir = way.label(),
        %dst,
    )
}

impl Intercept for Seam {
    fn outbound(&self, conn: OutboundConn) {
        let interceptor = self.interceptor.clone();
        let cpu = self.cpu_of(&conn.pod);
        let span = connection_span(&conn.pod, Way::Outbound, conn.orig_dst.0);
        let egress = self.pod_egress.then(|| conn.pod.egress.clone());
        tokio::spawn(
            cpu.run(
                async move {
                    let _permit = conn.permit;
                    let source = identity(&conn.pod);
                    let share: Arc<dyn RequestShare> = Arc::new(PodRequests(Arc::clone(&conn.pod)));
                    interceptor
                        .serve_outbound(conn.stream, conn.orig_dst, source, Some(share), egress)
                        .await;
                }
                .instrument(span),
            ),
        );
    }

    fn inbound(&self, conn: InboundConn) {
        let interceptor = self.interceptor.clone();
        let cpu = self.cpu_of(&conn.pod);
        let span = connection_span(&conn.pod, Way::Inbound, conn.dst);
        let tunnel = self.interceptor.tunnel_port() == Some(conn.dst.port());
        tokio::spawn(
            cpu.run(
                async move {
                    let _permit = conn.permit;
                    let pod = identity(&conn.pod);
                    let app: Arc<dyn AppConnector> = Arc::new(PodApp(Arc::clone(&conn.pod)));
                    if tunnel {
                        let workload = conn.pod.workload.clone();
                        interceptor
                            .serve_tunnel(conn.stream, conn.dst, conn.peer, pod, workload, app)
                            .await;
                    } else {
                        interceptor
                            .serve_inbound(conn.stream, conn.dst, conn.peer, pod, app)
                            .await;
                    }
                }
                .instrument(span),
            ),
        );
    }

    fn local_pod(
        &self,
        pod: &Arc<PodContext>,
        ips: &[IpAddr],
        ports: &InboundPorts,
    ) -> Option<LocalPodGuard> {
        let guard = self.interceptor.register_local(
            ips,
            LocalPod {
                identity: identity(pod),
                ports: ports.clone(),
                app: Arc::new(PodApp(Arc::clone(pod))),
            },
        );
        Some(Box::new(guard))
    }

    fn allows_any_destination(&self) -> bool {
        self.interceptor.allows_any_destination()
    }

    fn tunnel_port(&self) -> Option<u16> {
        self.interceptor.tunnel_port()
    }

    fn refused(&self, pod: &PodContext, way: Way, reason: Refusal) {
        self.interceptor
            .count_refused(&identity(pod), way.label(), reason.label());
    }

    fn cpu_counters(&self, pod: &PodContext) -> Option<CpuCounters> {
        Some(self.counters_of(pod))
    }

    fn direct(&self, pod: &PodContext, flow: &crate::datapath::Flow) {
        if flow.udp && !flow.refused {
            // Connected UDP let through (DNS): not a TCP connection to count.
            return;
        }
        let c = &flow.counts;
        let direct = DirectFlow {
            dst: flow.dst,
            refused: flow.refused,
            connections: c.connections,
            closed: c.closed,
            // The metrics' sides are the pod's peer's: sent is what the pod
            // received, received what it sent (and the peer acknowledged).
            sent: c.bytes_received,
            received: c.bytes_sent,
        };
        self.interceptor.count_direct(&identity(pod), &direct);
    }

    fn bypassed(&self, pod: &PodContext, connections: u64, reset: u64) {
        self.interceptor
            .count_bypassed(&identity(pod), connections, reset);
    }
}

/// The pod's outbound requests in flight, within its budget.
struct PodRequests(Arc<PodContext>);

impl RequestShare for PodRequests {
    fn admit(&self) -> Result<RequestPlace, &'static str> {
        match self.0.admit_outbound_request() {
            Ok(permit) => Ok(Box::new(permit)),
            Err(refusal) => Err(refusal.label()),
        }
    }

    fn shed(&self) -> Option<ShedWatch> {
        Some(self.0.outbound_shed())
    }
}

/// Reaches the pod's application from inside its namespace, from 127.0.0.6.
struct PodApp(Arc<PodContext>);

impl AppConnector for PodApp {
    fn connect_app(
        &self,
        addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<tokio::net::TcpStream>> + Send + '_>> {
        Box::pin(self.0.connect_app(addr))
    }
}
