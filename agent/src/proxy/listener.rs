//! A listener: bound socket plus accept loop; each connection is served by
//! `http::serve` (after the TLS handshake on a TLS listener) until the
//! listener's drain handle fires.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::addr::{ClientAddr, ConnMeta};
use super::drain::DrainWatch;
use super::http::detect::Proto;
use super::http::{self, ListenerContext};
use super::tls::server::{Negotiated, TlsServer};

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("listener {name}: bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct Listener {
    tcp: TcpListener,
    ctx: Arc<ListenerContext>,
    drain: DrainWatch,
}

impl Listener {
    pub async fn bind(
        addr: SocketAddr,
        ctx: Arc<ListenerContext>,
        drain: DrainWatch,
    ) -> Result<Self, ListenerError> {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| ListenerError::Bind {
                name: ctx.name.to_string(),
                addr,
                source,
            })?;
        Ok(Self { tcp, ctx, drain })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr().ok()
    }

    /// Accept until drained; connections drain on their own.
    pub async fn run(self) {
        let Self {
            tcp,
            ctx,
            mut drain,
        } = self;
        let mut errors = crate::accept_errors::AcceptErrors::new(format!("listener {}", ctx.name))
            .counted(ctx.metrics.accept_errors.clone());
        loop {
            let accepted = tokio::select! {
                r = tcp.accept() => r,
                _ = drain.signaled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    errors.accepted();
                    let _ = stream.set_nodelay(true);
                    let meta = ConnMeta {
                        client: ClientAddr(peer),
                        orig_dst: None,
                    };
                    match ctx.state.load().tls.clone() {
                        None => {
                            tokio::spawn(http::serve(stream, meta, ctx.clone(), drain.clone()));
                        }
                        Some(tls) => {
                            tokio::spawn(serve_tls(tls, stream, meta, ctx.clone(), drain.clone()));
                        }
                    }
                }
                Err(e) => errors.failed(&e).await,
            }
        }
        log::info!("listener {}: stopped accepting", ctx.name);
    }
}

/// TLS handshake (counted and logged by `TlsServer` on failure), then HTTP
/// with the protocol ALPN chose.
async fn serve_tls(
    tls: Arc<TlsServer>,
    stream: tokio::net::TcpStream,
    meta: ConnMeta,
    ctx: Arc<ListenerContext>,
    drain: DrainWatch,
) {
    let Some((stream, alpn)) = tls.accept(stream, meta.client.0).await else {
        return;
    };
    drop(tls);
    let proto = match alpn {
        Negotiated::H2 => Some(Proto::Http2),
        Negotiated::Http1 => Some(Proto::Http1),
        Negotiated::None => None,
    };
    http::serve_with(stream, meta, ctx, drain, None, proto, true).await;
}
