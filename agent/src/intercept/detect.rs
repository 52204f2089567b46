//! Protocol detection: one bounded read of the first bytes, with a timeout.
//!
//! The bytes read are kept by the caller and replayed (`io::InterceptedIo`),
//! so nothing is lost. Server-first protocols (MySQL, SMTP, ...) send nothing
//! until the server greets: the timeout fires and the connection is opaque.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncRead;

use super::sni;
use crate::proxy::first_read::read_some;

/// At most this much is read before deciding: a TLS record header plus the
/// largest record (a ClientHello with post-quantum key shares is ~1.8 KiB).
pub const MAX_DETECT_BYTES: usize = 5 + 16 * 1024;

/// HTTP/1.x request methods recognised at the start of a connection (as
/// Envoy's `http_inspector`). `PRI * HTTP/2.0` (h2c prior knowledge) is not
/// HTTP/1 and is passed through as opaque.
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Tls { sni: Option<String> },
    Opaque,
}

/// Direction of an intercepted connection (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// Read from `s` into `buf` until the protocol is known, `MAX_DETECT_BYTES`
/// are read, the peer stops sending (EOF or error) or `timeout` passes.
pub async fn detect<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
    timeout: Option<Duration>,
) -> Detected {
    // `protocol_detection_timeout`; `None`: wait for the client without limit.
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        if let Some(d) = classify(buf) {
            return d;
        }
        let room = MAX_DETECT_BYTES - buf.len();
        if room == 0 {
            return settle(buf);
        }
        // Nothing is reserved before bytes come: a silent connection,
        // waiting out the timeout, holds no buffer (`first_read`).
        let read = read_some(&mut *s, buf, room);
        let read = match deadline {
            Some(d) => tokio::time::timeout_at(d, read).await.ok(),
            None => Some(read.await),
        };
        match read {
            Some(Ok(n)) if n > 0 => {}
            _ => return settle(buf),
        }
    }
}

/// The protocol, or `None` while more bytes could change the answer.
pub fn classify(b: &[u8]) -> Option<Detected> {
    if b.is_empty() {
        return None;
    }
    if b[0] == 0x16 {
        // TLS handshake record: content type 22, version 3.x.
        if b.len() < 2 {
            return None;
        }
        if b[1] != 0x03 {
            return Some(Detected::Opaque);
        }
        if b.len() < 5 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
        if b.len() < 5 + len {
            return None;
        }
        return Some(Detected::Tls {
            sni: sni::server_name(&b[5..5 + len]),
        });
    }
    let mut maybe = false;
    for m in METHODS {
        if b.starts_with(m) {
            return Some(Detected::Http1);
        }
        maybe |= m.starts_with(b);
    }
    if maybe { None } else { Some(Detected::Opaque) }
}

/// No more bytes are coming (yet): decide on what there is.
fn settle(b: &[u8]) -> Detected {
    match classify(b) {
        Some(d) => d,
        None if b.len() >= 3 && b[0] == 0x16 && b[1] == 0x03 => {
            // A handshake record that did not arrive whole: SNI from what did.
            Detected::Tls {
                sni: sni::server_name(&b[5.min(b.len())..]),
            }
        }
        None => Detected::Opaque,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"\x00\x00\x00\x01"), Some(Detected::Opaque));
        assert_eq!(classify(b"GETX"), Some(Detected::Opaque));
        assert_eq!(classify(b"\x16\x03\x01\x00"), None);
        assert_eq!(classify(b"\x16\x01"), Some(Detected::Opaque));
        assert_eq!(
            classify(b"\x16\x03\x01\x00\x00"),
            Some(Detected::Tls { sni: None })
        );
    }

    #[tokio::test]
    async fn server_first_times_out_as_opaque_and_keeps_nothing() {
        let (mut a, _b) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        assert_eq!(
            detect(&mut a, &mut buf, Some(Duration::from_millis(20))).await,
            Detected::Opaque
        );
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 0, "a silent connection holds no buffer");
    }

    #[tokio::test]
    async fn partial_method_then_timeout_keeps_bytes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"GE").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            detect(&mut a, &mut buf, Some(Duration::from_millis(20))).await,
            Detected::Opaque
        );
        assert_eq!(&buf[..], b"GE");
    }

    #[tokio::test]
    async fn http_in_two_segments() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let t = tokio::spawn(async move {
            b.write_all(b"PO").await.unwrap();
            tokio::task::yield_now().await;
            b.write_all(b"ST /x HTTP/1.1\r\n").await.unwrap();
            b
        });
        let mut buf = BytesMut::new();
        assert_eq!(
            detect(&mut a, &mut buf, Some(Duration::from_secs(5))).await,
            Detected::Http1
        );
        assert!(buf.starts_with(b"POST "));
        drop(t.await);
    }

    #[tokio::test]
    async fn without_a_timeout_a_late_client_is_still_http() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tokio::io::AsyncWriteExt::write_all(&mut b, b"GET / HTTP/1.1\r\n").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let mut buf = BytesMut::new();
        assert_eq!(detect(&mut a, &mut buf, None).await, Detected::Http1);
    }
}
