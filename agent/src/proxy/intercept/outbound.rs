//! Outbound: an enrolled pod's application connected to some original
//! destination. Detect, then: HTTP/1 through the listener that claims the
//! destination (or the implicit passthrough route, or the black hole); TLS
//! and opaque TCP spliced to the original destination.

use std::sync::{Arc, OnceLock};

use ::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::BytesMut;
use tokio::net::TcpStream;

use super::detect::{self, Detected, Direction};
use super::io::InterceptedIo;
use super::metrics::{IdentityHandles, Labels, UNKNOWN};
use super::{Inner, InterceptError, PodIdentity, passthrough, peers};
use crate::config::OutboundTrafficPolicy;
use crate::proxy::addr::{ClientAddr, ConnMeta, OrigDstAddr};
use crate::proxy::http::{self, ListenerContext, RequestHook};

/// Request header naming the source pod (a `source` token) on requests weir
/// forwards for an enrolled pod; trusted by the inbound side only from
/// weir's own sockets (`peers`) and only if this process made the token,
/// and always removed before the application.
pub static X_WEIR_SOURCE: HeaderName = HeaderName::from_static("x-weir-source");

pub(super) async fn serve(
    inner: &Arc<Inner>,
    mut stream: TcpStream,
    orig: OrigDstAddr,
    source: PodIdentity,
) {
    let m = &inner.runtime.metrics.intercept;
    // One snapshot per connection: a reload applies to the next connection.
    let table = inner.runtime.outbound.load_full();
    let meta = stream.peer_addr().ok().map(|p| ConnMeta {
        client: ClientAddr(p),
        orig_dst: Some(orig),
    });
    let mut first = BytesMut::new();
    let detected = detect::detect(&mut stream, &mut first, inner.runtime.detection_timeout()).await;
    m.detected(Direction::Outbound, &detected);
    let matched = table.claim(orig.0, &detected).cloned();
    let destination = match &matched {
        Some(l) => l.name.to_string(),
        None => m.passthrough_destination(orig.0.to_string()),
    };
    let labels = Labels {
        direction: Direction::Outbound,
        source_namespace: &source.namespace,
        source_pod: &source.name,
        destination: &destination,
        destination_namespace: UNKNOWN,
        destination_pod: UNKNOWN,
    };
    let handles = Arc::new(m.identity(&labels));
    let _open = handles.connection();
    let io = InterceptedIo::new(
        stream,
        first,
        handles.received.clone(),
        handles.sent.clone(),
    );
    let allowed = matched.is_some() || table.policy == OutboundTrafficPolicy::AllowAny;
    let result = match detected {
        Detected::Http1 => {
            let unmatched = Unmatched {
                inner: inner.clone(),
                orig,
                policy: table.policy,
            };
            let ctx = match matched {
                Some(l) => Ok(l.ctx.clone()),
                None => unmatched.context(),
            };
            match (ctx, meta) {
                (Ok(ctx), Some(meta)) => {
                    let hook = OutboundHook {
                        source: super::source::token(&source),
                        handles: handles.clone(),
                        unmatched,
                        fallback: OnceLock::new(),
                    };
                    let hook: Arc<dyn RequestHook> = Arc::new(hook);
                    let drain = inner.drain.clone();
                    http::serve_with(io, meta, ctx, drain, Some(hook), None, false).await;
                    Ok(())
                }
                (Err(e), _) => Err(e),
                // the client is gone already
                (_, None) => Ok(()),
            }
        }
        Detected::Tls { sni } => {
            m.tls(&labels, sni.as_deref());
            if allowed {
                tcp(io, orig, &source).await
            } else {
                m.denied(&labels);
                Ok(())
            }
        }
        Detected::Opaque if allowed => tcp(io, orig, &source).await,
        Detected::Opaque => {
            m.denied(&labels);
            Ok(())
        }
    };
    if let Err(e) = result {
        log::debug!(
            "outbound {}/{} -> {}: {e}",
            source.namespace,
            source.name,
            orig.0
        );
    }
}

/// Counts each request with the connection's identity, names the source
/// pod to the destination, and sends requests for hosts the claiming
/// listener does not serve where the outbound traffic policy says.
struct OutboundHook {
    source: Option<HeaderValue>,
    handles: Arc<IdentityHandles>,
    unmatched: Unmatched,
    fallback: OnceLock<Option<Arc<ListenerContext>>>,
}

/// Istio's catch-all virtual host of outbound HTTP listeners: a Host no
/// virtual host takes goes to the original destination under `ALLOW_ANY`
/// (`allow_any`, PassthroughCluster) and gets 502 under `REGISTRY_ONLY`
/// (`block_all`). Built only when such a request comes.
struct Unmatched {
    inner: Arc<Inner>,
    orig: OrigDstAddr,
    policy: OutboundTrafficPolicy,
}

impl Unmatched {
    fn context(&self) -> Result<Arc<ListenerContext>, InterceptError> {
        let passthrough = &self.inner.passthrough;
        match self.policy {
            OutboundTrafficPolicy::AllowAny => passthrough.route_to(self.orig.0),
            OutboundTrafficPolicy::RegistryOnly => passthrough.blackhole(),
        }
    }
}

impl RequestHook for OutboundHook {
    fn on_request(&self, headers: &mut HeaderMap) {
        // Replaces anything the application sent: it cannot claim another identity.
        match &self.source {
            Some(v) => {
                headers.insert(X_WEIR_SOURCE.clone(), v.clone());
            }
            None => {
                headers.remove(&X_WEIR_SOURCE);
            }
        }
    }

    fn on_response(&self, status: u16) {
        self.handles.response(status);
    }

    fn unmatched_host(&self) -> Option<Arc<ListenerContext>> {
        // Once per connection: later requests skip the shared route cache.
        self.fallback
            .get_or_init(|| {
                self.unmatched
                    .context()
                    .inspect_err(|e| log::warn!("outbound to {}: {e}", self.unmatched.orig.0))
                    .ok()
            })
            .clone()
    }
}

/// Splice to the original destination; the upstream socket is registered
/// with the source pod for the inbound side (`peers`).
async fn tcp(
    mut io: InterceptedIo<TcpStream>,
    orig: OrigDstAddr,
    source: &PodIdentity,
) -> Result<(), InterceptError> {
    let mut up = passthrough::connect(orig.0).await?;
    let _peer = up
        .local_addr()
        .ok()
        .map(|a| peers::register(a, Some(source.clone())));
    passthrough::splice(&mut io, &mut up).await.map(drop)
}
