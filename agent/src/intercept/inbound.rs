//! Inbound: a connection to an enrolled pod. Detect, then HTTP/1 is served
//! here (each request forwarded to the application over one kept-alive
//! connection from [`AppConnector`], counted with the source identity) and
//! anything else is spliced to the application.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::authz::{self, Decision, Operation, Principal};
use super::detect::{self, Detected, Direction};
use super::identity::{IdentityHandles, Labels, Party, UNKNOWN};
use super::mesh_link::MeshSource;
use super::outbound::X_WEIR_SOURCE;
use super::peers::Peer;
use super::{AppConnector, Inner, InterceptError, PodIdentity, Shared, passthrough};
use crate::addr::ClientAddr;
use crate::proxy::body::response::RespBody;
use crate::proxy::drain::DrainWatch;
use crate::proxy::http::local::{self, ResetReason};
use crate::proxy::http::{internal, upgrade};
use crate::proxy::io::Io;
use crate::proxy::runtime::Runtime;

/// The request head must arrive within this (the engine's listener default).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Who an inbound connection's client is, as far as weir can tell.
pub(super) enum Client {
    /// A TCP peer: one of weir's own upstream sockets (`peers`), or unknown.
    Peer(ClientAddr),
    /// A workload of another node, named by the mesh tunnel it came through
    /// (its peer's certificate: `mesh_link`), never by what it sent; its
    /// workload's name, for metrics only, from the stream's baggage.
    Mesh(MeshSource),
}

pub(super) async fn serve<S>(
    inner: &Inner,
    mut stream: S,
    dst: SocketAddr,
    client: Client,
    pod: PodIdentity,
    app: Arc<dyn AppConnector>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let m = &inner.shared.metrics;
    let mut first = BytesMut::new();
    let detected = detect::detect(&mut stream, &mut first, inner.runtime.detection_timeout()).await;
    m.detected(Direction::Inbound, &detected);
    // Looked up after detection: by then the client's socket (if weir's) is
    // registered, as weir registers it before sending anything on it.
    let peer = match &client {
        Client::Peer(addr) => inner.shared.peers.lookup(addr.0),
        Client::Mesh(_) => Peer::Unknown,
    };
    // Who authorization sees for the whole connection (HTTP: unless a
    // trusted source header names a pod per request).
    let principal = match (&client, &peer) {
        (Client::Mesh(m), _) => Some(m.principal.clone()),
        (_, Peer::Pod(p)) => Some(inner.shared.principal_of(p)),
        _ => None,
    };
    let source_principal = principal.as_ref().map(Principal::uri);
    let source = match (&client, &peer) {
        (_, Peer::Pod(p)) => Party {
            namespace: &p.namespace,
            pod: &p.name,
            workload: &p.workload,
            principal: source_principal.as_deref().unwrap_or(UNKNOWN),
        },
        // The tunnel names a workload (namespace and service account, and
        // the workload's name as baggage), not a pod.
        (Client::Mesh(m), _) => Party {
            namespace: &m.principal.namespace,
            workload: m.workload.as_deref().unwrap_or(UNKNOWN),
            principal: source_principal.as_deref().unwrap_or(UNKNOWN),
            ..Party::UNKNOWN
        },
        _ => Party::UNKNOWN,
    };
    let src_ns: Arc<str> = Arc::from(source.namespace);
    let destination = dst.to_string();
    let pod_principal = inner.shared.principal_of(&pod).uri();
    let labels = Labels {
        direction: Direction::Inbound,
        source,
        destination: &destination,
        destination_pod: Party::of(&pod, &pod_principal),
        security: match client {
            Client::Mesh(_) => "mutual_tls",
            Client::Peer(_) => "none",
        },
    };
    let handles = m.identity(&labels);
    let _open = handles.connection();
    let io = Io::with_prefix(stream, first, handles.counters());
    let result = match detected {
        Detected::Http1 => {
            let conn = Arc::new(AppConn {
                app,
                dst,
                tx: tokio::sync::Mutex::new(None),
                accounting: Accounting::new(
                    Arc::clone(&inner.shared),
                    pod,
                    destination,
                    peer == Peer::Weir,
                    (handles, principal),
                ),
                runtime: Arc::clone(&inner.runtime),
            });
            serve_http(io, conn, inner.runtime.drain_watch()).await;
            Ok(())
        }
        _ if !authorized(
            &inner.runtime,
            &inner.shared,
            &pod,
            (principal.as_ref(), &src_ns),
            Operation {
                port: dst.port(),
                http: None,
            },
            "tcp",
        ) =>
        {
            Err(InterceptError::Denied)
        }
        Detected::Tls { sni } => {
            m.tls(&labels, sni.as_deref());
            tcp(io, &*app, dst, inner.runtime.opaque_idle_timeout()).await
        }
        Detected::Opaque => tcp(io, &*app, dst, inner.runtime.opaque_idle_timeout()).await,
    };
    if let Err(e) = result {
        log::debug!("inbound -> {dst}: {e}");
    }
}

