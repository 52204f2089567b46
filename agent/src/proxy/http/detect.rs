//! Cleartext protocol detection: HTTP/2 with prior knowledge starts with
//! the connection preface; anything else is HTTP/1.1. The bytes read to
//! decide are replayed to the codec by [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// The HTTP/2 client connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

impl Proto {
    /// Index into the `protocol` metric label values.
    pub fn index(self) -> usize {
        match self {
            Self::Http1 => 0,
            Self::Http2 => 1,
        }
    }
}

/// A stream with up to 24 already read bytes in front.
pub struct Prefixed<S> {
    inner: S,
    buf: [u8; 24],
    pos: usize,
    len: usize,
}

impl<S: AsyncRead + Unpin> Prefixed<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: [0; 24],
            pos: 0,
            len: 0,
        }
    }

    /// Read until the bytes differ from the preface (HTTP/1.1) or the whole
    /// preface arrived (HTTP/2). `None`: the peer closed first.
    pub async fn sniff(&mut self) -> io::Result<Option<Proto>> {
        loop {
            let n = self.inner.read(&mut self.buf[self.len..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.len += n;
            if !PREFACE.starts_with(&self.buf[..self.len]) {
                return Ok(Some(Proto::Http1));
            }
            if self.len == PREFACE.len() {
                return Ok(Some(Proto::Http2));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let n = (this.len - this.pos).min(buf.remaining());
            buf.put_slice(&this.buf[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::proxy::write_through::write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;

    async fn detect(input: &[u8]) -> (Option<Proto>, Vec<u8>) {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, input)
            .await
            .unwrap();
        drop(a);
        let mut p = Prefixed::new(b);
        let proto = p.sniff().await.unwrap();
        let mut rest = Vec::new();
        p.read_to_end(&mut rest).await.unwrap();
        (proto, rest)
    }

    #[tokio::test]
    async fn detects_and_replays() {
        let (p, rest) = detect(b"GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(p, Some(Proto::Http1));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        let mut h2 = PREFACE.to_vec();
        h2.extend_from_slice(b"\0\0\0");
        let (p, rest) = detect(&h2).await;
        assert_eq!(p, Some(Proto::Http2));
        assert_eq!(rest, h2);
        assert_eq!(detect(b"PRI * HTTP/1.1\r\n").await.0, Some(Proto::Http1));
        assert_eq!(detect(b"PRI").await.0, None);
    }
}
