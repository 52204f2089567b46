//! Outbound: an enrolled pod's application connected to some original
//! destination. Detect, then: HTTP/1 through the listener that claims the
//! destination (or the implicit passthrough route, or the black hole); TLS
//! and opaque TCP spliced to the original destination. Every upstream
//! connection leaves from the pod's own network namespace (its `Egress`),
//! so it carries the pod's address and follows the pod's routes.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::BytesMut;
use tokio::net::TcpStream;

use super::detect::{self, Detected, Direction};
use super::identity::{IdentityHandles, Labels, Party, UNKNOWN};
use super::{Inner, InterceptError, PodIdentity, RequestShare, passthrough};
use crate::addr::{ClientAddr, OrigDst};
use crate::config::OutboundTrafficPolicy;
use crate::proxy::http::{self, Downstream, ListenerContext, RequestHook, RequestPlace, ShedWatch};
use crate::proxy::io::{ByteCounters, Io};
use crate::proxy::upstream::egress::Egress;
use crate::proxy::virtual_listener::{VirtualListener, VirtualListeners};

/// Request header naming the source pod (a `source` token) on requests weir
/// forwards for an enrolled pod; trusted by the inbound side only from
/// weir's own sockets (`peers`) and only if this process made the token,
/// and always removed before the application.
pub static X_WEIR_SOURCE: HeaderName = HeaderName::from_static("x-weir-source");

pub(super) async fn serve(
    inner: &Arc<Inner>,
    mut stream: TcpStream,
    orig: OrigDst,
    source: PodIdentity,
    share: Option<Arc<dyn RequestShare>>,
    egress: Option<Egress>,
) {
    let m = &inner.shared.metrics;
    // One snapshot per connection: a reload applies to the next connection.
    let table = inner.runtime.virtual_listeners.load_full();
    let client = stream.peer_addr().ok().map(ClientAddr);
    let mut first = BytesMut::new();
    let detected = detect::detect(&mut stream, &mut first, inner.runtime.detection_timeout()).await;
    m.detected(Direction::Outbound, &detected);
    let matched = claim(&table, orig.0, &detected).cloned();
    // Silent past detection towards a destination an HTTP listener claims:
    // HTTP it is (as a port declared HTTP is in Istio). Its request-headers
    // deadline then closes the connection if it stays silent, instead of a
    // spliced connection holding two descriptors and an upstream for the
    // idle hour; a request that comes late is still routed.
    let detected = match detected {
        Detected::Opaque if first.is_empty() && matched.is_some() => Detected::Http1,
        other => other,
    };
    let destination = match &matched {
        Some(l) => l.name.to_string(),
        None => m.passthrough_destination(orig.0.to_string()),
    };
    let source_uri = inner.shared.principal_of(&source).uri();
    let labels = Labels {
        direction: Direction::Outbound,
        source: Party::of(&source, &source_uri),
        destination: &destination,
        destination_pod: Party::UNKNOWN,
        security: UNKNOWN,
    };
    let handles = m.identity(&labels);
    let _open = handles.connection();
    let io = Io::with_prefix(stream, first, handles.counters());
    let allowed = matched.is_some() || table.policy == OutboundTrafficPolicy::AllowAny;
    let from = FromPod {
        identity: &source,
        shed: share.as_ref().and_then(|s| s.shed()),
        share,
        egress,
    };
    // Each way on is boxed when taken, so a connection waiting for its
    // first bytes (or silent past detection) holds only what detection
    // needs: inline, the opaque splice's connect alone made every
    // outbound task 17 KiB.
    let result = match detected {
        Detected::Http1 => {
            let unmatched = Unmatched {
                inner: inner.clone(),
                orig,
                policy: table.policy,
            };
            let ctx = match matched {
                Some(l) => l.ctx.clone(),
                None => unmatched.context(),
            };
            // No peer address: the client is gone already.
            if let Some(client) = client {
                Box::pin(http(io, client, ctx, unmatched, from, handles)).await;
            }
            Ok(())
        }
        Detected::Tls { sni } => {
            m.tls(&labels, sni.as_deref());
            Box::pin(tcp_if(allowed, inner, io, orig, from, &labels)).await
        }
        Detected::Opaque => Box::pin(tcp_if(allowed, inner, io, orig, from, &labels)).await,
    };
    if let Err(e) = result {
        let (ns, pod) = (&source.namespace, &source.name);
        log::debug!("outbound {ns}/{pod} -> {}: {e}", orig.0);
    }
}