/// Whether `authorization_policies` let `source` reach `pod` with `op`;
/// a denial is counted under `protocol` (`http`, `tcp`).
fn authorized(
    runtime: &Runtime,
    shared: &Shared,
    pod: &PodIdentity,
    source: (Option<&Principal>, &str),
    op: Operation<'_>,
    protocol: &str,
) -> bool {
    let (principal, source_namespace) = source;
    let config = runtime.effective.load();
    let Some(config) = config.as_ref() else {
        return true;
    };
    if authz::decide(&config.authorization_policies, pod, principal, op) != Decision::Denied {
        return true;
    }
    shared
        .authz
        .denied(principal, source_namespace, pod, protocol);
    false
}

async fn tcp<S>(
    io: S,
    app: &dyn AppConnector,
    dst: SocketAddr,
    idle: Option<Duration>,
) -> Result<(), InterceptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let up = app
        .connect_app(dst)
        .await
        .map_err(|e| InterceptError::App(dst, e))?;
    passthrough::relay(io, up, idle, None).await.map(drop)
}

/// Upgrades tunnelled to the application, as Istio's inbound listeners.
const INBOUND_UPGRADES: [&str; 1] = ["websocket"];

/// One downstream connection's link to the application.
struct AppConn {
    app: Arc<dyn AppConnector>,
    dst: SocketAddr,
    /// The kept-alive application connection (HTTP/1: one request at a time).
    tx: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
    accounting: Accounting,
    /// Its installed config's `authorization_policies`, read per request.
    runtime: Arc<Runtime>,
}

impl AppConn {
    /// Whether `source` may send `req` (`authorization_policies`); a
    /// denial is counted.
    fn allows(&self, req: &Request<Incoming>, source: Option<&Principal>) -> bool {
        authorized(
            &self.runtime,
            &self.accounting.shared,
            &self.accounting.pod,
            (source, source.map_or(UNKNOWN, |p| &*p.namespace)),
            Operation {
                port: self.dst.port(),
                http: Some((req.method().as_str(), req.uri().path())),
            },
            "http",
        )
    }
}

/// Counts the requests of one inbound connection with their source pod.
pub(super) struct Accounting {
    /// The peer is weir's own socket: `x-weir-source` is believed.
    trusted: bool,
    /// Handles of the connection's identity (source from `peers`, or
    /// unknown), and its principal when weir authenticated it.
    connection: (IdentityHandles, Option<Principal>),
    shared: Arc<Shared>,
    destination: String,
    pod: PodIdentity,
    /// The last `x-weir-source` seen, its handles and principal (a pooled
    /// weir connection usually carries one source; no lookup per request then).
    last_source: Mutex<Option<(HeaderValue, RequestSource)>>,
}

/// Who sent a request: its identity's counters, and its principal when
/// weir authenticated it.
pub(super) type RequestSource = (IdentityHandles, Option<Principal>);

impl Accounting {
    pub(super) fn new(
        shared: Arc<Shared>,
        pod: PodIdentity,
        destination: String,
        trusted: bool,
        connection: RequestSource,
    ) -> Self {
        Self {
            trusted,
            connection,
            shared,
            destination,
            pod,
            last_source: Mutex::new(None),
        }
    }

    /// Who sent a request: the trusted header's source, else the connection's.
    pub(super) fn source_for(&self, source: Option<HeaderValue>) -> RequestSource {
        let Some(v) = source.filter(|_| self.trusted) else {
            return self.connection.clone();
        };
        if let Ok(last) = self.last_source.lock()
            && let Some((lv, h)) = &*last
            && *lv == v
        {
            return h.clone();
        }
        // Only a token this process made names a pod (bounded, unforgeable).
        let Some(src) = self.shared.sources.pod_of(&v) else {
            return self.connection.clone();
        };
        let principal = self.shared.principal_of(&src);
        let (source_uri, pod_uri) = (principal.uri(), self.shared.principal_of(&self.pod).uri());
        let h = self.shared.metrics.identity(&Labels {
            direction: Direction::Inbound,
            source: Party::of(&src, &source_uri),
            destination: &self.destination,
            destination_pod: Party::of(&self.pod, &pod_uri),
            security: "none",
        });
        let principal = Some(principal);
        let source = (h, principal);
        if let Ok(mut last) = self.last_source.lock() {
            *last = Some((v, source.clone()));
        }
        source
    }
}

