//! The accept loop of a pod's in-pod listeners, handing each connection to
//! the proxy with what the data path knows about it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    ConnPermit, CpuCounters, CpuShare, InboundConn, Intercept, OutboundConn, PodBudget, PodContext,
    Refusal, Way,
};
use crate::datapath::OrigDstTable;
use crate::proxy::accept_errors::AcceptErrors;

/// Which side of the pod a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The pod's own outbound connections, redirected by the connect hooks.
    Outbound,
    /// Connections to the pod, steered by sk_lookup.
    Inbound,
}

/// What one pod's accept loop hands its connections to.
pub(super) struct PodAcceptor {
    pub netns_cookie: u64,
    pub orig_dst: Arc<OrigDstTable>,
    pub intercept: Arc<dyn Intercept>,
    pub pod: Arc<PodContext>,
}

/// Connections one turn of a pod's accept loop takes before it lets the
/// pod's CPU share look again. tokio would let it take 128 (its coop
/// budget): a pod opening thousands of connections at once kept its
/// neighbours' ready requests waiting about 2 ms behind each such turn.
const ACCEPTS_PER_TURN: usize = 8;

/// One task accepts on all of a pod's listeners (egress and inbound, IPv4
/// and IPv6), not one task per listener: a task is about a kilobyte of the
/// agent's memory, and at 500 pods the three more were 1.5 MiB for loops
/// that are idle almost all the time. The listeners are served in turn, so
/// a busy one cannot keep the others waiting.
///
/// The loop is the pod's own work, charged to its CPU share and held back
/// with its connections while the pod is over its rate: accepting,
/// looking up the original destination and resetting connections over
/// budget cost the proxy about as much as serving a small request, and a
/// pod that opens connections faster than its share pays for waits in
/// the kernel's accept queue, not in its neighbours' latency.
pub(super) fn spawn(
    listeners: Vec<(Arc<TcpListener>, Side)>,
    acceptor: PodAcceptor,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let errors = AcceptErrors::new(format!(
        "pod {}/{}",
        acceptor.pod.namespace, acceptor.pod.name
    ));
    let cpu = Arc::clone(&acceptor.pod.cpu);
    let counters = acceptor.intercept.cpu_counters(&acceptor.pod);
    let outbound = Gate::new(Way::Outbound, &acceptor.pod.outbound, &acceptor.intercept);
    let inbound = Gate::new(Way::Inbound, &acceptor.pod.inbound, &acceptor.intercept);
    let take = move |side: Side, stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        match side {
            Side::Outbound => acceptor.outbound(&outbound, stream, peer),
            Side::Inbound => acceptor.inbound(&inbound, stream, peer),
        }
    };
    tokio::spawn(accept_loop((&cpu, counters), listeners, take, errors, stop))
}

/// Hands every connection on `listeners` to `take` until `stop`, then
/// whatever their queues still hold; the pod's own work (see [`spawn`]).
fn accept_loop<Take: FnMut(Side, TcpStream, SocketAddr)>(
    (cpu, counters): (&Arc<CpuShare>, Option<CpuCounters>),
    listeners: Vec<(Arc<TcpListener>, Side)>,
    take: Take,
    errors: AcceptErrors,
    stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + use<Take> {
    cpu.run(accept_all(listeners, take, errors, stop), counters)
}

async fn accept_all(
    listeners: Vec<(Arc<TcpListener>, Side)>,
    mut take: impl FnMut(Side, TcpStream, SocketAddr),
    mut errors: AcceptErrors,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0;
    let mut taken = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = accept_any(&listeners, &mut next) => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((side, stream, peer)) => {
                errors.accepted();
                take(side, stream, peer);
                taken = taken.wrapping_add(1);
                if taken.is_multiple_of(ACCEPTS_PER_TURN) {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => errors.failed(&e).await,
        }
    }
    // A zero timeout still polls once: whatever the queues hold now.
    for (listener, side) in &listeners {
        while let Ok(Ok((stream, peer))) =
            tokio::time::timeout(Duration::ZERO, listener.accept()).await
        {
            take(*side, stream, peer);
        }
    }
}

impl PodAcceptor {
    fn outbound(&self, gate: &Gate, stream: TcpStream, peer: SocketAddr) {
        let pod = &self.pod;
        // Taken before the budget is asked, so a connection over budget
        // does not leave its entry to crowd the LRU table.
        match self.orig_dst.take_in(self.netns_cookie, peer) {
            Ok(Some(orig_dst)) => {
                if let Some(permit) = gate.admit(&stream, pod) {
                    self.intercept.outbound(OutboundConn {
                        stream,
                        orig_dst,
                        pod: Arc::clone(pod),
                        permit,
                    })
                }
            }
            // Something in the pod connected to the listener's own port.
            Ok(None) => log::debug!(
                "pod {}/{}: egress connection from {peer} was not redirected; closed",
                pod.namespace,
                pod.name
            ),
            Err(e) => log::warn!(
                "pod {}/{}: original destination of {peer}: {e}",
                pod.namespace,
                pod.name
            ),
        }
    }

    fn inbound(&self, gate: &Gate, stream: TcpStream, peer: SocketAddr) {
        let pod = &self.pod;
        let Some(permit) = gate.admit(&stream, pod) else {
            return;
        };
        // sk_lookup hands over the connection as addressed: the local
        // address is where the client was connecting.
        match stream.local_addr() {
            Ok(dst) => self.intercept.inbound(InboundConn {
                stream,
                dst,
                peer,
                pod: Arc::clone(pod),
                permit,
            }),
            Err(e) => log::warn!(
                "pod {}/{}: inbound connection from {peer}: {e}",
                pod.namespace,
                pod.name
            ),
        }
    }
}

/// Admits accepted connections into one pod's budget in one direction.
struct Gate {
    way: Way,
    budget: Arc<PodBudget>,
    intercept: Arc<dyn Intercept>,
}

impl Gate {
    fn new(way: Way, budget: &Arc<PodBudget>, intercept: &Arc<dyn Intercept>) -> Self {
        Self {
            way,
            budget: Arc::clone(budget),
            intercept: Arc::clone(intercept),
        }
    }

    /// A place in the budget; a connection over budget is reset at once
    /// (a RST: the client fails fast instead of waiting), counted against
    /// the pod and logged at a bounded rate.
    fn admit(&self, stream: &TcpStream, pod: &PodContext) -> Option<ConnPermit> {
        match self.budget.admit() {
            Ok(permit) => Some(permit),
            Err(reason) => {
                let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
                self.intercept.refused(pod, self.way, reason);
                if let Some(skipped) = self.budget.log_due() {
                    log::warn!(
                        "pod {}/{}: {} connection reset: over its {} ({} open; {skipped} more not logged)",
                        pod.namespace,
                        pod.name,
                        self.way.label(),
                        match reason {
                            Refusal::PodConnections => "weir.dev/max-connections",
                            Refusal::PodRate => "weir.dev/max-connection-rate",
                            Refusal::Node => "share of the node's descriptors",
                            Refusal::NodeShare => {
                                "even share of the node, which is near its cap"
                            }
                            Refusal::PodRequests => "weir.dev/max-requests",
                        },
                        self.budget.open(),
                    );
                }
                None
            }
        }
    }
}

/// The next connection on any of `listeners`, trying them in turn from
/// `next` (moved past the one that answered, so each gets its turn).
async fn accept_any(
    listeners: &[(Arc<TcpListener>, Side)],
    next: &mut usize,
) -> std::io::Result<(Side, TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for k in 0..n {
            let i = (*next + k) % n;
            let (listener, side) = &listeners[i];
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                *next = (i + 1) % n;
                return Poll::Ready(accepted.map(|(stream, peer)| (*side, stream, peer)));
            }
        }
        Poll::Pending
    })
    .await
}