/// HTTP/1 through the engine on `ctx` (the claiming listener, else the
/// outbound traffic policy's); hosts it does not serve go to `unmatched`.
/// The pod a connection comes from, with its shares of the proxy.
struct FromPod<'a> {
    identity: &'a PodIdentity,
    /// Each request takes a place in it.
    share: Option<Arc<dyn RequestShare>>,
    /// Closes the connection while idle, when the pod is asked to shed.
    shed: Option<ShedWatch>,
    /// Where its upstream connections leave from: inside the pod.
    egress: Option<Egress>,
}

async fn http(
    io: Io<TcpStream, ByteCounters>,
    client: ClientAddr,
    ctx: Arc<ListenerContext>,
    unmatched: Unmatched,
    from: FromPod<'_>,
    handles: IdentityHandles,
) {
    let drain = unmatched.inner.runtime.drain_watch();
    let hook = OutboundHook {
        token: unmatched.inner.shared.sources.token(from.identity),
        source: from.identity.clone(),
        share: from.share,
        handles,
        unmatched,
        fallback: OnceLock::new(),
    };
    let hook: Arc<dyn RequestHook> = Arc::new(hook);
    let conn = Downstream {
        hook: Some(hook),
        shed: from.shed,
        egress: from.egress,
        ..Downstream::new(client, ctx, drain)
    };
    http::serve(io, conn).await;
}

/// TLS or opaque TCP: spliced when `allowed` (claimed, or `ALLOW_ANY`),
/// else counted as denied and closed.
async fn tcp_if(
    allowed: bool,
    inner: &Inner,
    io: Io<TcpStream, ByteCounters>,
    orig: OrigDst,
    from: FromPod<'_>,
    labels: &Labels<'_>,
) -> Result<(), InterceptError> {
    if !allowed {
        inner.shared.metrics.denied(labels);
        return Ok(());
    }
    tcp(inner, io, orig, from).await
}

/// Counts each request with the connection's identity, names the source
/// pod to the destination, and sends requests for hosts the claiming
/// listener does not serve where the outbound traffic policy says.
struct OutboundHook {
    /// `x-weir-source` for the requests.
    token: Option<HeaderValue>,
    source: PodIdentity,
    share: Option<Arc<dyn RequestShare>>,
    handles: IdentityHandles,
    unmatched: Unmatched,
    fallback: OnceLock<Arc<ListenerContext>>,
}

/// Istio's catch-all virtual host of outbound HTTP listeners: a Host no
/// virtual host takes goes to the original destination under `ALLOW_ANY`
/// (`allow_any`, PassthroughCluster) and gets 502 under `REGISTRY_ONLY`
/// (`block_all`). Built only when such a request comes.
struct Unmatched {
    inner: Arc<Inner>,
    orig: OrigDst,
    policy: OutboundTrafficPolicy,
}

impl Unmatched {
    fn context(&self) -> Arc<ListenerContext> {
        let passthrough = &self.inner.passthrough;
        match self.policy {
            OutboundTrafficPolicy::AllowAny => passthrough.route_to(self.orig.0),
            OutboundTrafficPolicy::RegistryOnly => passthrough.blackhole(),
        }
    }
}

