//! A real server on a service address in the node's router namespace: where a
//! connection lands when weir does NOT redirect it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use weir::netns::NetNs;

use crate::SimNode;

/// Answers every connection with `real server at <addr>` (a service on the
/// node) or `app at <local> saw <peer>` (a pod's application); stops on drop.
pub struct ServiceServer {
    pub addr: SocketAddr,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServiceServer {
    pub fn start(node: &SimNode, addr: SocketAddr) -> Result<Self> {
        node.add_service_address(addr.ip())?;
        let listener = node
            .router()
            .run(|| TcpListener::bind(addr))?
            .with_context(|| format!("binding the service server on {addr}"))?;
        Ok(Self::spawn(listener, addr, Reply::Service))
    }

    /// A pod's application listening on `addr` (e.g. 0.0.0.0:8080) in `netns`.
    pub fn start_app(netns: &NetNs, addr: SocketAddr) -> Result<Self> {
        let listener = netns
            .run(|| TcpListener::bind(addr))?
            .with_context(|| format!("binding the application on {addr}"))?;
        let addr = listener.local_addr()?;
        Ok(Self::spawn(listener, addr, Reply::App))
    }

    fn spawn(listener: TcpListener, addr: SocketAddr, reply: Reply) -> Self {
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
            std::thread::spawn(move || serve(listener, addr, reply, &served, &stop))
        };
        Self {
            addr,
            served,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy)]
enum Reply {
    Service,
    App,
}

fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    reply: Reply,
    served: &AtomicUsize,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(20u16)), Ok(n) if n > 0) {
            continue;
        }
        let Ok((mut stream, peer)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut message = String::new();
        let _ = stream.read_to_string(&mut message);
        let text = match reply {
            Reply::Service => format!("real server at {addr}\n"),
            Reply::App => {
                let local = stream.local_addr().unwrap_or(addr);
                format!("app at {} saw {}\n", canonical(local), canonical(peer))
            }
        };
        let _ = stream.write_all(text.as_bytes());
        served.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for ServiceServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A dual-stack application sees IPv4 peers as v4-mapped IPv6; show them as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
