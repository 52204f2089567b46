//! Accept loops of a pod's in-pod listeners, handing each connection to the
//! proxy with what the data path knows about it.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{InboundConn, Intercept, OutboundConn, PodContext};
use crate::accept_errors::AcceptErrors;
use crate::datapath::{OrigDst, OrigDstTable};

pub(super) fn spawn_outbound(
    listener: std::net::TcpListener,
    netns_cookie: u64,
    orig_dst: Arc<OrigDstTable>,
    intercept: Arc<dyn Intercept>,
    pod: Arc<PodContext>,
) -> std::io::Result<JoinHandle<()>> {
    let listener = into_tokio(listener)?;
    Ok(tokio::spawn(async move {
        let mut errors = AcceptErrors::new(format!("pod {}/{}", pod.namespace, pod.name));
        loop {
            let Some((stream, peer)) = accept(&listener, &mut errors).await else {
                continue;
            };
            match orig_dst.take_in(netns_cookie, peer) {
                Ok(Some(OrigDst(orig_dst))) => {
                    let _ = stream.set_nodelay(true);
                    intercept.outbound(OutboundConn {
                        stream,
                        orig_dst,
                        pod: Arc::clone(&pod),
                    });
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
    }))
}

pub(super) fn spawn_inbound(
    listener: std::net::TcpListener,
    intercept: Arc<dyn Intercept>,
    pod: Arc<PodContext>,
) -> std::io::Result<JoinHandle<()>> {
    let listener = into_tokio(listener)?;
    Ok(tokio::spawn(async move {
        let mut errors = AcceptErrors::new(format!("pod {}/{}", pod.namespace, pod.name));
        loop {
            let Some((stream, peer)) = accept(&listener, &mut errors).await else {
                continue;
            };
            // sk_lookup hands over the connection as addressed: the local
            // address is where the client was connecting.
            match stream.local_addr() {
                Ok(dst) => {
                    let _ = stream.set_nodelay(true);
                    intercept.inbound(InboundConn {
                        stream,
                        dst,
                        peer,
                        pod: Arc::clone(&pod),
                    });
                }
                Err(e) => log::warn!(
                    "pod {}/{}: inbound connection from {peer}: {e}",
                    pod.namespace,
                    pod.name
                ),
            }
        }
    }))
}

async fn accept(
    listener: &TcpListener,
    errors: &mut AcceptErrors,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
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

fn into_tokio(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}
