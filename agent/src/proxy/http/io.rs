//! Stream wrapper counting bytes and recording the last activity time
//! (for the idle timeout). Works over any AsyncRead + AsyncWrite stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proxy::cluster::outlier::now_ms;

/// State shared by a connection's IO wrapper, its service and its idle timer.
#[derive(Default)]
pub struct ConnShared {
    pub last_activity_ms: AtomicU64,
    /// When the first byte of a not yet parsed request head arrived (0: none).
    pub head_started_ms: AtomicU64,
    pub in_flight: AtomicU32,
}

impl ConnShared {
    pub fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }
}

pub struct MeteredIo<S> {
    inner: S,
    shared: Arc<ConnShared>,
    rx: IntCounter,
    tx: IntCounter,
}

impl<S> MeteredIo<S> {
    pub fn new(inner: S, shared: Arc<ConnShared>, rx: IntCounter, tx: IntCounter) -> Self {
        shared.touch();
        Self {
            inner,
            shared,
            rx,
            tx,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for MeteredIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.rx.inc_by(n as u64);
            let now = now_ms().max(1);
            let sh = &this.shared;
            sh.last_activity_ms.store(now, Ordering::Relaxed);
            if sh.in_flight.load(Ordering::Relaxed) == 0
                && sh.head_started_ms.load(Ordering::Relaxed) == 0
            {
                sh.head_started_ms.store(now, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MeteredIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.tx.inc_by(n as u64);
            this.shared.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.tx.inc_by(n as u64);
            this.shared.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
