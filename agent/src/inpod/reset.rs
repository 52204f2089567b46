//! Resetting a pod's TCP connections by socket cookie, from outside the
//! process that owns them: the kernel's socket-diagnostics netlink interface
//! (what `ss -K` uses) lists the pod namespace's sockets with their cookies
//! and destroys the chosen ones (`SOCK_DESTROY`, which needs
//! CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN). The application sees
//! ECONNABORTED and the peer a RST, as if the connection had been cut.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use super::InPodError;
use crate::netns::NetNs;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_sockid`: ports, addresses, interface, cookie.
const SOCKID_LEN: usize = 48;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_msg` up to and including its sockid.
const MSG_SOCKID_END: usize = 4 + SOCKID_LEN;
/// TCP states worth resetting: every one a connection can be in but LISTEN,
/// TIME_WAIT and CLOSE (nothing left to cut).
const OPEN_STATES: u32 =
    (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);

/// What [`reset_connections`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResetOutcome {
    /// Connections destroyed.
    pub reset: usize,
    /// Connections found open that this kernel cannot destroy (built
    /// without CONFIG_INET_DIAG_DESTROY): left open.
    pub not_supported: usize,
}

/// How long enrolment waits for a reset. Listing a namespace's sockets may
/// load the kernel's inet_diag module first (modprobe); enrolment never
/// waits on that for long.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

/// Destroys the TCP sockets in `netns` whose cookies are in `cookies`; those
/// not found had closed already. Runs on a thread of its own inside the
/// namespace, which inherits CAP_NET_ADMIN from the calling (enrolling)
/// thread; gives up waiting after [`RESET_TIMEOUT`].
pub fn reset_connections(netns: &NetNs, cookies: HashSet<u64>) -> Result<ResetOutcome, InPodError> {
    let name = netns.path().display().to_string();
    let failed = |source| InPodError::SockDiag {
        netns: name.clone(),
        source,
    };
    let file = netns.file().try_clone().map_err(failed)?;
    let (done, outcome) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("weir-reset".into())
        .spawn(move || {
            let result = setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
                .and_then(|()| reset_here(&cookies));
            let _ = done.send(result);
        })
        .map_err(failed)?;
    match outcome.recv_timeout(RESET_TIMEOUT) {
        Ok(result) => result.map_err(failed),
        Err(_) => Err(failed(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from sock_diag within {RESET_TIMEOUT:?}"),
        ))),
    }
}

/// [`reset_connections`] on the calling thread, in its namespace.
fn reset_here(cookies: &HashSet<u64>) -> io::Result<ResetOutcome> {
    let diag = open_sock_diag()?;
    let mut outcome = ResetOutcome::default();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for sockid in open_sockets(&diag, family)? {
            if !cookies.contains(&cookie_of(&sockid)) {
                continue;
            }
            match destroy(&diag, family, &sockid) {
                Ok(()) => outcome.reset += 1,
                // Closed between the listing and now.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => outcome.not_supported += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(outcome)
}

fn open_sock_diag() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The sockid of every TCP socket of `family` in an open state.
fn open_sockets(diag: &OwnedFd, family: u8) -> io::Result<Vec<[u8; SOCKID_LEN]>> {
    send(
        diag,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        &request(family, &[0; SOCKID_LEN]),
    )?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = recv(diag, &mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            match kind {
                NLMSG_DONE => return Ok(found),
                NLMSG_ERROR => return Err(netlink_error(payload).unwrap_or_else(truncated)),
                SOCK_DIAG_BY_FAMILY if payload.len() >= MSG_SOCKID_END => {
                    let mut sockid = [0u8; SOCKID_LEN];
                    sockid.copy_from_slice(&payload[4..MSG_SOCKID_END]);
                    found.push(sockid);
                }
                _ => {}
            }
        }
    }
}

/// Asks the kernel to destroy the socket `sockid` names (its cookie included,
/// so a socket that reused the addresses since is not touched).
fn destroy(diag: &OwnedFd, family: u8, sockid: &[u8; SOCKID_LEN]) -> io::Result<()> {
    send(
        diag,
        SOCK_DESTROY,
        NLM_F_REQUEST | NLM_F_ACK,
        &request(family, sockid),
    )?;
    let mut buf = [0u8; 512];
    loop {
        let n = recv(diag, &mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                return match netlink_error(payload) {
                    None => Ok(()),
                    Some(e) => Err(e),
                };
            }
        }
    }
}

