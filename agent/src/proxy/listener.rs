//! A listener: bound socket plus accept loop; each connection is served by
//! `http::serve` until the listener's drain handle fires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::addr::{ClientAddr, ConnMeta};
use super::drain::DrainWatch;
use super::http::{self, ListenerContext};

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
        loop {
            let accepted = tokio::select! {
                r = tcp.accept() => r,
                _ = drain.signaled() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let meta = ConnMeta {
                        client: ClientAddr(peer),
                        orig_dst: None,
                    };
                    tokio::spawn(http::serve(stream, meta, ctx.clone(), drain.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    log::warn!("listener {}: accept: {e}", ctx.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        log::info!("listener {}: stopped accepting", ctx.name);
    }
}
