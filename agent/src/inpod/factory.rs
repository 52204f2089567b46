//! Sockets made inside pods' network namespaces without a thread per pod or
//! per socket: ONE thread for all pods makes them on request, entering the
//! asking pod's namespace (`setns`) just for that. A socket keeps the
//! namespace it was made in, so the proxy connects it from its async runtime
//! afterwards like any other.
//!
//! A request is a round trip to that thread: the asking task waits without
//! holding its worker (the answer comes back on a oneshot channel), the
//! thread makes the socket (a few system calls) and wakes it. The proxy
//! asks once per new connection: to a pod's application from 127.0.0.6
//! (inbound), and for the pod's own upstream connections (unbound: the
//! kernel picks the pod's address and a port when it connects).
//!
//! Why one shared thread, and why it keeps `CAP_SYS_ADMIN`: a thread per pod
//! entered its pod's namespace once and then dropped every capability, but
//! cost the agent a thread (its stack pages, its share of the allocator's
//! arenas) and a namespace descriptor per pod. Entering a namespace needs
//! `CAP_SYS_ADMIN`, so a thread that enters one pod after another must keep
//! it; no other way makes a socket in a namespace the agent is not in (the
//! enrolling thread's short `setns`, `NetNs::run`, serves the listeners, made
//! once, but a connection cannot wait for a new thread). The thread keeps
//! that one capability and no other: permitted only, effective just around
//! `setns` (so the `socket`/`bind` calls run with none), and it reads nothing
//! a pod sends, only the address family and bind address the proxy asks for,
//! in the namespace of the pod the asking connection belongs to (the
//! `PodSocketFactory` of its `PodContext`, which no client can choose). When
//! its queue is empty it goes back to the agent's own namespace, so it never
//! keeps a pod's namespace alive after the pod is gone.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use caps::{CapSet, Capability};
use nix::sched::{CloneFlags, setns};
use tokio::sync::{mpsc, oneshot};

use crate::netns::NetNs;

/// Sockets asked for and not yet made, for all pods, at most; more wait for
/// a place (a socket takes a few microseconds to make).
const QUEUE: usize = 256;

/// What kind of socket, in which family.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Bound to this local address.
    Bound(SocketAddr),
    /// Unbound, of the family of this remote address.
    For(SocketAddr),
}

struct Request {
    netns: Arc<NetNs>,
    want: Want,
    reply: oneshot::Sender<io::Result<socket2::Socket>>,
}

/// The node's socket-making thread; pods ask it through [`PodSocketFactory`].
#[derive(Debug, Clone)]
pub struct SocketFactory {
    requests: mpsc::Sender<Request>,
}

/// The process's one factory, once started.
static NODE: OnceLock<SocketFactory> = OnceLock::new();

impl SocketFactory {
    /// The process's factory, started by the first call that succeeds: in
    /// `weir run`, the main thread as it makes the `Enroller`, once the data
    /// path is loaded. The thread starts in the caller's network namespace
    /// (the agent's, where it returns between requests) and needs the
    /// caller to hold `CAP_SYS_ADMIN`, which it keeps, alone.
    pub fn node() -> io::Result<&'static Self> {
        if let Some(factory) = NODE.get() {
            return Ok(factory);
        }
        let started = Self::start()?;
        // Two first calls at once: the loser's thread ends with its sender.
        Ok(NODE.get_or_init(|| started))
    }

    fn start() -> io::Result<Self> {
        let (requests, incoming) = mpsc::channel::<Request>(QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("weir-sockets".into())
            .spawn(move || {
                let home = File::open("/proc/thread-self/ns/net").and_then(|home| {
                    confine()?;
                    // Entering our own namespace proves the thread may setns.
                    enter(&home)?;
                    Ok(home)
                });
                let home = match home {
                    Ok(home) => {
                        let _ = ready_tx.send(Ok(()));
                        home
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(incoming, &home);
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the socket factory thread ended"))??;
        Ok(Self { requests })
    }

    /// Sockets inside the network namespace `netns`.
    pub fn for_pod(&self, netns: Arc<NetNs>) -> PodSocketFactory {
        PodSocketFactory {
            shared: self.clone(),
            netns,
        }
    }
}

/// Makes TCP sockets inside one pod, through the node's [`SocketFactory`].
/// Its handle on the pod's namespace is the one the enrolled pod keeps (for
/// resetting connections too): one descriptor per pod.
#[derive(Debug)]
pub struct PodSocketFactory {
    shared: SocketFactory,
    netns: Arc<NetNs>,
}

impl PodSocketFactory {
    /// A non-blocking TCP socket bound to `bind`, inside the pod.
    pub async fn socket(&self, bind: SocketAddr) -> io::Result<socket2::Socket> {
        self.ask(Want::Bound(bind)).await
    }

    /// A non-blocking TCP socket, not bound, inside the pod, for connecting
    /// to `remote`: it leaves with the address the pod's routes give it.
    pub async fn socket_for(&self, remote: SocketAddr) -> io::Result<socket2::Socket> {
        self.ask(Want::For(remote)).await
    }

    /// The pod's network namespace.
    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    async fn ask(&self, want: Want) -> io::Result<socket2::Socket> {
        let stopped = || io::Error::other("the socket factory has stopped");
        let (reply, response) = oneshot::channel();
        self.shared
            .requests
            .send(Request {
                netns: Arc::clone(&self.netns),
                want,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        response.await.map_err(|_| stopped())?
    }
}

/// Answers requests until every sender is gone: enters the asking pod's
/// namespace unless already there, and the agent's own once the queue is
/// empty.
fn serve(mut incoming: mpsc::Receiver<Request>, home: &File) {
    let mut inside: Option<Arc<NetNs>> = None;
    loop {
        let request = match incoming.try_recv() {
            Ok(request) => request,
            Err(mpsc::error::TryRecvError::Empty) => {
                if inside.take().is_some()
                    && let Err(e) = enter(home)
                {
                    // Never make a socket from a namespace we cannot name.
                    log::error!("socket factory: back to the agent's network namespace: {e}");
                    return;
                }
                match incoming.blocking_recv() {
                    Some(request) => request,
                    None => return,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        };
        let here = inside
            .as_ref()
            .is_some_and(|ns| Arc::ptr_eq(ns, &request.netns));
        let made = if here {
            Ok(())
        } else {
            // A failed setns leaves the thread where it was: not inside.
            inside = None;
            enter(request.netns.file()).map(|()| inside = Some(Arc::clone(&request.netns)))
        }
        .and_then(|()| make_socket(request.want));
        let _ = request.reply.send(made);
    }
}

/// `setns` into `netns` with `CAP_SYS_ADMIN` effective for that call only.
fn enter(netns: &File) -> io::Result<()> {
    caps::raise(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).map_err(io::Error::other)?;
    let entered = setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from);
    let lowered = caps::clear(None, CapSet::Effective).map_err(io::Error::other);
    entered.and(lowered)
}

/// This thread keeps `CAP_SYS_ADMIN` in its permitted set and nothing else.
fn confine() -> io::Result<()> {
    crate::privilege::confine_socket_factory().map_err(io::Error::other)
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
