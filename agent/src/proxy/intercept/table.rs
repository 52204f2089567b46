//! Outbound dispatch by original destination (Envoy's virtual listeners):
//! the `bind_to_port: false` listeners of the installed config, swapped by
//! the runtime on each reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::OutboundTrafficPolicy;
use crate::proxy::http::ListenerContext;

/// A listener that is not bound: it serves intercepted connections only.
pub struct VirtualListener {
    pub name: Arc<str>,
    pub ctx: Arc<ListenerContext>,
}

#[derive(Default)]
pub struct OutboundTable {
    exact: HashMap<SocketAddr, Arc<VirtualListener>>,
    /// (is IPv6, port) of listeners on `0.0.0.0` / `[::]`.
    wildcard: HashMap<(bool, u16), Arc<VirtualListener>>,
    pub policy: OutboundTrafficPolicy,
}

impl OutboundTable {
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

    /// The listener that claims `orig_dst`: exact address first, then a
    /// wildcard listener on its port (same address family).
    pub fn lookup(&self, orig_dst: SocketAddr) -> Option<&Arc<VirtualListener>> {
        self.exact
            .get(&orig_dst)
            .or_else(|| self.wildcard.get(&(orig_dst.is_ipv6(), orig_dst.port())))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use arc_swap::ArcSwap;

    use super::*;
    use crate::proxy::metrics::Metrics;

    fn vl(name: &str, m: &Metrics) -> Arc<VirtualListener> {
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
        Arc::new(VirtualListener {
            name: name.into(),
            ctx: Arc::new(ListenerContext {
                name: name.into(),
                metrics: m.listener(name),
                state: ArcSwap::from_pointee(state),
            }),
        })
    }

    #[test]
    fn exact_then_wildcard_port() {
        let m = Metrics::new().unwrap();
        let t = OutboundTable::new(
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
