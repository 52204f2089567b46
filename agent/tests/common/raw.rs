//! A raw HTTP/1 client: exact bytes out (malformed on purpose), one response
//! read back, and whether the connection then stays usable or closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw read waits before the test calls the peer silent.
const READ_LIMIT: Duration = Duration::from_secs(10);

pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl RawReply {
    pub fn closes(&self) -> bool {
        self.headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

impl RawConn {
    pub async fn open(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Half-close: the client has nothing more to send.
    pub async fn finish(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(READ_LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no answer within {READ_LIMIT:?}"),
        }
    }

    /// The next response (head and content-length body); `None` if the
    /// connection closed first.
    pub async fn reply(&mut self) -> Option<RawReply> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + 4 + len {
            if !self.fill().await {
                return None;
            }
        }
        let body =
            String::from_utf8_lossy(&self.buf[head_end + 4..head_end + 4 + len]).into_owned();
        self.buf.drain(..head_end + 4 + len);
        Some(RawReply {
            status,
            headers,
            body,
        })
    }

    /// Whether the peer closes the connection (reads until EOF).
    pub async fn closed(&mut self) -> bool {
        while self.fill().await {}
        true
    }
}

/// One request on a fresh connection; its reply (`None`: closed unanswered).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<RawReply> {
    let mut c = RawConn::open(addr).await;
    c.send(bytes).await;
    c.reply().await
}