impl AppConn {
    async fn send(&self, mut req: Request<Incoming>) -> Response<RespBody> {
        let mut slot = self.tx.lock().await;
        // A kept-alive connection the application closed meanwhile is
        // replaced once; the request had not gone out on it.
        for attempt in 0..2 {
            let fresh = slot.as_ref().is_none_or(|t| t.is_closed());
            if fresh {
                match self.connect().await {
                    Ok(tx) => *slot = Some(tx),
                    Err(e) => {
                        log::debug!("inbound: {e}");
                        *slot = None;
                        return local::upstream_reset(ResetReason::RemoteConnectionFailure, false);
                    }
                }
            }
            let Some(tx) = slot.as_mut() else { break };
            if tx.ready().await.is_err() {
                *slot = None;
                if fresh || attempt > 0 {
                    break;
                }
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return self.downstream_response(resp),
                Err(mut e) => {
                    *slot = None;
                    match e.take_message() {
                        Some(r) if !fresh && attempt == 0 => req = r,
                        _ => break,
                    }
                }
            }
        }
        local::upstream_reset(ResetReason::ConnectionTermination, false)
    }

    /// An upgrade on a connection of its own (it becomes the tunnel).
    async fn upgrade(
        &self,
        req: Request<Incoming>,
        requested: upgrade::Requested,
    ) -> Response<RespBody> {
        let mut tx = match self.connect().await {
            Ok(tx) => tx,
            Err(e) => {
                log::debug!("inbound: {e}");
                return local::upstream_reset(ResetReason::RemoteConnectionFailure, false);
            }
        };
        let mut resp = match tx.send_request(req).await {
            Ok(resp) => resp,
            Err(_) => return local::upstream_reset(ResetReason::ConnectionTermination, false),
        };
        if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            upgrade::tunnel(requested.downstream, &mut resp, &requested.protocol);
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, RespBody::empty());
        }
        self.downstream_response(resp)
    }

    /// The application's response, its body streamed on.
    fn downstream_response(&self, resp: Response<Incoming>) -> Response<RespBody> {
        let (parts, inner) = resp.into_parts();
        // Its bytes are counted by the connection's identity (`sent`).
        let body = RespBody::Upstream {
            inner,
            conn: None,
            rx_bytes: None,
            deadline: None,
        };
        Response::from_parts(parts, body)
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, InterceptError> {
        let s = self
            .app
            .connect_app(self.dst)
            .await
            .map_err(|e| InterceptError::App(self.dst, e))?;
        let _ = s.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| InterceptError::App(self.dst, std::io::Error::other(e)))?;
        tokio::spawn(async move {
            // An upgraded connection is handed to its tunnel (`upgrade`).
            if let Err(e) = conn.with_upgrades().await {
                log::debug!("inbound application connection ended: {e}");
            }
        });
        Ok(tx)
    }
}

#[derive(Clone)]
struct InboundService {
    conn: Arc<AppConn>,
    drain: DrainWatch,
}

impl hyper::service::Service<Request<Incoming>> for InboundService {
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let conn = self.conn.clone();
        let drain = self.drain.clone();
        // Never reaches the application, whoever sent it.
        let source = internal::strip(req.headers_mut());
        let started = Instant::now();
        Box::pin(async move {
            let (handles, principal) = conn.accounting.source_for(source);
            if !conn.allows(&req, principal.as_ref()) {
                handles.response(StatusCode::FORBIDDEN.as_u16(), started.elapsed());
                let mut resp = local::reply(StatusCode::FORBIDDEN, authz::DENIED_BODY);
                drain.close_after(&mut resp);
                return Ok(resp);
            }
            let (mut parts, body) = req.into_parts();
            let upgrade = upgrade::requested(&mut parts, &INBOUND_UPGRADES);
            let req = Request::from_parts(parts, body);
            let mut resp = match upgrade {
                Ok(None) => conn.send(req).await,
                Ok(Some(requested)) => conn.upgrade(req, requested).await,
                Err(upgrade::Refused::NotAllowed) => local::upgrade_refused(),
            };
            handles.response(resp.status().as_u16(), started.elapsed());
            resp.headers_mut().remove(&X_WEIR_SOURCE);
            drain.close_after(&mut resp);
            Ok(resp)
        })
    }
}

async fn serve_http<S>(io: S, conn: Arc<AppConn>, mut drain: DrainWatch)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let c = b
        .serve_connection(
            TokioIo::new(io),
            InboundService {
                conn,
                drain: drain.clone(),
            },
        )
        .with_upgrades();
    tokio::pin!(c);
    // Draining: the next response says `connection: close` (`InboundService`);
    // what is still open when the grace runs out is closed.
    let grace = tokio::select! {
        r = c.as_mut() => {
            if let Err(e) = r {
                log::debug!("inbound connection closed: {e}");
            }
            return;
        }
        grace = drain.signaled() => grace,
    };
    let _ = tokio::time::timeout(grace, c).await;
}
