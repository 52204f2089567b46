//! Sockets made inside a pod's network namespace without a thread per socket:
//! one thread per pod enters the namespace once and makes sockets on request.
//! A socket keeps the namespace it was made in, so the proxy connects it from
//! its async runtime afterwards like any other.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;

use super::InPodError;
use crate::netns::NetNs;

type Request = (SocketAddr, mpsc::SyncSender<io::Result<socket2::Socket>>);

/// Makes TCP sockets bound to a given local address inside one pod.
#[derive(Debug)]
pub struct PodSocketFactory {
    requests: mpsc::SyncSender<Request>,
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
        let (requests, incoming) = mpsc::sync_channel::<Request>(64);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
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
                for (bind, reply) in incoming {
                    let _ = reply.send(make_socket(bind));
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
    pub fn socket(&self, bind: SocketAddr) -> io::Result<socket2::Socket> {
        let (reply, response) = mpsc::sync_channel(1);
        self.requests
            .send((bind, reply))
            .map_err(|_| io::Error::other("the pod's socket factory has stopped"))?;
        response
            .recv()
            .map_err(|_| io::Error::other("the pod's socket factory has stopped"))?
    }
}

fn make_socket(bind: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&bind.into())?;
    Ok(socket)
}
