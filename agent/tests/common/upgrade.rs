//! A WebSocket-style upgrade on raw sockets: a server that answers an
//! upgrade request with 101 and then echoes bytes, and a client that asks
//! for the upgrade and talks through the tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The upgrade server; `upgrades` counts the 101s it sent.
pub struct UpgradeServer {
    pub addr: SocketAddr,
    pub upgrades: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UpgradeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UpgradeServer {
    pub async fn start() -> UpgradeServer {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let upgrades = Arc::new(AtomicUsize::new(0));
        let counted = upgrades.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    // Plain requests get 426 on a kept-alive connection.
                    loop {
                        let Some(head) = read_head(&mut s).await else {
                            return;
                        };
                        let lower = head.to_ascii_lowercase();
                        if lower.contains("\r\nupgrade: websocket\r\n")
                            && lower.contains("\r\nconnection: upgrade\r\n")
                        {
                            break;
                        }
                        let refusal = b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(refusal).await.is_err() {
                            return;
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\
                              upgrade: websocket\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                        )
                        .await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        UpgradeServer {
            addr,
            upgrades,
            task,
        }
    }
}

/// Reads an HTTP head (through the blank line); `None` if the peer closed first.
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(TIMEOUT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// What an upgrade attempt through a proxy got.
pub struct Upgraded {
    /// The response head, as received.
    pub head: String,
    /// On a 101: what came back through the tunnel for our bytes, and
    /// whether it then closed after our half-close.
    pub echoed: Option<(Vec<u8>, bool)>,
}

/// Asks `addr` to upgrade a request for `host` to WebSocket; on a 101,
/// sends bytes through the tunnel and reads them back.
pub async fn upgrade_and_echo(addr: SocketAddr, host: &str) -> Upgraded {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /chat HTTP/1.1\r\nhost: {host}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await.unwrap_or_default();
    if !head.starts_with("HTTP/1.1 101") {
        return Upgraded { head, echoed: None };
    }
    let message = TUNNEL_MESSAGE;
    s.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    let echoed = tokio::time::timeout(TIMEOUT, s.read_exact(&mut back))
        .await
        .is_ok_and(|r| r.is_ok());
    if !echoed {
        return Upgraded {
            head,
            echoed: Some((Vec::new(), false)),
        };
    }
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest))
        .await
        .is_ok_and(|r| r.is_ok() && rest.is_empty());
    Upgraded {
        head,
        echoed: Some((back, closed)),
    }
}

/// The bytes `upgrade_and_echo` sends through the tunnel.
pub const TUNNEL_MESSAGE: &[u8] = b"\x81\x05hello, not HTTP: \x00\xff through the tunnel";
