//! The first reads of a connection, while what it speaks is still being
//! found out (HTTP/2 preface sniffing, protocol detection): a connection
//! that has sent nothing yet must not hold a buffer while it waits, or a
//! pod opening thousands of silent connections makes the shared proxy
//! hold kilobytes for each. A read lands in a per-thread scratch buffer,
//! borrowed within one poll, and only the bytes that came are kept.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes one read takes at most: a whole first request head, as a rule,
/// so that the codec finds it in the replayed bytes and does not read the
/// socket again for it.
pub const READ_BYTES: usize = 4096;

thread_local! {
    static SCRATCH: std::cell::RefCell<[u8; READ_BYTES]> =
        const { std::cell::RefCell::new([0; READ_BYTES]) };
}

/// One read of up to `limit` bytes (at most [`READ_BYTES`]), appended to
/// `buf`; 0: the peer closed.
pub async fn read_some<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    limit: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| poll_read_some(&mut *io, cx, buf, limit)).await
}

fn poll_read_some<S: AsyncRead + Unpin>(
    io: &mut S,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    limit: usize,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(&mut scratch[..limit.min(READ_BYTES)]);
        ready!(Pin::new(io).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn keeps_only_what_came_up_to_the_limit() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"hello").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(read_some(&mut b, &mut buf, 3).await.unwrap(), 3);
        assert_eq!(&buf[..], b"hel");
        assert!(buf.capacity() < 64, "no buffer reserved ahead of the bytes");
        assert_eq!(read_some(&mut b, &mut buf, 100).await.unwrap(), 2);
        assert_eq!(&buf[..], b"hello");
        drop(a);
        assert_eq!(read_some(&mut b, &mut buf, 100).await.unwrap(), 0);
    }
}
