//! Recovering where a redirected connection was going, for the socket the proxy
//! accepted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use aya::maps::MapData;
use weir_common::{AF_INET, AF_INET6, ConnKey, SockAddr};

use super::sys;
use crate::addr::OrigDst;
use crate::socket::netns_cookie;

/// The kernel's internal "operation not supported" (not `EOPNOTSUPP`).
const ENOTSUPP: i32 = 524;

/// The kernel table of original destinations (an LRU hash), keyed by client
/// address and netns.
pub struct OrigDstTable {
    map: MapData,
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on hash maps needs Linux 5.14; before
    /// that, a lookup then a delete.
    split_take: AtomicBool,
}

impl OrigDstTable {
    pub(super) fn new(map: MapData) -> Self {
        Self {
            map,
            split_take: AtomicBool::new(false),
        }
    }

    /// The original destination of an accepted connection, removing it from the
    /// table so that a later connection from the same port cannot inherit it.
    /// `None` when the connection was not redirected by weir.
    pub fn take(&self, accepted: impl AsFd, peer: SocketAddr) -> std::io::Result<Option<OrigDst>> {
        self.take_in(netns_cookie(accepted.as_fd())?, peer)
    }

    /// [`Self::take`] for a connection accepted in the network namespace with
    /// cookie `netns_cookie` (known to the listener: no `getsockopt` per connection).
    /// One bpf(2) call: the entry is read and removed at once.
    pub fn take_in(&self, netns_cookie: u64, peer: SocketAddr) -> std::io::Result<Option<OrigDst>> {
        let key = ConnKey {
            netns_cookie,
            client: to_sock_addr(peer),
            _pad: 0,
        };
        let mut orig = SockAddr::default();
        let found = if self.split_take.load(Ordering::Relaxed) {
            self.lookup_then_delete(&key, &mut orig)
        } else {
            match self.elem(sys::BPF_MAP_LOOKUP_AND_DELETE_ELEM, &key, Some(&mut orig)) {
                // 5.10 answers ENOTSUPP (524, kernel-internal, not in libc),
                // older kernels EINVAL.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => {
                    log::info!(
                        "kernel without lookup-and-delete on hash maps: two calls per connection"
                    );
                    self.split_take.store(true, Ordering::Relaxed);
                    self.lookup_then_delete(&key, &mut orig)
                }
                other => other,
            }
        };
        match found {
            Ok(()) => Ok(from_sock_addr(&orig).map(OrigDst)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn lookup_then_delete(&self, key: &ConnKey, orig: &mut SockAddr) -> std::io::Result<()> {
        self.elem(sys::BPF_MAP_LOOKUP_ELEM, key, Some(orig))?;
        // Already read: a failed removal only leaves an entry LRU evicts.
        let _ = self.elem(sys::BPF_MAP_DELETE_ELEM, key, None);
        Ok(())
    }

    fn elem(
        &self,
        cmd: libc::c_long,
        key: &ConnKey,
        value: Option<&mut SockAddr>,
    ) -> std::io::Result<()> {
        let attr = sys::MapElemAttr {
            map_fd: self.map.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: key as *const ConnKey as u64,
            value: value.map_or(0, |v| v as *mut SockAddr as u64),
            flags: 0,
        };
        // SAFETY: a fully initialised map_elem attribute; `key` points at a
        // ConnKey and `value` (when given) at a writable SockAddr, both of the
        // map's key and value sizes (the same repr(C) types the programs use),
        // alive for the call.
        unsafe { sys::bpf(cmd, &attr) }.map(drop)
    }
}

fn to_sock_addr(addr: SocketAddr) -> SockAddr {
    match addr {
        SocketAddr::V4(v4) => SockAddr {
            addr: [u32::from_ne_bytes(v4.ip().octets()), 0, 0, 0],
            port: v4.port(),
            family: AF_INET,
        },
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => to_sock_addr(SocketAddr::new(IpAddr::V4(v4), v6.port())),
            None => {
                let o = v6.ip().octets();
                let word = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                SockAddr {
                    addr: [word(0), word(4), word(8), word(12)],
                    port: v6.port(),
                    family: AF_INET6,
                }
            }
        },
    }
}

pub(super) fn from_sock_addr(sa: &SockAddr) -> Option<SocketAddr> {
    let ip = match sa.family {
        AF_INET => IpAddr::V4(Ipv4Addr::from(sa.addr[0].to_ne_bytes())),
        AF_INET6 => {
            let mut octets = [0u8; 16];
            for (i, word) in sa.addr.iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, sa.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_kernel_layout() {
        for addr in ["198.51.100.10:80", "[2001:db8::10]:8080", "127.0.0.1:1"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(from_sock_addr(&to_sock_addr(addr)), Some(addr));
        }
    }

    #[test]
    fn ipv4_is_kept_in_network_byte_order() {
        let sa = to_sock_addr("198.51.100.10:80".parse().unwrap());
        assert_eq!(sa.addr[0].to_ne_bytes(), [198, 51, 100, 10]);
        assert_eq!(sa.port, 80);
    }

    #[test]
    fn v4_mapped_peer_is_keyed_as_ipv4() {
        let mapped = to_sock_addr("[::ffff:127.0.0.1]:5000".parse().unwrap());
        assert_eq!(mapped, to_sock_addr("127.0.0.1:5000".parse().unwrap()));
    }
}