fn request(family: u8, sockid: &[u8; SOCKID_LEN]) -> [u8; REQ_LEN] {
    let mut req = [0u8; REQ_LEN];
    req[0] = family;
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&OPEN_STATES.to_ne_bytes());
    req[8..].copy_from_slice(sockid);
    req
}

/// `inet_diag_sockid.idiag_cookie`: two host-order words, low first.
fn cookie_of(sockid: &[u8; SOCKID_LEN]) -> u64 {
    let word = |at: usize| {
        u32::from_ne_bytes([sockid[at], sockid[at + 1], sockid[at + 2], sockid[at + 3]])
    };
    u64::from(word(40)) | (u64::from(word(44)) << 32)
}

fn send(diag: &OwnedFd, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
    let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + payload.len());
    msg.extend_from_slice(&((NLMSG_HDR_LEN + payload.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(payload);
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `msg` and `kernel` outlive the call; lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            diag.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const kernel).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv(diag: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call.
    let n = unsafe { libc::recv(diag.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The netlink messages in one datagram, as (type, payload); stops at the
/// first header that does not fit.
fn messages(mut datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if datagram.len() < NLMSG_HDR_LEN {
            return None;
        }
        let len = u32::from_ne_bytes(datagram[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().ok()?);
        if len < NLMSG_HDR_LEN || len > datagram.len() {
            return None;
        }
        let payload = &datagram[NLMSG_HDR_LEN..len];
        // Messages are 4-byte aligned.
        datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
        Some((kind, payload))
    })
}

/// The error an NLMSG_ERROR carries; `None` for 0, an acknowledgement.
fn netlink_error(payload: &[u8]) -> Option<io::Error> {
    let code = i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?);
    (code != 0).then(|| io::Error::from_raw_os_error(-code))
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "truncated netlink error message",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_read_low_word_first() {
        let mut sockid = [0u8; SOCKID_LEN];
        sockid[40..44].copy_from_slice(&0x5566_7788u32.to_ne_bytes());
        sockid[44..48].copy_from_slice(&0x1122_3344u32.to_ne_bytes());
        assert_eq!(cookie_of(&sockid), 0x1122_3344_5566_7788);
    }

    #[test]
    fn datagrams_split_into_aligned_messages_and_stop_at_a_bad_length() {
        let mut datagram = Vec::new();
        for (kind, payload) in [(20u16, &[1u8, 2, 3][..]), (3, &[][..])] {
            let len = (NLMSG_HDR_LEN + payload.len()) as u32;
            datagram.extend_from_slice(&len.to_ne_bytes());
            datagram.extend_from_slice(&kind.to_ne_bytes());
            datagram.extend_from_slice(&[0; 10]);
            datagram.extend_from_slice(payload);
            datagram.resize(datagram.len().next_multiple_of(4), 0);
        }
        let parsed: Vec<(u16, Vec<u8>)> =
            messages(&datagram).map(|(k, p)| (k, p.to_vec())).collect();
        assert_eq!(parsed, vec![(20, vec![1, 2, 3]), (3, vec![])]);
        // A length past the end is not read.
        datagram[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(messages(&datagram).count(), 0);
    }

    #[test]
    fn errors_carry_the_negated_errno() {
        assert!(netlink_error(&0i32.to_ne_bytes()).is_none());
        let e = netlink_error(&(-libc::ENOENT).to_ne_bytes()).unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(netlink_error(&[0, 0]).is_none());
    }
}
