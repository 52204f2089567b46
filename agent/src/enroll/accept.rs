//! Accept loops of a pod's in-pod listeners, handing each connection to the
//! proxy with what the data path knows about it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    ConnPermit, InboundConn, Intercept, OutboundConn, PodBudget, PodContext, Refusal, Way,
};
use crate::datapath::OrigDstTable;
use crate::proxy::accept_errors::AcceptErrors;

pub(super) fn spawn_outbound(
    listener: Arc<TcpListener>,
    netns_cookie: u64,
    orig_dst: Arc<OrigDstTable>,
    intercept: Arc<dyn Intercept>,
    pod: Arc<PodContext>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let gate = Gate::new(Way::Outbound, &pod.outbound, &intercept);
    spawn_loop(listener, pod, stop, move |stream, peer, pod| {
        // Taken before the budget is asked, so a connection over budget
        // does not leave its entry to crowd the LRU table.
        match orig_dst.take_in(netns_cookie, peer) {
            Ok(Some(orig_dst)) => {
                if let Some(permit) = gate.admit(&stream, pod) {
                    intercept.outbound(OutboundConn {
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
    })
}

pub(super) fn spawn_inbound(
    listener: Arc<TcpListener>,
    intercept: Arc<dyn Intercept>,
    pod: Arc<PodContext>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let gate = Gate::new(Way::Inbound, &pod.inbound, &intercept);
    spawn_loop(listener, pod, stop, move |stream, peer, pod| {
        let Some(permit) = gate.admit(&stream, pod) else {
            return;
        };
        // sk_lookup hands over the connection as addressed: the local
        // address is where the client was connecting.
        match stream.local_addr() {
            Ok(dst) => intercept.inbound(InboundConn {
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
    })
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

/// Accept on `listener`, handing each connection (Nagle off) to `hand`,
/// until `stop` says so; then take what is already queued, and end.
fn spawn_loop(
    listener: Arc<TcpListener>,
    pod: Arc<PodContext>,
    mut stop: watch::Receiver<bool>,
    hand: impl Fn(TcpStream, SocketAddr, &Arc<PodContext>) + Send + 'static,
) -> JoinHandle<()> {
    let take = move |stream: TcpStream, peer: SocketAddr, pod: &Arc<PodContext>| {
        let _ = stream.set_nodelay(true);
        hand(stream, peer, pod);
    };
    tokio::spawn(async move {
        let mut errors = AcceptErrors::new(format!("pod {}/{}", pod.namespace, pod.name));
        loop {
            let accepted = tokio::select! {
                accepted = accept(&listener, &mut errors) => accepted,
                _ = stop.wait_for(|stop| *stop) => break,
            };
            if let Some((stream, peer)) = accepted {
                take(stream, peer, &pod);
            }
        }
        // A zero timeout still polls once: whatever the queue holds now.
        while let Ok(Ok((stream, peer))) =
            tokio::time::timeout(Duration::ZERO, listener.accept()).await
        {
            take(stream, peer, &pod);
        }
    })
}

/// One accept; a failure (typically EMFILE) backs off and is logged at a
/// bounded rate (`AcceptErrors`).
async fn accept(
    listener: &TcpListener,
    errors: &mut AcceptErrors,
) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => {
            errors.accepted();
            Some(accepted)
        }
        Err(e) => {
            errors.failed(&e).await;
            None
        }
    }
}

pub(super) fn into_tokio(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}
