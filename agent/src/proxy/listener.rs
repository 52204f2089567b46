//! A listener: bound socket plus accept loop; each connection is served by
//! `http::serve` (after the TLS handshake on a TLS listener) until the
//! listener's drain handle fires.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::drain::DrainWatch;
use super::http::sniff::Proto;
use super::http::{self, Downstream, ListenerContext};
use super::tls::server::{Negotiated, TlsServer};
use crate::addr::ClientAddr;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("listener {name}: bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Print a machine-readable line on stdout (bound addresses, for tests and
/// benchmarks); a closed stdout is ignored rather than fatal.
pub fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
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
        let mut errors =
            crate::proxy::accept_errors::AcceptErrors::new(format!("listener {}", ctx.name))
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
                    let client = ClientAddr(peer);
                    match ctx.state.load().tls.clone() {
                        None => {
                            let conn = Downstream::new(client, ctx.clone(), drain.clone());
                            tokio::spawn(http::serve(stream, conn));
                        }
                        Some(tls) => {
                            tokio::spawn(serve_tls(
                                tls,
                                stream,
                                client,
                                ctx.clone(),
                                drain.clone(),
                            ));
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
    client: ClientAddr,
    ctx: Arc<ListenerContext>,
    drain: DrainWatch,
) {
    let Some((stream, alpn)) = tls.accept(stream, client.0).await else {
        return;
    };
    drop(tls);
    let proto = match alpn {
        Negotiated::H2 => Some(Proto::Http2),
        Negotiated::Http1 => Some(Proto::Http1),
        Negotiated::None => None,
    };
    let conn = Downstream {
        proto,
        https: true,
        ..Downstream::new(client, ctx, drain)
    };
    http::serve(stream, conn).await;
}
