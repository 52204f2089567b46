//! One client address cannot take a bound listener from the others
//! (issue 18): beyond `limits.max_connections_per_client` open connections
//! its new ones are reset at once and counted; other clients are served,
//! and the client's places come back as its connections close.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `source`; a reset may already end the connect, on loopback.
async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// One keep-alive request on a new connection from `source`: the status
/// line and the connection, or the error that ended it.
async fn served_from(source: &str, to: SocketAddr) -> std::io::Result<(String, TcpStream)> {
    let mut s = connect_from(source, to).await?;
    let line = request(&mut s).await?;
    Ok((line, s))
}

/// One keep-alive request on `s`: the status line, or the error that ended it.
async fn request(s: &mut TcpStream) -> Result<String, std::io::Error> {
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer or a reset")?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_share_is_reset_and_others_are_served() {
    let mut p = Proxy::start(&answering_ok(
        "    limits: {max_connections_per_client: 3}\n",
    ))
    .await;
    let main = p.listener("main").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (line, s) = served_from("127.0.0.1", main).await.unwrap();
        assert_eq!(line, "HTTP/1.1 200 OK");
        held.push(s);
    }
    let refused = served_from("127.0.0.1", main).await.map(|(line, _)| line);
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || matches!(&refused, Ok(line) if line.is_empty()),
        "the fourth connection was served: {refused:?}"
    );
    let overflow = "weir_http_downstream_connections_overflow_total{listener=\"main\"}";
    assert_eq!(p.metric(overflow).await, 1.0);

    // Another client address is served meanwhile.
    let (line, _other) = served_from("127.0.0.2", main).await.unwrap();
    assert_eq!(line, "HTTP/1.1 200 OK");

    // A closed connection gives its place back.
    drop(held.pop());
    eventually("a place comes back", Duration::from_secs(10), || async {
        let served = served_from("127.0.0.1", main).await;
        served.is_ok_and(|(line, _)| line == "HTTP/1.1 200 OK")
    })
    .await;
    assert!(
        p.stderr().contains("limits.max_connections_per_client"),
        "the refusal is logged"
    );
}
