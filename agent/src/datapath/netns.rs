//! Namespace cookies on kernels without `SO_NETNS_COOKIE` (before 5.14): the
//! agent must know each pod namespace's cookie (the key of `WEIR_PODS` and of
//! original destinations) but cannot ask the socket for it. The getsockname
//! hooks on the agent's own cgroup record it (agent-ebpf/src/netns.rs); this
//! side calls `getsockname` on a socket in the namespace and reads the record.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use aya::maps::{HashMap, MapData, MapError};
use aya::programs::CgroupSockAddr;
use aya::programs::links::FdLink;
use weir_common::{MAP_NETNS_BY_SOCKET, PROG_NETNS_NAME4, PROG_NETNS_NAME6};

use super::{DatapathError, cgroup_fd_link, program, take_map};
use crate::socket::{NetnsCookieSource, add_netns_cookie_source, socket_cookie};

/// The hooks and their map; registered with `crate::socket` while alive.
pub(super) struct NetnsHooks {
    map: HashMap<MapData, u64, u64>,
    _links: Vec<FdLink>,
}

/// Loads and attaches the hooks to the agent's own cgroup, and registers them.
pub(super) fn attach(ebpf: &mut aya::Ebpf) -> Result<Arc<NetnsHooks>, DatapathError> {
    let (_, cgroup) = super::accel::open_own_cgroup()?;
    let mut links = Vec::with_capacity(2);
    for name in [PROG_NETNS_NAME4, PROG_NETNS_NAME6] {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?;
        prog.load().map_err(|e| DatapathError::program(name, e))?;
        links.push(cgroup_fd_link!(prog, &cgroup, name)?);
    }
    let hooks = Arc::new(NetnsHooks {
        map: take_map(ebpf, MAP_NETNS_BY_SOCKET)?,
        _links: links,
    });
    // Same allocation: registered weakly, alive as long as the data path
    // holds `hooks`.
    let source: Arc<dyn NetnsCookieSource> = hooks.clone();
    add_netns_cookie_source(&source);
    Ok(hooks)
}

impl NetnsCookieSource for NetnsHooks {
    fn netns_cookie(&self, sock: BorrowedFd<'_>) -> io::Result<Option<u64>> {
        // getsockname runs the hook, which records this socket's namespace.
        // SAFETY: zeroed sockaddr_storage is valid; `len` says its size.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `addr` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockname(
                sock.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        match self.map.get(&socket_cookie(sock)?, 0) {
            Ok(cookie) => Ok(Some(cookie)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}
