//! Listeners that are not bound (`bind_to_port: false`, Envoy's virtual
//! listeners): they serve connections whose original destination they
//! claim, handed over by whoever knows that destination (interception).
//! Swapped by the runtime on each reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::OutboundTrafficPolicy;
use crate::proxy::http::ListenerContext;
use crate::proxy::tls::server_names::ServerNames;

/// A listener that is not bound.
pub struct VirtualListener {
    pub name: Arc<str>,
    pub ctx: Arc<ListenerContext>,
    /// The TLS server names it takes; empty: every connection.
    pub server_names: ServerNames<()>,
}

impl VirtualListener {
    /// Whether it takes a connection that is not TLS: only when it names
    /// no servers (an Envoy filter chain matching `server_names` never
    /// takes plain text).
    pub fn claims_plain(&self) -> bool {
        self.server_names.is_empty()
    }

    /// Whether it takes a TLS connection whose ClientHello asked for `sni`.
    pub fn claims_tls(&self, sni: Option<&str>) -> bool {
        self.server_names.is_empty()
            || sni.is_some_and(|name| self.server_names.get(name).is_some())
    }
}

/// The virtual listeners of the installed config, by the address they claim.
#[derive(Default)]
pub struct VirtualListeners {
    exact: HashMap<SocketAddr, Arc<VirtualListener>>,
    /// (is IPv6, port) of listeners on `0.0.0.0` / `[::]`.
    wildcard: HashMap<(bool, u16), Arc<VirtualListener>>,
    /// Where a destination no listener claims goes.
    pub policy: OutboundTrafficPolicy,
}

impl VirtualListeners {
    pub fn new(
        listeners: impl IntoIterator<Item = (SocketAddr, Arc<VirtualListener>)>,
        policy: OutboundTrafficPolicy,
    ) -> Self {
        let mut t = Self {
            policy,
            ..Self::default()
        };
        for (addr, l) in listeners {
            if addr.ip().is_unspecified() {
                t.wildcard.insert((addr.is_ipv6(), addr.port()), l);
            } else {
                t.exact.insert(addr, l);
            }
        }
        t
    }

    /// The listener on `orig_dst`: exact address first, then a wildcard
    /// listener on its port (same address family).
    pub fn lookup(&self, orig_dst: SocketAddr) -> Option<&Arc<VirtualListener>> {
        self.exact
            .get(&orig_dst)
            .or_else(|| self.wildcard.get(&(orig_dst.is_ipv6(), orig_dst.port())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proxy::metrics::Metrics;

    /// A virtual listener with no routes that takes `server_names`.
    pub(crate) fn virtual_listener(
        name: &str,
        m: &Metrics,
        server_names: &[&str],
    ) -> VirtualListener {
        let state = crate::proxy::build::listener_state(
            &serde_json::from_value(serde_json::json!({
                "name": name, "address": "127.0.0.1:1", "virtual_hosts": []
            }))
            .unwrap(),
            "t",
            &Default::default(),
            m,
        )
        .unwrap();
        VirtualListener {
            name: name.into(),
            ctx: Arc::new(ListenerContext::new(name, state, m)),
            server_names: server_names.iter().copied().collect(),
        }
    }

    fn vl(name: &str, m: &Metrics) -> Arc<VirtualListener> {
        Arc::new(virtual_listener(name, m, &[]))
    }

    #[test]
    fn exact_then_wildcard_port() {
        let m = Metrics::new().unwrap();
        let t = VirtualListeners::new(
            [
                ("10.0.0.1:80".parse().unwrap(), vl("exact", &m)),
                ("0.0.0.0:80".parse().unwrap(), vl("any80", &m)),
                ("[::]:443".parse().unwrap(), vl("v6any443", &m)),
            ],
            OutboundTrafficPolicy::AllowAny,
        );
        let name = |a: &str| t.lookup(a.parse().unwrap()).map(|l| l.name.to_string());
        assert_eq!(name("10.0.0.1:80").as_deref(), Some("exact"));
        assert_eq!(name("10.0.0.2:80").as_deref(), Some("any80"));
        assert_eq!(name("10.0.0.1:81"), None);
        assert_eq!(name("[fd00::1]:443").as_deref(), Some("v6any443"));
        assert_eq!(name("10.0.0.1:443"), None);
    }
}
