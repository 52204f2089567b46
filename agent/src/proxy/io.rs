//! The one stream wrapper: bytes already read (during protocol detection)
//! are replayed first, then the inner stream; every byte read or written
//! is reported to a [`Meter`]. What a meter does is the layer on top:
//! counting into Prometheus counters ([`ByteCounters`]), recording a
//! connection's activity for its idle timer (`http::io`), or nothing (a
//! bare replay, `()`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Told about the bytes that move through an [`Io`].
pub trait Meter: Unpin {
    fn read(&self, _n: usize) {}
    fn wrote(&self, _n: usize) {}
}

impl Meter for () {}

/// Bytes read from and written to a stream, counted.
#[derive(Clone)]
pub struct ByteCounters {
    pub read: IntCounter,
    pub written: IntCounter,
}

impl Meter for ByteCounters {
    fn read(&self, n: usize) {
        self.read.inc_by(n as u64);
    }

    fn wrote(&self, n: usize) {
        self.written.inc_by(n as u64);
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn replays_prefix_then_stream_and_counts() {
        let (a, mut b) = tokio::io::duplex(64);
        let counters = ByteCounters {
            read: IntCounter::new("r", "r").unwrap(),
            written: IntCounter::new("t", "t").unwrap(),
        };
        let mut io = Io::with_prefix(a, BytesMut::from(&b"GET "[..]), counters.clone());
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
        assert_eq!(counters.read.get(), 14);
        io.write_all(b"ok").await.unwrap();
        assert_eq!(counters.written.get(), 2);
    }
}