impl RequestHook for OutboundHook {
    fn admit(&self) -> Result<Option<RequestPlace>, &'static str> {
        let Some(share) = &self.share else {
            return Ok(None);
        };
        share.admit().map(Some).inspect_err(|reason| {
            let m = &self.unmatched.inner.shared.metrics;
            let (ns, pod) = (&self.source.namespace, &self.source.name);
            m.refused_request(Direction::Outbound.label(), ns, pod, reason);
        })
    }

    fn on_request(&self, headers: &mut HeaderMap) {
        // Replaces anything the application sent: it cannot claim another identity.
        match &self.token {
            Some(v) => {
                headers.insert(X_WEIR_SOURCE.clone(), v.clone());
            }
            None => {
                headers.remove(&X_WEIR_SOURCE);
            }
        }
    }

    fn on_response(&self, status: u16, elapsed: Duration) {
        self.handles.response(status, elapsed);
    }

    fn unmatched_host(&self) -> Option<Arc<ListenerContext>> {
        // Once per connection: later requests skip the shared route cache.
        Some(
            self.fallback
                .get_or_init(|| self.unmatched.context())
                .clone(),
        )
    }
}

/// Splice to the original destination, from inside the pod; the upstream
/// socket is registered with the source pod for the inbound side (`peers`).
async fn tcp(
    inner: &Inner,
    io: Io<TcpStream, ByteCounters>,
    orig: OrigDst,
    from: FromPod<'_>,
) -> Result<(), InterceptError> {
    let egress = from.egress.as_ref();
    // Boxed: the connect's state (16 KiB, most of it the egress and tunnel
    // ways to connect) is freed once connected instead of sizing the
    // splice's future for its whole life.
    let up = Box::pin(passthrough::connect(&inner.shared, egress, orig.0)).await?;
    let _peer = up
        .local_addr()
        .map(|a| inner.shared.peers.register(a, Some(from.identity.clone())));
    let idle = inner.runtime.opaque_idle_timeout();
    passthrough::relay(io, up, idle, from.shed).await.map(drop)
}

/// The virtual listener that takes a connection to `orig_dst` detected as
/// `detected`.
fn claim<'a>(
    table: &'a VirtualListeners,
    orig_dst: std::net::SocketAddr,
    detected: &Detected,
) -> Option<&'a Arc<VirtualListener>> {
    table.lookup(orig_dst).filter(|l| match detected {
        Detected::Tls { sni } => l.claims_tls(sni.as_deref()),
        Detected::Http1 | Detected::Opaque => l.claims_plain(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::metrics::Metrics;
    use crate::proxy::virtual_listener::tests::virtual_listener;

    #[test]
    fn server_names_claim_tls_by_sni_and_leave_opaque_tcp() {
        let m = Metrics::new().unwrap();
        let tls = |sni: Option<&str>| Detected::Tls {
            sni: sni.map(str::to_owned),
        };
        let dst: std::net::SocketAddr = "10.0.0.1:443".parse().unwrap();
        let only = |l: VirtualListener| {
            VirtualListeners::new([(dst, Arc::new(l))], OutboundTrafficPolicy::AllowAny)
        };
        let claims = |t: &VirtualListeners, d: &Detected| claim(t, dst, d).is_some();
        let any = only(virtual_listener("any", &m, &[]));
        assert!(claims(&any, &tls(None)) && claims(&any, &Detected::Opaque));
        let named = only(virtual_listener(
            "named",
            &m,
            &["httpbin.org", "*.example.com"],
        ));
        assert!(claims(&named, &tls(Some("httpbin.org"))));
        assert!(claims(&named, &tls(Some("API.example.com"))));
        assert!(!claims(&named, &tls(Some("example.com"))));
        assert!(!claims(&named, &tls(Some("evil.org"))));
        assert!(!claims(&named, &tls(None)));
        assert!(!claims(&named, &Detected::Opaque));
        assert!(!claims(&named, &Detected::Http1), "plain text is not TLS");
        assert!(claims(&any, &Detected::Http1));
    }
}
