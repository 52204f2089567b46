//! The server side: one accepted connection from a peer agent, its TLS and
//! HTTP/2, and a `CONNECT` per tunnelled stream handed to the caller's
//! [`TunnelHandler`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::{ALPN_H2, BAGGAGE, Spawner, TunnelError, TunnelStream};

/// Limits of one served tunnel connection.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// From the first byte to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// From the end of the TLS handshake to the first complete request
    /// header block: a peer that connects and says nothing is dropped.
    /// HTTP/2 has no per-request header timeout in hyper; later requests
    /// are bounded by the keep-alive pings noticing a dead peer.
    pub header_read_timeout: Duration,
    /// Streams (so tunnels) open at once on one connection, announced as
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`; a client waits beyond it. Also
    /// bounds the handler tasks per connection: a tunnel's stream stays
    /// open until both directions ended.
    pub max_concurrent_streams: u32,
    /// Bytes of one request's headers, decoded.
    pub max_header_list_size: u32,
    /// How often to ping the peer.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
    /// A connection with no stream open for this long is closed gracefully
    /// (GOAWAY: the peer's pool dials again when it next needs one), between
    /// one and two of these after its last stream ended. A pool that never
    /// forgets would otherwise hold this node's descriptors and TLS state
    /// for ever. Envoy's default for idle HTTP connections (`idle_timeout`).
    pub idle_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

/// Who is at the other end of a served connection.
#[derive(Debug)]
pub struct PeerInfo {
    /// The peer's certificate chain, leaf first, as its TLS handshake
    /// presented it (verified by the caller's `ServerConfig`).
    pub certs: Vec<CertificateDer<'static>>,
    /// The TCP peer, when the caller gave it.
    pub addr: Option<SocketAddr>,
}

/// Why a handler declines a tunnel; each is answered with its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Policy does not let this peer reach this target: 403.
    Forbidden,
    /// The target is not served here (not a pod of this node): 400.
    NotServed,
    /// Too busy to take it now: 503.
    Overloaded,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::NotServed => StatusCode::BAD_REQUEST,
            Refusal::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// What the caller does with the tunnels peers ask for.
pub trait TunnelHandler: Send + Sync + 'static {
    /// Whether `peer` may have a tunnel to `target`. Called before the
    /// answer, synchronously: a refusal costs the peer one round trip
    /// and us no task.
    fn admit(&self, peer: &PeerInfo, target: SocketAddr) -> Result<(), Refusal>;

    /// Carries an admitted tunnel's bytes; runs as a task of its own.
    fn serve(
        &self,
        peer: Arc<PeerInfo>,
        target: SocketAddr,
        stream: TunnelStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Serves tunnel connections a caller accepted.
pub struct TunnelServer<H> {
    tls: TlsAcceptor,
    handler: Arc<H>,
    limits: ServerLimits,
    spawner: Spawner,
}

impl<H> Clone for TunnelServer<H> {
    fn clone(&self) -> Self {
        TunnelServer {
            tls: self.tls.clone(),
            handler: Arc::clone(&self.handler),
            limits: self.limits.clone(),
            spawner: self.spawner.clone(),
        }
    }
}

/// [`TunnelServer::serve`] with the default spawner and no TCP peer.
pub async fn serve<S, H>(
    stream: S,
    tls: Arc<ServerConfig>,
    handler: Arc<H>,
    limits: ServerLimits,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: TunnelHandler,
{
    TunnelServer::new(tls, handler, limits)
        .serve(stream, None)
        .await
}

impl<H: TunnelHandler> TunnelServer<H> {
    /// `tls` must offer ALPN `h2` and should require a client certificate
    /// (its verifier decides who may connect).
    pub fn new(tls: Arc<ServerConfig>, handler: Arc<H>, limits: ServerLimits) -> TunnelServer<H> {
        TunnelServer {
            tls: TlsAcceptor::from(tls),
            handler,
            limits,
            spawner: Spawner::default(),
        }
    }

    /// Runs the connections' tasks and the handler's on `spawner`.
    pub fn with_spawner(mut self, spawner: Spawner) -> TunnelServer<H> {
        self.spawner = spawner;
        self
    }

    /// Serves one accepted connection (anything that reads and writes: the
    /// caller may have peeked at it) until it closes. `peer_addr` is passed
    /// on to the handler in [`PeerInfo`].
    pub async fn serve<S>(
        &self,
        stream: S,
        peer_addr: Option<SocketAddr>,
    ) -> Result<(), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_until(stream, peer_addr, std::future::pending())
            .await
    }

    /// [`TunnelServer::serve`], closing gracefully once `shutdown` resolves
    /// (the agent drains): GOAWAY, so the peer opens no new stream here and
    /// dials again (a successor agent), while the streams already open run
    /// to their end.
    pub async fn serve_until<S>(
        &self,
        stream: S,
        peer_addr: Option<SocketAddr>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TunnelError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = &self.limits;
        let tls = tokio::time::timeout(limits.handshake_timeout, self.tls.accept(stream))
            .await
            .map_err(|_| TunnelError::TimedOut)?
            .map_err(TunnelError::Tls)?;
        let session = tls.get_ref().1;
        if session.alpn_protocol() != Some(ALPN_H2) {
            return Err(TunnelError::NoH2);
        }
        let peer = Arc::new(PeerInfo {
            certs: session.peer_certificates().unwrap_or_default().to_vec(),
            addr: peer_addr,
        });
        let asked = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(OpenStreams::default());
        let service = {
            let handler = Arc::clone(&self.handler);
            let spawner = self.spawner.clone();
            let (asked, streams) = (Arc::clone(&asked), Arc::clone(&streams));
            service_fn(move |request| {
                asked.store(true, Ordering::Relaxed);
                let response = answer(request, &peer, &handler, &spawner, &streams);
                async move { Ok::<_, Infallible>(response) }
            })
        };
        let conn = hyper::server::conn::http2::Builder::new(self.spawner.clone())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_list_size)
            .keep_alive_interval(limits.keep_alive_interval)
            .keep_alive_timeout(limits.keep_alive_timeout)
            .serve_connection(TokioIo::new(tls), service);
        let mut conn = std::pin::pin!(conn);
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            done = conn.as_mut() => return done.map_err(TunnelError::Serve),
            () = tokio::time::sleep(limits.header_read_timeout) => {}
            () = shutdown.as_mut() => {
                conn.as_mut().graceful_shutdown();
                return conn.await.map_err(TunnelError::Serve);
            }
        }
        if !asked.load(Ordering::Relaxed) {
            return Err(TunnelError::TimedOut);
        }
        loop {
            tokio::select! {
                done = conn.as_mut() => return done.map_err(TunnelError::Serve),
                () = shutdown.as_mut() => break,
                // Looked at once per idle timeout: cheaper than waking at
                // every stream's end, and closes within two of them.
                () = tokio::time::sleep(limits.idle_timeout) => {
                    if streams.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                        tracing::debug!("tunnel connection idle for {:?}: closing", limits.idle_timeout);
                        break;
                    }
                }
            }
        }
        conn.as_mut().graceful_shutdown();
        conn.await.map_err(TunnelError::Serve)
    }
}

/// The streams open on one served connection, and since when none is.
#[derive(Debug)]
struct OpenStreams {
    open: AtomicUsize,
    /// When the count last fell to zero (or the connection began).
    idle_since: Mutex<Instant>,
}

impl Default for OpenStreams {
    fn default() -> Self {
        Self {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }
}

impl OpenStreams {
    /// Counts a stream until the guard drops.
    fn opened(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenStream(Arc::clone(self))
    }

    /// How long no stream has been open; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().ok()?;
        Some(since.elapsed())
    }
}

/// One open stream of [`OpenStreams`].
struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        // Stamped before the count falls, so an idle check never sees
        // zero streams with the stamp of an earlier idle spell.
        if let Ok(mut since) = self.0.idle_since.lock() {
            *since = Instant::now();
        }
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer to one request; for an admitted `CONNECT`, the handler's task
/// is spawned to take the stream once the 200 is out.
fn answer<H: TunnelHandler>(
    mut request: Request<Incoming>,
    peer: &Arc<PeerInfo>,
    handler: &Arc<H>,
    spawner: &Spawner,
    streams: &Arc<OpenStreams>,
) -> Response<Empty<Bytes>> {
    let target = match target(&request) {
        Ok(target) => target,
        Err(status) => return status_only(status),
    };
    if let Err(refusal) = handler.admit(peer, target) {
        return status_only(refusal.status());
    }
    let baggage = request
        .headers()
        .get(BAGGAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let upgrade = hyper::upgrade::on(&mut request);
    let (peer, handler) = (Arc::clone(peer), Arc::clone(handler));
    let open = streams.opened();
    spawner.spawn(async move {
        let _open = open;
        match upgrade.await {
            Ok(upgraded) => {
                handler
                    .serve(
                        peer,
                        target,
                        TunnelStream::new(upgraded, None).with_baggage(baggage.as_deref()),
                    )
                    .await;
            }
            Err(e) => tracing::debug!("tunnel to {target} not taken over: {e}"),
        }
    });
    status_only(StatusCode::OK)
}

/// The tunnel's target: only `CONNECT` to an IP literal and port. Host
/// names are refused so the peer cannot make this node resolve names, and
/// what the handler admits is exactly what will be connected to.
fn target(request: &Request<Incoming>) -> Result<SocketAddr, StatusCode> {
    if request.method() != Method::CONNECT {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse().ok())
        .ok_or(StatusCode::BAD_REQUEST)
}

fn status_only(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}
