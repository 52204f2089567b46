//! Which HTTP version a cleartext connection speaks: HTTP/2 with prior
//! knowledge starts with the connection preface; anything else is HTTP/1.1.

use std::io;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

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

    /// As Envoy's `%PROTOCOL%` names it.
    pub fn envoy_name(self) -> &'static str {
        match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// Read until the bytes differ from the preface (HTTP/1.1) or the whole
/// preface arrived (HTTP/2); `None`: the peer closed first. The bytes read
/// are returned, for the codec to read first (`Io::with_prefix`).
pub async fn sniff<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(Option<Proto>, BytesMut)> {
    let mut buf = BytesMut::with_capacity(PREFACE.len());
    loop {
        let room = PREFACE.len() - buf.len();
        let n = io.read_buf(&mut (&mut buf).limit(room)).await?;
        if n == 0 {
            return Ok((None, buf));
        }
        if !PREFACE.starts_with(&buf) {
            return Ok((Some(Proto::Http1), buf));
        }
        if buf.len() == PREFACE.len() {
            return Ok((Some(Proto::Http2), buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn detect(input: &[u8]) -> (Option<Proto>, Vec<u8>) {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, input)
            .await
            .unwrap();
        drop(a);
        let mut b = b;
        let (proto, prefix) = sniff(&mut b).await.unwrap();
        let mut rest = Vec::new();
        crate::proxy::io::Io::with_prefix(b, prefix, ())
            .read_to_end(&mut rest)
            .await
            .unwrap();
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
