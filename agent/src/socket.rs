//! Socket options the standard library does not wrap. The only module besides
//! the eBPF loader that needs `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, Weak};

/// `SO_NETNS_COOKIE` (Linux 5.14+): the cookie of the socket's network namespace,
/// the same value `bpf_get_netns_cookie` gives the eBPF programs.
const SO_NETNS_COOKIE: libc::c_int = 71;
/// `SO_COOKIE` (Linux 4.12+): the socket's own cookie, as `bpf_get_socket_cookie`.
const SO_COOKIE: libc::c_int = 57;

/// Where else a namespace cookie can be learnt on kernels without
/// `SO_NETNS_COOKIE`: the eBPF data path registers one while it is loaded
/// (datapath/netns.rs), so this layer needs to know nothing about it.
pub trait NetnsCookieSource: Send + Sync {
    /// The cookie of `sock`'s namespace, `None` if this source cannot tell.
    fn netns_cookie(&self, sock: BorrowedFd<'_>) -> io::Result<Option<u64>>;
}

/// Live sources, weakly held: each goes away with the data path that made it.
static SOURCES: Mutex<Vec<Weak<dyn NetnsCookieSource>>> = Mutex::new(Vec::new());

/// Registers `source` for as long as it lives.
pub fn add_netns_cookie_source(source: &Arc<dyn NetnsCookieSource>) {
    let mut sources = SOURCES.lock().unwrap_or_else(|e| e.into_inner());
    sources.retain(|s| s.strong_count() > 0);
    sources.push(Arc::downgrade(source));
}

/// The cookie of `sock`'s network namespace: `SO_NETNS_COOKIE`, or on older
/// kernels a registered [`NetnsCookieSource`].
pub fn netns_cookie(sock: BorrowedFd<'_>) -> io::Result<u64> {
    match get_u64(sock, SO_NETNS_COOKIE) {
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
            let sources: Vec<_> = SOURCES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for source in sources {
                if let Some(cookie) = source.netns_cookie(sock)? {
                    return Ok(cookie);
                }
            }
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no SO_NETNS_COOKIE (Linux 5.14) and no eBPF data path is loaded to tell the namespace cookie",
            ))
        }
        other => other,
    }
}

/// The socket's own cookie (`SO_COOKIE`).
pub fn socket_cookie(sock: BorrowedFd<'_>) -> io::Result<u64> {
    get_u64(sock, SO_COOKIE)
}

/// Whether the kernel answers `SO_NETNS_COOKIE` (asked on a fresh socket).
pub fn has_so_netns_cookie() -> io::Result<bool> {
    let sock = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    match get_u64(std::os::fd::AsFd::as_fd(&sock), SO_NETNS_COOKIE) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn get_u64(sock: BorrowedFd<'_>, option: libc::c_int) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
