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
    ConnPermit, InboundConn, Intercept, OutboundConn, PodBudget, PodContext, Refusal, Way,
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

/// One task accepts on all of a pod's listeners (egress and inbound, IPv4
/// and IPv6), not one task per listener: a task is about a kilobyte of the
/// agent's memory, and at 500 pods the three more were 1.5 MiB for loops
/// that are idle almost all the time. The listeners are served in turn, so
/// a busy one cannot keep the others waiting.
pub(super) fn spawn(
    listeners: Vec<(Arc<TcpListener>, Side)>,
    acceptor: PodAcceptor,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let mut errors = AcceptErrors::new(format!(
        "pod {}/{}",
        acceptor.pod.namespace, acceptor.pod.name
    ));
    let outbound = Gate::new(Way::Outbound, &acceptor.pod.outbound, &acceptor.intercept);
    let inbound = Gate::new(Way::Inbound, &acceptor.pod.inbound, &acceptor.intercept);
    let take = move |side: Side, stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        match side {
            Side::Outbound => acceptor.outbound(&outbound, stream, peer),
            Side::Inbound => acceptor.inbound(&inbound, stream, peer),
        }
    };
    tokio::spawn(async move {
        let mut next = 0;
        loop {
            let accepted = tokio::select! {
                accepted = accept_any(&listeners, &mut next) => accepted,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((side, stream, peer)) => {
                    errors.accepted();
                    take(side, stream, peer);
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
    })
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
