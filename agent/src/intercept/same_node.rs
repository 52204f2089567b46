//! Same-node delivery. A request weir routes to a pod enrolled on this node
//! would otherwise leave the proxy, cross the node's bridge into that pod,
//! be steered back into weir by sk_lookup, and be parsed and routed a second
//! time on its way to the application. Instead, when an upstream connection's
//! address is such a pod's intercepted port, the engine connects to the
//! application directly from the inbound source (127.0.0.6 / ::6) inside the
//! pod, and the inbound side's work (strip `x-weir-source`, count the
//! request with its source pod and the destination pod) happens on that
//! connection, per request ([`LocalInbound`]). What the application and the
//! metrics see is the same as on the two-pass path; one proxy pass and one
//! TCP hop less. Cleartext HTTP/1 upstreams only: TLS origination and HTTP/2
//! go the long way, where the inbound side detects and splices them.
//!
//! The interceptor owns the registry ([`LocalPods`]); enrollment registers
//! a pod and holds the guard while it is enrolled.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::detect::{Detected, Direction};
use super::identity::{ConnCount, Labels, Party};
use super::inbound::Accounting;
use super::outbound::X_WEIR_SOURCE;
use super::{AppConnector, PodIdentity, Shared};
pub use crate::pods::InboundPorts;
use crate::proxy::body::request::ReqBody;
use crate::proxy::io::ByteCounters;
use crate::proxy::upstream::connector::Exchange;

/// A pod enrolled on this node, as same-node delivery needs it.
pub struct LocalPod {
    pub identity: PodIdentity,
    pub ports: InboundPorts,
    pub app: Arc<dyn AppConnector>,
}

type Registry = Arc<RwLock<HashMap<IpAddr, Arc<LocalPod>>>>;

/// The pods enrolled on this node, by address.
#[derive(Default)]
pub(super) struct LocalPods(Registry);

/// Withdraws the registration when dropped (unless a newer one replaced it).
pub struct LocalGuard {
    registry: Registry,
    ips: Vec<IpAddr>,
    pod: Arc<LocalPod>,
}

impl LocalPods {
    /// Record that `pod` is enrolled at `ips`. Registering again (changed
    /// annotations) replaces the entry; the older guard then removes nothing.
    pub(super) fn register(&self, ips: &[IpAddr], pod: LocalPod) -> LocalGuard {
        let pod = Arc::new(pod);
        if let Ok(mut r) = self.0.write() {
            for ip in ips {
                r.insert(ip.to_canonical(), Arc::clone(&pod));
            }
        }
        LocalGuard {
            registry: Arc::clone(&self.0),
            ips: ips.to_vec(),
            pod,
        }
    }

    /// The enrolled pod whose intercepted port `addr` is, if any.
    pub(super) fn lookup(&self, addr: SocketAddr) -> Option<Arc<LocalPod>> {
        let r = self.0.read().ok()?;
        let pod = r.get(&addr.ip().to_canonical())?;
        pod.ports.covers(addr.port()).then(|| Arc::clone(pod))
    }
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        if let Ok(mut r) = self.registry.write() {
            for ip in &self.ips {
                let ip = ip.to_canonical();
                if r.get(&ip).is_some_and(|p| Arc::ptr_eq(p, &self.pod)) {
                    r.remove(&ip);
                }
            }
        }
    }
}

/// The inbound side of one same-node upstream connection.
pub(super) struct LocalInbound {
    accounting: Accounting,
    /// Bytes to the application (the inbound client's `received`) and
    /// from it (its `sent`).
    pub app_bytes: ByteCounters,
}

/// The source pod of a request whose `x-weir-source` was taken off, kept
/// with the request in case it comes back unsent and is tried again.
#[derive(Clone)]
struct Source(HeaderValue);

impl LocalInbound {
    /// Counts the connection as the inbound side would (detected HTTP/1,
    /// opened now, closed when the returned guard drops).
    pub(super) fn open(
        shared: &Arc<Shared>,
        pod: &LocalPod,
        addr: SocketAddr,
    ) -> (Arc<Self>, ConnCount) {
        let m = &shared.metrics;
        m.detected(Direction::Inbound, &Detected::Http1);
        m.same_node.inc();
        let destination = addr.to_string();
        // The connection's own source is weir, not a pod (as `peers::Peer::Weir`).
        let pod_uri = shared.principal_of(&pod.identity).uri();
        let handles = m.identity(&Labels {
            direction: Direction::Inbound,
            source: Party::UNKNOWN,
            destination: &destination,
            destination_pod: Party::of(&pod.identity, &pod_uri),
            security: "none",
        });
        let open = handles.connection();
        let app_bytes = handles.app_counters();
        let accounting = Accounting::new(
            Arc::clone(shared),
            pod.identity.clone(),
            destination,
            true,
            (handles, None),
        );
        let inbound = Self {
            accounting,
            app_bytes,
        };
        (Arc::new(inbound), open)
    }

    /// Before sending: the source header never reaches the application. It
    /// is kept with the request (a request that comes back unsent and goes
    /// again has no header left) and returned.
    fn take_source<B>(&self, req: &mut Request<B>) -> Option<HeaderValue> {
        if let Some(v) = crate::proxy::http::internal::strip(req.headers_mut()) {
            req.extensions_mut().insert(Source(v));
        }
        req.extensions().get::<Source>().map(|s| s.0.clone())
    }

