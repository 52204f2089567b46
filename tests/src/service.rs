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

use crate::SimNode;

/// Answers every connection with `real server at <addr>`; stops on drop.
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
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (served, stop) = (Arc::clone(&served), Arc::clone(&stop));
            std::thread::spawn(move || serve(listener, addr, &served, &stop))
        };
        Ok(Self {
            addr,
            served,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

fn serve(listener: TcpListener, addr: SocketAddr, served: &AtomicUsize, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::from(20u16)), Ok(n) if n > 0) {
            continue;
        }
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut message = String::new();
        let _ = stream.read_to_string(&mut message);
        let _ = stream.write_all(format!("real server at {addr}\n").as_bytes());
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
