//! Per-request handling: virtual host and route lookup, then the route's
//! action (forward, direct response, redirect), then response headers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{HOST, LOCATION, SERVER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use hyper::body::Incoming;

use super::activity::ConnShared;
use super::sniff::Proto;
use super::{
    ListenerContext, ListenerState, admission, discard, forward, grpc, internal, local, request_id,
    upgrade,
};
use crate::proxy::access_log::{AccessLog, Entry};
use crate::proxy::body::response::RespBody;
use crate::proxy::drain::DrainWatch;
use crate::proxy::route::action::Action;
use crate::proxy::upstream::egress::Egress;

static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// The hyper service of one downstream connection: what its requests
/// share, behind one `Arc`, so a request clones one pointer rather than
/// each field (an atomic increment and decrement apiece).
pub struct ConnService(Arc<Conn>);

impl ConnService {
    pub fn new(conn: Conn) -> Self {
        Self(Arc::new(conn))
    }
}

/// What the requests of one downstream connection share.
pub struct Conn {
    pub ctx: Arc<ListenerContext>,
    pub shared: Arc<ConnShared>,
    pub request_timeout: Option<Duration>,
    /// The listener's access logs when the connection opened (`None`: off).
    pub access_log: Option<Arc<AccessLog>>,
    /// The downstream peer (the access log's `downstream_remote_address`).
    pub client: std::net::SocketAddr,
    pub hook: Option<Arc<dyn super::RequestHook>>,
    pub proto: Proto,
    /// The connection is TLS: `x-forwarded-proto: https`.
    pub https: bool,
    /// HTTP/1 responses say `connection: close` once draining.
    pub drain: DrainWatch,
    /// Where the connection's requests go upstream from (`Downstream::egress`).
    pub egress: Option<Egress>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let conn = Arc::clone(&self.0);
        let mut refused = admission::check(&mut req).err().map(Refused::Request);
        internal::strip(req.headers_mut());
        let mut place = None;
        if let Some(h) = &conn.hook
            && refused.is_none()
        {
            match h.admit() {
                Ok(p) => {
                    place = p;
                    h.on_request(req.headers_mut());
                }
                Err(reason) => refused = Some(Refused::Overloaded(reason)),
            }
        }
        let (proto, https) = (conn.proto, conn.https);
        let has_body = !req.body().is_end_stream();
        conn.ctx.metrics.rq_protocol[proto.index()].inc();
        // Off (`None`) costs this one check per request.
        let mut logged = conn.access_log.as_ref().map(|log| {
            // Envoy's connection manager makes the request id before
            // routing, so local replies log one too.
            request_id::ensure(req.headers_mut());
            Entry::begin(log, &mut req, proto.envoy_name(), conn.client)
        });
        let started = std::time::Instant::now();
        Box::pin(async move {
            let (ctx, shared, hook) = (&conn.ctx, &conn.shared, conn.hook.as_deref());
            shared.in_flight.fetch_add(1, Ordering::Relaxed);
            // the head is complete: the header-read clock stops
            shared.head_started_ms.store(0, Ordering::Relaxed);
            let (mut resp, unread) = match refused {
                Some(Refused::Request(r)) => {
                    log::debug!("listener {}: refused: {r}", ctx.name);
                    (r.reply(), None)
                }
                Some(Refused::Overloaded(reason)) => (local::overloaded_for(reason), None),
                None => {
                    let handling = handle(ctx, req, https, hook, conn.egress.as_ref());
                    match conn.request_timeout {
                        Some(t) => match tokio::time::timeout(t, handling).await {
                            Ok(r) => r,
                            Err(_) => {
                                ctx.metrics.rq_timeout.inc();
                                let r = local::reply(
                                    StatusCode::REQUEST_TIMEOUT,
                                    local::REQUEST_TIMEOUT,
                                );
                                (r, None)
                            }
                        },
                        None => handling.await,
                    }
                }
            };
            if has_body && proto == Proto::Http1 && matches!(resp.body(), RespBody::Local(_)) {
                Box::pin(discard::settle(&mut resp, unread)).await;
            }
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(place);
            shared.touch();
            let server = ctx.state.load().settings.server.clone();
            resp.headers_mut().insert(SERVER, server);
            ctx.metrics.response(resp.status().as_u16());
            let elapsed = started.elapsed();
            ctx.metrics.rq_duration.observe(elapsed.as_secs_f64());
            if let Some(h) = hook {
                h.on_response(resp.status().as_u16(), elapsed);
            }
            match proto {
                Proto::Http1 => conn.drain.close_after(&mut resp),
                Proto::Http2 => resp = grpc::observe(resp, &ctx.metrics.grpc),
            }
            if let Some(mut entry) = logged.take() {
                entry.responded(&resp);
                resp = resp.map(|inner| RespBody::logged(inner, entry));
            }
            Ok(resp)
        })
    }
}

