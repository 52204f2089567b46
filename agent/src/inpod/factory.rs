//! Sockets made inside a pod's network namespace without a thread per socket:
//! one thread per pod enters the namespace once and makes sockets on request.
//! A socket keeps the namespace it was made in, so the proxy connects it from
//! its async runtime afterwards like any other.
//!
//! A request is a round trip to that thread: the asking task waits without
//! holding its worker (the answer comes back on a oneshot channel), the
//! thread makes the socket (a few system calls) and wakes it. The proxy
//! asks once per new connection: to a pod's application from 127.0.0.6
//! (inbound), and for the pod's own upstream connections (unbound: the
//! kernel picks the pod's address and a port when it connects).

use std::io;
use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use super::InPodError;
use crate::netns::NetNs;

/// Sockets asked for and not yet made, at most; more wait for a place.
const QUEUE: usize = 64;

/// What kind of socket, in which family.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Bound to this local address.
    Bound(SocketAddr),
    /// Unbound, of the family of this remote address.
    For(SocketAddr),
}

type Request = (Want, oneshot::Sender<io::Result<socket2::Socket>>);

/// Makes TCP sockets inside one pod.
#[derive(Debug)]
pub struct PodSocketFactory {
    requests: mpsc::Sender<Request>,
}

impl PodSocketFactory {
    pub fn start(netns: &NetNs, pod: &str) -> Result<Self, InPodError> {
        let file = netns
            .file()
            .try_clone()
            .map_err(|source| InPodError::Factory {
                netns: netns.path().display().to_string(),
                source,
            })?;
        let (requests, mut incoming) = mpsc::channel::<Request>(QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("weir-sockets-{pod}"))
            .spawn(move || {
                // Inside the pod, the thread needs no privilege to make sockets:
                // it gives up what it inherited from the enrolling thread.
                let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)
                    .and_then(|()| {
                        crate::privilege::drop_all_on_this_thread().map_err(io::Error::other)
                    });
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                // Ends when the factory (the sending side) is dropped.
                while let Some((want, reply)) = incoming.blocking_recv() {
                    let _ = reply.send(make_socket(want));
                }
            })
            .map_err(|source| InPodError::Factory {
                netns: netns.path().display().to_string(),
                source,
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("socket factory thread ended"))
            .and_then(|entered| entered)
            .map_err(|source| InPodError::Factory {
                netns: netns.path().display().to_string(),
                source,
            })?;
        Ok(Self { requests })
    }

    /// A non-blocking TCP socket bound to `bind`, inside the pod.
    pub async fn socket(&self, bind: SocketAddr) -> io::Result<socket2::Socket> {
        self.ask(Want::Bound(bind)).await
    }

    /// A non-blocking TCP socket, not bound, inside the pod, for connecting
    /// to `remote`: it leaves with the address the pod's routes give it.
    pub async fn socket_for(&self, remote: SocketAddr) -> io::Result<socket2::Socket> {
        self.ask(Want::For(remote)).await
    }

    async fn ask(&self, want: Want) -> io::Result<socket2::Socket> {
        let stopped = || io::Error::other("the pod's socket factory has stopped");
        let (reply, response) = oneshot::channel();
        self.requests
            .send((want, reply))
            .await
            .map_err(|_| stopped())?;
        response.await.map_err(|_| stopped())?
    }
}

fn make_socket(want: Want) -> io::Result<socket2::Socket> {
    let family = match want {
        Want::Bound(addr) | Want::For(addr) => addr,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(family),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Want::Bound(bind) = want {
        socket.bind(&bind.into())?;
    }
    Ok(socket)
}
