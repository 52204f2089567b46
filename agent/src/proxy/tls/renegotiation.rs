//! Client-initiated renegotiation, refused at once and said so. rustls
//! answers a TLS 1.2 renegotiation ClientHello with a `no_renegotiation`
//! warning and carries on, so a client that insists waits for a ServerHello
//! that never comes (scanners saw 14 s hangs; Envoy and nginx close at
//! once). After the handshake a client never sends a record of outer type
//! handshake (22): TLS 1.2 has none but renegotiation, TLS 1.3 sends
//! post-handshake messages as application data. [`RecordGuard`] reads the
//! record headers as the bytes pass; such a record still reaches rustls,
//! which queues its `no_renegotiation` alert (encrypted under the current
//! keys, which only rustls holds), and the next read fails with
//! [`RenegotiationRefused`]. [`AlertThenClose`], above the TLS stream,
//! then shuts the TLS stream down before handing the error on: the queued
//! alert goes out, then `close_notify`, then FIN, as nginx does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read error after a renegotiation attempt.
#[derive(Debug, thiserror::Error)]
#[error("client-initiated renegotiation refused")]
pub struct RenegotiationRefused;

fn refused() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, RenegotiationRefused)
}

const HANDSHAKE: u8 = 22;
const HEADER_LEN: usize = 5;

/// Wraps the client's byte stream under the TLS layer.
pub struct RecordGuard<IO> {
    inner: IO,
    /// Set once the handshake is complete.
    established: Arc<AtomicBool>,
    /// Bytes of the current record header seen so far.
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Body bytes of the current record still to pass.
    body_left: usize,
    /// A post-handshake handshake record was seen: once it has passed,
    /// reads fail.
    refusing: bool,
}

impl<IO> RecordGuard<IO> {
    pub fn new(inner: IO) -> (Self, Arc<AtomicBool>) {
        let established = Arc::new(AtomicBool::new(false));
        let guard = Self {
            inner,
            established: established.clone(),
            header: [0; HEADER_LEN],
            header_len: 0,
            body_left: 0,
            refusing: false,
        };
        (guard, established)
    }

    /// Walk the record framing of `bytes`, noting a post-handshake
    /// handshake record.
    fn scan(&mut self, mut bytes: &[u8]) {
        // Past the refused record nothing is parsed: reads fail from there.
        while !bytes.is_empty() && !self.refused_record_passed() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len == HEADER_LEN {
                self.header_len = 0;
                if self.header[0] == HANDSHAKE && self.established.load(Ordering::Relaxed) {
                    self.refusing = true;
                }
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }

    /// The refused record has reached rustls whole.
    fn refused_record_passed(&self) -> bool {
        self.refusing && self.body_left == 0
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for RecordGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.refused_record_passed() {
            return Poll::Ready(Err(refused()));
        }
        let start = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        this.scan(&buf.filled()[start..]);
        Poll::Ready(Ok(()))
    }
}

crate::proxy::write_through::write_through!(RecordGuard);

/// Above the TLS stream: on [`RenegotiationRefused`], shut the TLS stream
/// down (what rustls queued, then `close_notify`) before failing the read.
pub struct AlertThenClose<S> {
    inner: S,
    closing: bool,
}

impl<S> AlertThenClose<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            closing: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for AlertThenClose<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.closing {
            match ready!(Pin::new(&mut self.inner).poll_read(cx, buf)) {
                Err(e) if e.get_ref().is_some_and(|i| i.is::<RenegotiationRefused>()) => {
                    self.closing = true;
                }
                other => return Poll::Ready(other),
            }
        }
        // The client is gone or going; a failed shutdown changes nothing.
        let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        Poll::Ready(Err(refused()))
    }
}

crate::proxy::write_through::write_through!(AlertThenClose);

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: usize) -> Vec<u8> {
        let mut v = vec![kind, 3, 3];
        v.extend_from_slice(&(body as u16).to_be_bytes());
        v.extend(std::iter::repeat_n(0xAA, body));
        v
    }

    #[test]
    fn handshake_records_pass_until_established_then_fail() {
        let (mut g, established) = RecordGuard::new(());
        let mut stream = record(HANDSHAKE, 300);
        stream.extend(record(23, 40));
        // Split at awkward places: inside a header and inside a body.
        for chunk in stream.chunks(3) {
            g.scan(chunk);
        }
        established.store(true, Ordering::Relaxed);
        g.scan(&record(23, 1000));
        assert!(!g.refused_record_passed());
        // The refused record passes whole (rustls answers it), then reads fail.
        let reneg = record(HANDSHAKE, 100);
        g.scan(&reneg[..2]);
        g.scan(&reneg[2..50]);
        assert!(!g.refused_record_passed());
        g.scan(&reneg[50..]);
        assert!(g.refused_record_passed());
    }
}