/// Why a request is answered without routing it.
enum Refused {
    /// The request itself is unacceptable (`admission`).
    Request(admission::Refusal),
    /// Its source has no place for it (`RequestHook::admit`).
    Overloaded(&'static str),
}

/// Route and serve one request. A request no virtual host takes goes to
/// the listener `unmatched` names, when it names one (Istio's `allow_any` /
/// `block_all` virtual hosts), else gets Envoy's 404. With the response
/// comes the request body when nothing read it (a local reply). Upstream
/// connections come from `egress` (the engine's own without one).
pub async fn handle(
    ctx: &ListenerContext,
    req: Request<Incoming>,
    https: bool,
    unmatched: Option<&dyn super::RequestHook>,
    egress: Option<&Egress>,
) -> (Response<RespBody>, Option<Incoming>) {
    let req = match route_request(&ctx.state.load_full(), req, https, egress).await {
        Routed::Served(resp, unread) => return (resp, unread),
        Routed::NoRoute(body) => return no_route(ctx, body),
        Routed::NoVirtualHost(req) => req,
    };
    let req = match unmatched.and_then(|h| h.unmatched_host()) {
        Some(other) => match route_request(&other.state.load_full(), req, https, egress).await {
            Routed::Served(resp, unread) => return (resp, unread),
            Routed::NoRoute(body) => return no_route(ctx, body),
            Routed::NoVirtualHost(req) => req,
        },
        None => req,
    };
    no_route(ctx, req.into_body())
}

/// Envoy's 404 for a request no virtual host or route takes (`no_route`).
fn no_route(ctx: &ListenerContext, body: Incoming) -> (Response<RespBody>, Option<Incoming>) {
    ctx.metrics.no_route.inc();
    (local::no_route(), Some(body))
}

enum Routed {
    /// The response, and the request body if nothing read it.
    Served(Response<RespBody>, Option<Incoming>),
    /// A virtual host, but none of its routes, takes the request.
    NoRoute(Incoming),
    /// No virtual host takes the request; handed back untouched.
    NoVirtualHost(Request<Incoming>),
}

/// The authority a request is for: the URI's (absolute form), else Host.
fn authority<'r>(uri: &'r Uri, headers: &'r HeaderMap) -> &'r str {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

async fn route_request(
    state: &ListenerState,
    req: Request<Incoming>,
    https: bool,
    egress: Option<&Egress>,
) -> Routed {
    let Some(vhost) = state.routes.find_vhost(authority(req.uri(), req.headers())) else {
        return Routed::NoVirtualHost(req);
    };
    let (mut parts, body) = req.into_parts();
    let upgrade = match upgrade::requested(&mut parts, &state.settings.upgrade_types) {
        Ok(u) => u,
        Err(upgrade::Refused::NotAllowed) => {
            return Routed::Served(local::upgrade_refused(), Some(body));
        }
    };
    let Some((route, matched)) = vhost.find_route(&parts) else {
        return Routed::NoRoute(body);
    };
    let mut unread = None;
    let mut resp = match &route.action {
        // Envoy sends direct responses as local replies (checked against 1.40).
        Action::Direct { status, body: text } => {
            unread = Some(body);
            local::reply(*status, text.clone())
        }
        Action::Redirect(rd) => {
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let loc = rd.location(authority(&parts.uri, &parts.headers), pq, matched);
            unread = Some(body);
            let mut r = Response::new(RespBody::empty());
            *r.status_mut() = rd.status;
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(LOCATION, v);
            }
            r
        }
        Action::Forward(fwd) => {
            forward::prepare_head(&mut parts, fwd, matched, upgrade.is_some());
            request_id::ensure(&mut parts.headers);
            parts.headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(if https { "https" } else { "http" }),
            );
            vhost.request_headers.apply(&mut parts.headers);
            route.request_headers.apply(&mut parts.headers);
            // Boxed: the forward's future is most of a request's (4.4 KiB,
            // `-Zprint-type-sizes`), and inline it would be copied again at
            // each level above (route, handle, timeout, hyper's box of the
            // whole). Under keep-alive load, memcpy under the service's call
            // fell from 1.8 % of the proxy's samples to 0.3 % (`perf`).
            Box::pin(forward::forward(fwd, parts, body, upgrade, egress)).await
        }
    };
    route.response_headers.apply(resp.headers_mut());
    Routed::Served(resp, unread)
}
