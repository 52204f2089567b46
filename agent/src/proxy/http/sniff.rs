//! Which HTTP version a cleartext connection speaks: HTTP/2 with prior
//! knowledge starts with the connection preface; anything else is HTTP/1.1.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncRead;

use crate::proxy::first_read::{READ_BYTES, read_some};

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
    let mut buf = BytesMut::new();
    loop {
        // A whole first head, as a rule, in one read (`first_read`).
        let n = read_some(&mut *io, &mut buf, READ_BYTES).await?;
        if n == 0 {
            return Ok((None, buf));
        }
        let seen = &buf[..buf.len().min(PREFACE.len())];
        if !PREFACE.starts_with(seen) {
            return Ok((Some(Proto::Http1), buf));
        }
        if seen.len() == PREFACE.len() {
            return Ok((Some(Proto::Http2), buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

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

    /// The head that is there is taken in one read, so the codec does not
    /// read the socket again for it; a larger one in reads of the bound.
    #[tokio::test]
    async fn a_first_head_is_read_whole() {
        let head = format!(
            "GET / HTTP/1.1\r\nhost: a\r\nx: {}\r\n\r\n",
            "y".repeat(1000)
        );
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut a, head.as_bytes())
            .await
            .unwrap();
        let (proto, prefix) = sniff(&mut b).await.unwrap();
        assert_eq!(proto, Some(Proto::Http1));
        assert_eq!(prefix, head.as_bytes(), "the head in the first read");
        let big = vec![b'G'; 3 * READ_BYTES];
        tokio::io::AsyncWriteExt::write_all(&mut a, &big)
            .await
            .unwrap();
        let (_, prefix) = sniff(&mut b).await.unwrap();
        assert_eq!(prefix.len(), READ_BYTES, "one bounded read");
    }
}
