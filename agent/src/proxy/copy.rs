//! Copy both ways between two streams, holding memory only for bytes that
//! are waiting. tokio's `copy_bidirectional` gives each direction an 8 KiB
//! buffer of its own for the connection's life, so every opaque or TLS
//! passthrough connection (and every upgraded one, a WebSocket) held
//! 16 KiB, talking or not: 64 MiB for a pod's 4,096 connections. Here a
//! read lands in a per-thread scratch buffer, borrowed within one poll,
//! and is written on at once; only what the other side's socket would
//! not take yet is copied to the heap, and that buffer is freed as soon
//! as it is written.
//!
//! The scratch buffer is this module's own, not shared with
//! `first_read`'s: a stream copied here may itself be in its first read
//! inside its poll, and one shared `RefCell` would then be borrowed twice.
//!
//! Bound: [`READ_BYTES`] per direction of a connection, and only while its
//! destination's socket is full.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes one read takes at most (and so bytes held for a full socket).
pub const READ_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<[u8; READ_BYTES]> = const { RefCell::new([0; READ_BYTES]) };
}

/// Copies `a` to `b` and `b` to `a` until each side has closed its
/// sending half and that close was passed on (a write shutdown of the
/// other side); returns the bytes written each way (a to b, b to a).
pub async fn copy_both<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    std::future::poll_fn(|cx| {
        if !a_to_b.done {
            a_to_b.done = ready_or_pending(a_to_b.poll(cx, &mut *a, &mut *b))?;
        }
        if !b_to_a.done {
            b_to_a.done = ready_or_pending(b_to_a.poll(cx, &mut *b, &mut *a))?;
        }
        if a_to_b.done && b_to_a.done {
            Poll::Ready(Ok((a_to_b.written, b_to_a.written)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// `Ok(true)` when the direction finished, `Ok(false)` while it waits.
fn ready_or_pending(polled: Poll<io::Result<()>>) -> io::Result<bool> {
    match polled {
        Poll::Ready(Ok(())) => Ok(true),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(false),
    }
}

/// One direction of the copy.
#[derive(Default)]
struct Direction {
    /// Read but not yet written (empty, with no allocation, as a rule).
    waiting: Vec<u8>,
    /// How much of `waiting` is written.
    at: usize,
    /// The reader has closed its sending half.
    eof: bool,
    /// Written since the last flush.
    unflushed: bool,
    done: bool,
    written: u64,
}

impl Direction {
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, from: &mut R, to: &mut W) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            while self.at < self.waiting.len() {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.waiting[self.at..]))?;
                self.wrote(n)?;
                self.at += n;
            }
            if !self.waiting.is_empty() {
                self.waiting = Vec::new();
                self.at = 0;
            }
            if self.eof {
                return Pin::new(&mut *to).poll_shutdown(cx);
            }
            match self.read_and_write(cx, from, to) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    // Nothing to read: what was written must not sit in a
                    // writer's buffer (a TLS stream's) meanwhile.
                    if self.unflushed {
                        ready!(Pin::new(&mut *to).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// One read through the scratch buffer, written on at once; what the
    /// writer would not take yet is kept in `waiting`.
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read))?;
            let bytes = read.filled();
            if bytes.is_empty() {
                self.eof = true;
                return Poll::Ready(Ok(()));
            }
            let mut at = 0;
            while at < bytes.len() {
                match Pin::new(&mut *to).poll_write(cx, &bytes[at..]) {
                    Poll::Ready(Ok(n)) => {
                        self.wrote(n)?;
                        at += n;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.waiting = bytes[at..].to_vec();
                        break;
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
    }

    fn wrote(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.written += n as u64;
        self.unflushed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_passes_each_close_on() {
        let (mut client, mut down) = duplex(64);
        let (mut up, mut server) = duplex(64);
        let copy = tokio::spawn(async move { copy_both(&mut down, &mut up).await });
        client.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // The client half-closes; the server sees it and still answers.
        client.shutdown().await.unwrap();
        assert_eq!(server.read(&mut [0; 8]).await.unwrap(), 0);
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong!");
        assert_eq!(copy.await.unwrap().unwrap(), (4, 5));
    }

    /// A reader much faster than its writer: everything arrives, in order,
    /// and what waited for the writer is held only while it waits.
    #[tokio::test]
    async fn a_slow_writer_gets_every_byte_in_order() {
        let (mut client, mut down) = duplex(1 << 20);
        // The server side's pipe holds 100 bytes: most writes are partial.
        let (mut up, mut server) = duplex(100);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let copy = tokio::spawn(async move {
            let r = copy_both(&mut down, &mut up).await;
            (r, up)
        });
        let mut got = Vec::new();
        let mut chunk = [0; 37];
        loop {
            let n = server.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
        assert_eq!(got, data);
        server.shutdown().await.unwrap();
        drop(writer.await.unwrap());
        let (copied, _) = copy.await.unwrap();
        assert_eq!(copied.unwrap(), (200_000, 0));
    }

    #[tokio::test]
    async fn an_idle_copy_holds_no_buffer() {
        let mut waiting = Direction::default();
        let (mut a, mut b) = duplex(64);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(waiting.poll(&mut cx, &mut a, &mut b).is_pending());
        assert_eq!(waiting.waiting.capacity(), 0);
    }
}
