//! The one stream wrapper: bytes already read (during protocol detection)
//! are replayed first, then the inner stream; every byte read or written
//! is reported to a [`Meter`]. What a meter does is the layer on top:
//! adding to running totals ([`ByteCounters`]), recording a
//! connection's activity for its idle timer (`http::io`), or nothing (a
//! bare replay, `()`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told about the bytes that move through an [`Io`].
pub trait Meter: Unpin {
    fn read(&self, _n: usize) {}
    fn wrote(&self, _n: usize) {}
}

impl Meter for () {}

/// Running totals of the bytes of a stream, one per direction; the layer
/// above says which of its counters each direction is.
pub trait ByteTotals: Send + Sync {
    fn add_read(&self, n: u64);
    fn add_written(&self, n: u64);
}

/// Bytes read from and written to a stream, counted into shared totals.
#[derive(Clone)]
pub struct ByteCounters(Arc<dyn ByteTotals>);

impl ByteCounters {
    pub fn new(totals: Arc<dyn ByteTotals>) -> Self {
        Self(totals)
    }
}

impl Meter for ByteCounters {
    fn read(&self, n: usize) {
        self.0.add_read(n as u64);
    }

    fn wrote(&self, n: usize) {
        self.0.add_written(n as u64);
    }
}

pub struct Io<S, M> {
    inner: S,
    /// Read from `inner` before this wrapper existed; replayed (and metered) first.
    prefix: BytesMut,
    meter: M,
}

impl<S, M: Meter> Io<S, M> {
    pub fn new(inner: S, meter: M) -> Self {
        Self::with_prefix(inner, BytesMut::new(), meter)
    }

    pub fn with_prefix(inner: S, prefix: BytesMut, meter: M) -> Self {
        Self {
            inner,
            prefix,
            meter,
        }
    }
}

impl<S: AsyncRead + Unpin, M: Meter> AsyncRead for Io<S, M> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Replayed: its allocation is not kept for the stream's life.
                this.prefix = BytesMut::new();
            }
            this.meter.read(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.meter.read(n);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, M: Meter> AsyncWrite for Io<S, M> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.meter.wrote(n);
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
            this.meter.wrote(n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Totals {
        read: AtomicU64,
        written: AtomicU64,
    }

    impl ByteTotals for Totals {
        fn add_read(&self, n: u64) {
            self.read.fetch_add(n, Relaxed);
        }

        fn add_written(&self, n: u64) {
            self.written.fetch_add(n, Relaxed);
        }
    }

    #[tokio::test]
    async fn replays_prefix_then_stream_and_counts() {
        let (a, mut b) = tokio::io::duplex(64);
        let totals = Arc::new(Totals::default());
        let counters = ByteCounters::new(totals.clone());
        let mut io = Io::with_prefix(a, BytesMut::from(&b"GET "[..]), counters);
        b.write_all(b"/ HTTP/1.1").await.unwrap();
        drop(b.shutdown().await);
        let mut all = Vec::new();
        let mut chunk = [0u8; 3];
        loop {
            let n = io.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(all, b"GET / HTTP/1.1");
        assert_eq!(io.prefix.capacity(), 0, "the replayed prefix is freed");
        assert_eq!(totals.read.load(Relaxed), 14);
        io.write_all(b"ok").await.unwrap();
        assert_eq!(totals.written.load(Relaxed), 2);
    }
}
