//! The downstream side of an intercepted connection: the bytes read during
//! detection are replayed first (nothing is lost), then the socket; bytes
//! both ways are counted into the identity-labelled counters.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct InterceptedIo<S> {
    prefix: BytesMut,
    inner: S,
    /// Bytes read from the client (Istio `tcp_received_bytes`).
    received: IntCounter,
    /// Bytes written to the client (Istio `tcp_sent_bytes`).
    sent: IntCounter,
}

impl<S> InterceptedIo<S> {
    /// `prefix`: bytes already read from `inner` during detection; they are
    /// counted here, once, as they are replayed.
    pub fn new(inner: S, prefix: BytesMut, received: IntCounter, sent: IntCounter) -> Self {
        Self {
            prefix,
            inner,
            received,
            sent,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for InterceptedIo<S> {
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
            this.received.inc_by(n as u64);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.received.inc_by(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for InterceptedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.sent.inc_by(n as u64);
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
            this.sent.inc_by(n as u64);
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
        let (rx, tx) = (
            IntCounter::new("r", "r").unwrap(),
            IntCounter::new("t", "t").unwrap(),
        );
        let mut io = InterceptedIo::new(a, BytesMut::from(&b"GET "[..]), rx.clone(), tx.clone());
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
        assert_eq!(rx.get(), 14);
        io.write_all(b"ok").await.unwrap();
        assert_eq!(tx.get(), 2);
    }
}
