//! A listener: bound socket plus accept loop; each connection is served by
//! `http::serve` (after the TLS handshake on a TLS listener) until the
//! listener's drain handle fires.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::Instrument;

use super::drain::DrainWatch;
use super::http::sniff::Proto;
use super::http::{self, Downstream, ListenerContext};
use super::tls::failure::LogLimit;
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
/// A process-wide number for a connection's log span, so its lines can be
/// told from another's with the same peer (bound listeners and
/// interception alike).
pub fn next_connection_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

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
        let refusals = LogLimit::default();
        loop {
            let accepted = tokio::select! {
                r = tcp.accept() => r,
                _ = drain.signaled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    errors.accepted();
                    let state = ctx.state.load();
                    let max = state.settings.max_connections_per_client;
                    let Some(permit) = ctx.clients.admit(peer.ip(), max) else {
                        refuse(&ctx, &stream, peer, max, &refusals);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let client = ClientAddr(peer);
                    // The span a connection's log lines share (`logging`).
                    let span = tracing::info_span!(
                        "conn",
                        id = next_connection_id(),
                        listener = &*ctx.name,
                        %peer,
                    );
                    match state.tls.clone() {
                        None => {
                            let conn = Downstream::new(client, ctx.clone(), drain.clone());
                            tokio::spawn(
                                async move {
                                    http::serve(stream, conn).await;
                                    drop(permit);
                                }
                                .instrument(span),
                            );
                        }
                        Some(tls) => {
                            let (ctx, drain) = (ctx.clone(), drain.clone());
                            tokio::spawn(
                                async move {
                                    serve_tls(tls, stream, client, ctx, drain).await;
                                    drop(permit);
                                }
                                .instrument(span),
                            );
                        }
                    }
                }
                Err(e) => errors.failed(&e).await,
            }
        }
        log::info!("listener {}: stopped accepting", ctx.name);
    }
}

/// A connection from a client that has its `max_connections_per_client`
/// open is reset at once (a RST: the client fails fast), counted, and
/// logged at a bounded rate.
fn refuse(
    ctx: &ListenerContext,
    stream: &tokio::net::TcpStream,
    peer: SocketAddr,
    max: u32,
    log: &LogLimit,
) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
    ctx.metrics.cx_overflow.inc();
    if let Some(skipped) = log.admit() {
        log::warn!(
            "listener {}: connection from {peer} reset: the client has its {max} connections open (limits.max_connections_per_client; {skipped} more not logged)",
            ctx.name
        );
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