pub(super) fn into_tokio(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    async fn listener() -> (Arc<TcpListener>, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Arc::new(listener), addr)
    }

    /// `share`'s accept loop on `listener`, each connection taken by `take`.
    fn serve(
        share: &Arc<CpuShare>,
        listener: Arc<TcpListener>,
        take: impl FnMut(Side, TcpStream, SocketAddr) + Send + 'static,
    ) -> (JoinHandle<()>, watch::Sender<bool>) {
        let stop = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            (share, None),
            vec![(listener, Side::Outbound)],
            take,
            AcceptErrors::new("test"),
            stop.1,
        ));
        (task, stop.0)
    }

    #[tokio::test]
    async fn a_pod_over_its_cpu_rate_accepts_only_once_it_has_paid() {
        let (listener, addr) = listener().await;
        let share = Arc::new(CpuShare::new(250));
        let started = Instant::now();
        // 50 ms of CPU at a quarter of a core: 200 ms ahead, 2 ms of it
        // its burst.
        share.charge(Duration::from_millis(50), started);
        let (taken, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let (task, _stop) = serve(&share, listener, move |_, stream, _| {
            let _ = taken.send(stream);
        });
        let _client = TcpStream::connect(addr).await.unwrap();
        accepted.recv().await.expect("accepted in the end");
        let waited = started.elapsed();
        task.abort();
        assert!(
            waited >= Duration::from_millis(190),
            "accepted after {waited:?}, while the pod was over its rate"
        );
    }

    #[tokio::test]
    async fn a_burst_of_connections_is_taken_a_few_at_a_time() {
        let (listener, addr) = listener().await;
        let mut clients = Vec::new();
        for _ in 0..3 * ACCEPTS_PER_TURN {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let share = Arc::new(CpuShare::new(250));
        let times = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&times);
        let (done, mut all_taken) = tokio::sync::mpsc::unbounded_channel();
        // Each connection costs 1 ms of CPU: one turn's 8 ms at a quarter
        // of a core puts the pod 32 ms ahead, well past its 2 ms burst.
        let (task, _stop) = serve(&share, listener, move |_, _stream, _| {
            let spinning = std::time::Instant::now();
            while spinning.elapsed() < Duration::from_millis(1) {
                std::hint::spin_loop();
            }
            let mut times = recorded.lock().unwrap();
            times.push(Instant::now());
            if times.len() == 3 * ACCEPTS_PER_TURN {
                let _ = done.send(());
            }
        });
        all_taken.recv().await.expect("all taken in the end");
        task.abort();
        let times = times.lock().unwrap();
        let gap = times[ACCEPTS_PER_TURN] - times[ACCEPTS_PER_TURN - 1];
        assert!(
            gap >= Duration::from_millis(20),
            "the pod's CPU share did not look between turns: {gap:?} after the first {ACCEPTS_PER_TURN}"
        );
    }
}
