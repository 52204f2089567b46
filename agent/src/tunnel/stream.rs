//! The tunnelled stream handed to callers on both sides.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One tunnelled TCP stream: the body of a `CONNECT` stream after its 200.
/// `shutdown()` ends this side's direction (HTTP/2 `END_STREAM`); the
/// peer reads EOF and may go on writing. Dropping it ends both.
pub struct TunnelStream {
    io: TokioIo<Upgraded>,
    /// Held while the stream lives, so the pool can tell a connection that
    /// carries streams from an idle one.
    _lease: Option<Arc<()>>,
    /// On the server side, the `CONNECT`'s `baggage` header (at most
    /// [`MAX_BAGGAGE`] bytes): what the peer says about the stream's
    /// source, which its certificate does not vouch for.
    baggage: Option<Box<str>>,
}

/// The longest `baggage` header passed on; a longer one is dropped.
pub const MAX_BAGGAGE: usize = 1024;

impl TunnelStream {
    pub(super) fn new(upgraded: Upgraded, lease: Option<Arc<()>>) -> TunnelStream {
        TunnelStream {
            io: TokioIo::new(upgraded),
            _lease: lease,
            baggage: None,
        }
    }

    pub(super) fn with_baggage(mut self, baggage: Option<&str>) -> TunnelStream {
        self.baggage = baggage.filter(|b| b.len() <= MAX_BAGGAGE).map(Box::from);
        self
    }

    /// The `baggage` header the stream's `CONNECT` carried (server side).
    pub fn baggage(&self) -> Option<&str> {
        self.baggage.as_deref()
    }
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelStream")
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