    /// After the application answered: count the request with its source.
    fn answered<R>(
        &self,
        req_source: Option<HeaderValue>,
        resp: &mut Response<R>,
        elapsed: Duration,
    ) {
        let (handles, _) = self.accounting.source_for(req_source);
        handles.response(resp.status().as_u16(), elapsed);
        resp.headers_mut().remove(&X_WEIR_SOURCE);
    }
}

impl Exchange for LocalInbound {
    fn sending(&self, req: &mut Request<ReqBody>) -> Option<HeaderValue> {
        self.take_source(req)
    }

    fn answered(&self, tag: Option<HeaderValue>, resp: &mut Response<Incoming>, elapsed: Duration) {
        LocalInbound::answered(self, tag, resp, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::tests::NoApp;

    fn pod(name: &str, ports: InboundPorts) -> LocalPod {
        LocalPod {
            identity: PodIdentity {
                namespace: "ns".into(),
                name: name.into(),
                service_account: "default".into(),
                workload: "w".into(),
            },
            ports,
            app: Arc::new(NoApp),
        }
    }

    fn name_at(pods: &LocalPods, addr: &str) -> Option<String> {
        pods.lookup(addr.parse().unwrap())
            .map(|p| p.identity.name.to_string())
    }

    #[test]
    fn found_by_address_and_intercepted_port_while_registered() {
        let ips: Vec<IpAddr> = vec![
            "192.0.2.201".parse().unwrap(),
            "2001:db8::201".parse().unwrap(),
        ];
        let pods = LocalPods::default();
        let guard = pods.register(&ips, pod("a", InboundPorts::Listed(vec![8080])));
        assert_eq!(name_at(&pods, "192.0.2.201:8080").as_deref(), Some("a"));
        assert_eq!(name_at(&pods, "[2001:db8::201]:8080").as_deref(), Some("a"));
        assert_eq!(
            name_at(&pods, "[::ffff:192.0.2.201]:8080").as_deref(),
            Some("a")
        );
        assert_eq!(
            name_at(&pods, "192.0.2.201:9090"),
            None,
            "port not intercepted"
        );
        assert_eq!(name_at(&pods, "192.0.2.202:8080"), None);
        drop(guard);
        assert_eq!(name_at(&pods, "192.0.2.201:8080"), None);
    }

    #[test]
    fn each_registry_is_its_own() {
        // Two interceptors (two tests, two agents) registering the same
        // address do not meet: nothing is process-global.
        let ips: Vec<IpAddr> = vec!["192.0.2.201".parse().unwrap()];
        let (one, two) = (LocalPods::default(), LocalPods::default());
        let _guard = one.register(&ips, pod("a", InboundPorts::All));
        assert_eq!(name_at(&one, "192.0.2.201:80").as_deref(), Some("a"));
        assert_eq!(name_at(&two, "192.0.2.201:80"), None);
    }

    #[test]
    fn a_replaced_registration_outlives_the_old_guard() {
        let ips: Vec<IpAddr> = vec!["192.0.2.211".parse().unwrap()];
        let pods = LocalPods::default();
        let old = pods.register(&ips, pod("old", InboundPorts::Listed(vec![80])));
        let new = pods.register(&ips, pod("new", InboundPorts::All));
        drop(old);
        assert_eq!(name_at(&pods, "192.0.2.211:9999").as_deref(), Some("new"));
        drop(new);
        assert_eq!(name_at(&pods, "192.0.2.211:9999"), None);
    }

    #[test]
    fn the_source_header_is_taken_off_and_kept_with_the_request() {
        let (shared, metrics) = Shared::for_tests();
        let p = pod("b", InboundPorts::All);
        let (inbound, _open) = LocalInbound::open(&shared, &p, "192.0.2.221:80".parse().unwrap());
        // The token the outbound side sets for pod ns/a.
        let token = shared
            .sources
            .token(&PodIdentity {
                namespace: "ns".into(),
                name: "a".into(),
                service_account: "default".into(),
                workload: "w".into(),
            })
            .unwrap();
        let mut req = Request::builder()
            .header(&X_WEIR_SOURCE, token.clone())
            .body(())
            .unwrap();
        let source = inbound.take_source(&mut req);
        assert!(req.headers().get(&X_WEIR_SOURCE).is_none());
        assert_eq!(source.as_ref().unwrap(), token);
        // Sent again (it came back unsent): the kept source, no header.
        assert_eq!(inbound.take_source(&mut req), source);
        let mut resp = Response::builder()
            .status(204)
            .header(&X_WEIR_SOURCE, "x")
            .body(())
            .unwrap();
        inbound.answered(source, &mut resp, Duration::from_millis(1));
        assert!(resp.headers().get(&X_WEIR_SOURCE).is_none());
        let text = String::from_utf8(metrics.encode()).unwrap();
        let counted = text.lines().any(|l| {
            l.starts_with("weir_intercept_requests_total{")
                && [
                    r#"direction="inbound""#,
                    r#"source_pod="a""#,
                    r#"destination_pod="b""#,
                    r#"destination="192.0.2.221:80""#,
                    r#"response_code_class="2xx""#,
                ]
                .iter()
                .all(|label| l.contains(label))
                && l.ends_with(" 1")
        });
        assert!(counted, "{text}");
    }
}
