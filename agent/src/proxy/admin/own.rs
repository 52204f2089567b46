//! The addresses this process's admin and stats listeners are bound to, so
//! that a forward proxy cluster, which goes wherever a request's authority
//! says, can never be pointed back at them (issue 10: a request to an
//! allowed host reached `/config_dump`). One list per process: the
//! listeners belong to the process, not to a config.

use std::net::SocketAddr;
use std::sync::RwLock;

static OWN: RwLock<Vec<SocketAddr>> = RwLock::new(Vec::new());

pub(super) fn register(bound: SocketAddr) {
    if let Ok(mut v) = OWN.write() {
        v.push(bound);
    }
}

/// Whether connecting to `dst` would reach this process's admin or stats
/// listener: the same port on the bound address, on any loopback address,
/// or on any address at all when bound to the unspecified one.
pub fn is_own(dst: SocketAddr) -> bool {
    let Ok(v) = OWN.read() else {
        return false;
    };
    v.iter().any(|own| {
        own.port() == dst.port()
            && (own.ip() == dst.ip()
                || own.ip().is_unspecified()
                || (own.ip().is_loopback() && dst.ip().is_loopback())
                || dst.ip().is_unspecified())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_port_on_loopback_or_wildcard_is_own() {
        register("127.0.0.1:1".parse().unwrap());
        register("0.0.0.0:2".parse().unwrap());
        for (dst, own) in [
            ("127.0.0.1:1", true),
            ("127.0.0.2:1", true),
            ("0.0.0.0:1", true),
            ("192.0.2.1:1", false),
            ("127.0.0.1:3", false),
            ("192.0.2.1:2", true),
        ] {
            assert_eq!(is_own(dst.parse().unwrap()), own, "{dst}");
        }
    }
}
