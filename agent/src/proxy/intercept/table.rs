//! Outbound dispatch by original destination (Envoy's virtual listeners):
//! the `bind_to_port: false` listeners of the installed config, swapped by
//! the runtime on each reload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::detect::Detected;
use crate::config::OutboundTrafficPolicy;
use crate::proxy::http::ListenerContext;
use crate::proxy::tls::server_names::ServerNames;

/// A listener that is not bound: it serves intercepted connections only.
pub struct VirtualListener {
    pub name: Arc<str>,
    pub ctx: Arc<ListenerContext>,
    /// The TLS server names it takes; empty: every connection.
    pub server_names: ServerNames<()>,
}

impl VirtualListener {
    /// Whether a connection detected as `detected` is this listener's:
    /// every connection, unless the listener names servers; then only TLS
    /// asking for one of them (an Envoy filter chain matching
    /// `server_names` never takes plain text).
    pub fn claims(&self, detected: &Detected) -> bool {
        if self.server_names.is_empty() {
            return true;
        }
        match detected {
            Detected::Tls { sni } => sni
                .as_deref()
                .is_some_and(|name| self.server_names.get(name).is_some()),
            Detected::Http1 | Detected::Opaque => false,
        }
    }
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

    /// The listener that claims a connection to `orig_dst` detected as `detected`.
    pub fn claim(
        &self,
        orig_dst: SocketAddr,
        detected: &Detected,
    ) -> Option<&Arc<VirtualListener>> {
        self.lookup(orig_dst).filter(|l| l.claims(detected))
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
        Arc::new(virtual_listener(name, m, &[]))
    }

    fn virtual_listener(name: &str, m: &Metrics, server_names: &[&str]) -> VirtualListener {
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
            ctx: Arc::new(ListenerContext {
                name: name.into(),
                metrics: m.listener(name),
                state: ArcSwap::from_pointee(state),
            }),
            server_names: server_names.iter().copied().collect(),
        }
    }

    #[test]
    fn server_names_claim_tls_by_sni_and_leave_opaque_tcp() {
        let m = Metrics::new().unwrap();
        let tls = |sni: Option<&str>| Detected::Tls {
            sni: sni.map(str::to_owned),
        };
        let any = virtual_listener("any", &m, &[]);
        assert!(any.claims(&tls(None)) && any.claims(&Detected::Opaque));
        let named = virtual_listener("named", &m, &["httpbin.org", "*.example.com"]);
        assert!(named.claims(&tls(Some("httpbin.org"))));
        assert!(named.claims(&tls(Some("API.example.com"))));
        assert!(!named.claims(&tls(Some("example.com"))));
        assert!(!named.claims(&tls(Some("evil.org"))));
        assert!(!named.claims(&tls(None)));
        assert!(!named.claims(&Detected::Opaque));
        assert!(!named.claims(&Detected::Http1), "plain text is not TLS");
        assert!(any.claims(&Detected::Http1));
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
