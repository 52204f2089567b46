//! One request/response between a pod's application and a listener standing in
//! for the proxy, reporting what the proxy side learned.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use weir::datapath::{OrigDst, OrigDstTable};

use crate::SimPod;

/// What happened to one connection the pod's application made.
#[derive(Debug)]
pub struct Exchange {
    /// Set when the listener accepted the connection.
    pub accepted: Option<Accepted>,
    /// What the application printed (the reply it got).
    pub client_stdout: String,
    pub client_stderr: String,
    pub client_succeeded: bool,
}

#[derive(Debug)]
pub struct Accepted {
    pub peer: SocketAddr,
    /// The accepted socket's local address.
    pub local: SocketAddr,
    pub orig_dst: Option<OrigDst>,
    pub message: String,
}

/// Where the client runs relative to the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the pod's cgroup and namespace: an application of the pod.
    InPod,
    /// In the pod's namespace, outside its cgroup.
    OutsideCgroup,
}

/// Runs `sim-client target message` in `pod` and serves at most one connection
/// on `listener` meanwhile, answering with what the proxy learned from the
/// egress original-destination table.
pub fn exchange(
    pod: &SimPod,
    client_bin: &Path,
    placement: Placement,
    target: SocketAddr,
    listener: &TcpListener,
    table: &OrigDstTable,
) -> Result<Exchange> {
    exchange_with(
        pod,
        client_bin,
        placement,
        target,
        listener,
        |stream, peer| serve(stream, peer, table),
    )
}

/// Like [`exchange`], with `handle` serving the connection if one arrives.
pub fn exchange_with(
    pod: &SimPod,
    client_bin: &Path,
    placement: Placement,
    target: SocketAddr,
    listener: &TcpListener,
    handle: impl FnOnce(TcpStream, SocketAddr) -> Result<Accepted>,
) -> Result<Exchange> {
    let mut cmd = Command::new(client_bin);
    cmd.arg(target.to_string()).arg("hello from the pod");
    let process = match placement {
        Placement::InPod => pod.spawn(cmd)?,
        Placement::OutsideCgroup => pod.spawn_outside_cgroup(cmd)?,
    };
    // The client is done within its own 5 s timeouts; a connection for us shows
    // up well before that or not at all.
    let accepted = match accept_within(listener, Duration::from_secs(6), process.pid())? {
        Some((stream, peer)) => Some(handle(stream, peer)?),
        None => None,
    };
    let out = process.wait_output(Duration::from_secs(10))?;
    Ok(Exchange {
        accepted,
        client_stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        client_stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        client_succeeded: out.status.success(),
    })
}

/// Accepts one connection, or gives up when `timeout` passes or the client
/// process `pid` has exited without connecting here.
fn accept_within(
    listener: &TcpListener,
    timeout: Duration,
    pid: u32,
) -> Result<Option<(TcpStream, SocketAddr)>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(20u16)).context("poll on listener")?;
        if ready > 0 {
            return Ok(Some(listener.accept().context("accept")?));
        }
        if !process_alive(pid) || std::time::Instant::now() >= deadline {
            // One more look: the client may have connected right before exiting.
            let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::ZERO).context("poll on listener")? > 0 {
                return Ok(Some(listener.accept().context("accept")?));
            }
            return Ok(None);
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by us) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

fn serve(mut stream: TcpStream, peer: SocketAddr, table: &OrigDstTable) -> Result<Accepted> {
    let orig_dst = table
        .take(stream.as_fd(), peer)
        .context("looking up the original destination")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut message = String::new();
    stream
        .read_to_string(&mut message)
        .context("reading the client's message")?;
    let reply = match orig_dst {
        Some(OrigDst(addr)) => format!("weir: you were going to {addr}\n"),
        None => "weir: no original destination\n".to_owned(),
    };
    if let Err(e) = stream.write_all(reply.as_bytes()) {
        bail!("replying to {peer}: {e}");
    }
    Ok(Accepted {
        peer,
        local: stream.local_addr()?,
        orig_dst,
        message,
    })
}
