//! Recovering where a redirected connection was going, for the socket the proxy
//! accepted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Mutex;

use aya::maps::{HashMap, MapData};
use weir_common::{AF_INET, AF_INET6, ConnKey, SockAddr};

use crate::socket::netns_cookie;

/// The address an application asked to connect to before weir redirected it.
/// A type of its own so it is never mixed up with the peer or local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrigDst(pub SocketAddr);

/// The kernel table of original destinations (an LRU hash), keyed by client
/// address and netns.
pub struct OrigDstTable {
    map: Mutex<HashMap<MapData, ConnKey, SockAddr>>,
}

impl OrigDstTable {
    pub(super) fn new(map: HashMap<MapData, ConnKey, SockAddr>) -> Self {
        Self {
            map: Mutex::new(map),
        }
    }

    /// The original destination of an accepted connection, removing it from the
    /// table so that a later connection from the same port cannot inherit it.
    /// `None` when the connection was not redirected by weir.
    pub fn take(&self, accepted: impl AsFd, peer: SocketAddr) -> std::io::Result<Option<OrigDst>> {
        let key = ConnKey {
            netns_cookie: netns_cookie(accepted.as_fd())?,
            client: to_sock_addr(peer),
            _pad: 0,
        };
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Ok(orig) = map.get(&key, 0) else {
            return Ok(None);
        };
        // Already looked up: a failed removal only leaves an entry LRU evicts.
        let _ = map.remove(&key);
        Ok(from_sock_addr(&orig).map(OrigDst))
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

fn from_sock_addr(sa: &SockAddr) -> Option<SocketAddr> {
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
