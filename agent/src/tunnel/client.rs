//! The client side of one tunnel connection: TLS and HTTP/2 over a stream
//! the caller dialed, then one `CONNECT` per tunnelled stream. Pooling is
//! `pool.rs`'s job.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::{ALPN_H2, BAGGAGE, Spawner, TunnelError, TunnelStream};

/// HTTP/2 settings of the client side of a tunnel connection.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// How often to ping the peer, also while no stream is open, so a peer
    /// that vanished without closing is noticed and the connection is not
    /// handed out again.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> ClientSettings {
        ClientSettings {
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(20),
        }
    }
}

/// One TLS + HTTP/2 connection to a peer agent, carrying any number of
/// tunnelled streams. Cheap to clone (a handle); the connection closes once
/// every handle and stream is gone, or when the peer goes.
#[derive(Clone, Debug)]
pub struct TunnelConnection {
    send: SendRequest<Empty<Bytes>>,
    peer_certs: Arc<Vec<CertificateDer<'static>>>,
}

/// Why a `CONNECT` did not produce a stream.
pub(super) enum OpenError {
    /// The request never left: the connection had already closed. Safe
    /// to send again on another connection.
    Unsent(hyper::Error),
    Failed(TunnelError),
}

impl TunnelConnection {
    /// TLS with `tls` (which must offer ALPN `h2`; the peer must pick it)
    /// over `io`, then HTTP/2. The connection's driver runs on `spawner`;
    /// `on_close` runs when it ends.
    pub async fn establish<T>(
        io: T,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        settings: &ClientSettings,
        spawner: &Spawner,
    ) -> Result<TunnelConnection, TunnelError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::establish_then(io, tls, server_name, settings, spawner, || {}).await
    }

    pub(super) async fn establish_then<T>(
        io: T,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        settings: &ClientSettings,
        spawner: &Spawner,
        on_close: impl FnOnce() + Send + 'static,
    ) -> Result<TunnelConnection, TunnelError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let tls = TlsConnector::from(tls)
            .connect(server_name, io)
            .await
            .map_err(TunnelError::Tls)?;
        let session = tls.get_ref().1;
        if session.alpn_protocol() != Some(ALPN_H2) {
            return Err(TunnelError::NoH2);
        }
        let peer_certs = Arc::new(session.peer_certificates().unwrap_or_default().to_vec());
        let (send, conn) = hyper::client::conn::http2::Builder::new(spawner.clone())
            .timer(TokioTimer::new())
            .keep_alive_interval(settings.keep_alive_interval)
            .keep_alive_timeout(settings.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(TunnelError::Handshake)?;
        spawner.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("tunnel connection ended: {e}");
            }
            on_close();
        });
        Ok(TunnelConnection { send, peer_certs })
    }

    /// The peer's certificate chain, leaf first, as its TLS handshake
    /// presented it (verified by the caller's `ClientConfig`).
    pub fn peer_certs(&self) -> &Arc<Vec<CertificateDer<'static>>> {
        &self.peer_certs
    }

    /// True once the connection is gone: no new stream can be opened.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// A tunnelled stream to `target` through the peer agent. Waits while
    /// the connection already carries as many streams as the peer allows
    /// (its `SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub async fn open(&self, target: SocketAddr) -> Result<TunnelStream, TunnelError> {
        match self.open_leased(target, None, None).await {
            Ok(stream) => Ok(stream),
            Err(OpenError::Unsent(e)) => Err(TunnelError::Request(e)),
            Err(OpenError::Failed(e)) => Err(e),
        }
    }

    pub(super) async fn open_leased(
        &self,
        target: SocketAddr,
        baggage: Option<&HeaderValue>,
        lease: Option<Arc<()>>,
    ) -> Result<TunnelStream, OpenError> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = authority(target);
        if let Some(baggage) = baggage {
            request.headers_mut().insert(BAGGAGE, baggage.clone());
        }
        let response =
            self.send
                .clone()
                .try_send_request(request)
                .await
                .map_err(|mut e| match e.take_message() {
                    Some(_) => OpenError::Unsent(e.into_error()),
                    None => OpenError::Failed(TunnelError::Request(e.into_error())),
                })?;
        if response.status() != StatusCode::OK {
            return Err(OpenError::Failed(TunnelError::Status(response.status())));
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| OpenError::Failed(TunnelError::Upgrade(e)))?;
        Ok(TunnelStream::new(upgraded, lease))
    }
}

/// `target` as an authority-form URI. IPv6 without a scope id: the zone is
/// meaningful on this node only, and `%` is not allowed in an authority.
fn authority(target: SocketAddr) -> Uri {
    let text = match target {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    };
    Uri::try_from(text).expect("an IP literal and a port form an authority")
}
