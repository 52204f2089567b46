//! Client-initiated renegotiation, refused at once. rustls answers a TLS 1.2
//! renegotiation ClientHello with a `no_renegotiation` warning and carries
//! on, so a client that insists waits for a ServerHello that never comes
//! (scanners saw 14 s hangs; Envoy and nginx close at once). After the
//! handshake a client never sends a record of outer type handshake (22):
//! TLS 1.2 has none but renegotiation, TLS 1.3 sends post-handshake
//! messages as application data. [`RecordGuard`] reads the record headers
//! as the bytes pass and fails the connection on such a record, so it
//! closes at once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

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
        };
        (guard, established)
    }

    /// Walk the record framing of `bytes`; `Err` on a post-handshake
    /// handshake record.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
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
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "client-initiated renegotiation refused",
                    ));
                }
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for RecordGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        // Bytes of a refused record never reach rustls.
        self.scan(&buf.filled()[start..])
            .inspect_err(|_| buf.set_filled(start))?;
        Poll::Ready(Ok(()))
    }
}

crate::proxy::write_through::write_through!(RecordGuard);

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
            g.scan(chunk).unwrap();
        }
        established.store(true, Ordering::Relaxed);
        g.scan(&record(23, 1000)).unwrap();
        let reneg = record(HANDSHAKE, 100);
        g.scan(&reneg[..2]).unwrap();
        assert!(g.scan(&reneg[2..]).is_err());
    }
}
