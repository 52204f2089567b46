//! A pod's application in tests.
//!
//! usage: sim-server http NAME ADDR   (HTTP/1.1, keep-alive; answers `NAME` and
//!                                      echoes request details in headers;
//!                                      `GET /delay/MS` answers after MS ms;
//!                                      `GET /bytes/N` answers N bytes, up to 1 GiB)
//!        sim-server echo ADDR        (TCP echo until the peer closes)
//!        sim-server udp-echo ADDR    (each datagram back to its sender with
//!                                      sendto(), on a socket never connected,
//!                                      as DNS and QUIC servers answer)
//!
//! Prints `listening ADDR` once bound, so a test can wait for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [_, "http", name, addr] => {
            let name: &'static str = String::leak(name.to_string());
            serve(addr, move |stream| http(stream, name))
        }
        [_, "echo", addr] => serve(addr, echo),
        [_, "udp-echo", addr] => udp_echo(addr),
        _ => {
            eprintln!(
                "usage: sim-server http NAME ADDR | sim-server echo ADDR | sim-server udp-echo ADDR"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("sim-server: {e}");
        std::process::exit(1);
    }
}

fn serve(
    addr: &str,
    handle: impl Fn(TcpStream) -> std::io::Result<()> + Send + Sync + Copy + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(addr)?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = handle(stream);
        });
    }
    Ok(())
}

fn udp_echo(addr: &str) -> std::io::Result<()> {
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let socket = std::net::UdpSocket::bind(addr)?;
    println!("listening {}", socket.local_addr()?);
    std::io::stdout().flush()?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        if let Err(e) = socket.send_to(&buf[..n], from) {
            eprintln!("sim-server: answering {from}: {e}");
        }
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = stream.try_clone()?;
    std::io::copy(&mut reader, &mut stream)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Answers each request with `name`; headers tell the test what arrived.
fn http(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        let mut seen_headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                let key = key.trim().to_ascii_lowercase();
                let value = value.trim();
                if key == "content-length" {
                    content_length = value.parse().unwrap_or(0);
                }
                if key == "connection" && value.eq_ignore_ascii_case("close") {
                    close = true;
                }
                if key.starts_with("x-weir") {
                    seen_headers.push(key);
                }
            }
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        if let Some(ms) = request_line
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/delay/"))
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            // A slow application, bounded: a test's request in flight.
            std::thread::sleep(std::time::Duration::from_millis(ms.min(30_000)));
        }
        if let Some(size) = request_line
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/bytes/"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            large_body(&mut writer, size.min(1 << 30), close)?;
            if close {
                return Ok(());
            }
            continue;
        }
        // The source tells a test whether the request came through weir
        // (127.0.0.6) or straight from the client.
        let reply = format!("{name} from {}\n", peer.ip().to_canonical());
        // One write per response: several small ones would meet Nagle's
        // algorithm and the peer's delayed ACK (40 ms a request).
        // A server that closes after this response says so (RFC 9112 9.6);
        // otherwise a client such as wrk reuses the connection and meets the close.
        let connection = if close { "connection: close\r\n" } else { "" };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{connection}x-app-peer: {}\r\nx-app-request: {}\r\nx-app-saw-weir-headers: {}\r\n\r\n{reply}",
            reply.len(),
            canonical(peer),
            request_line.trim_end(),
            seen_headers.join(",")
        );
        writer.write_all(response.as_bytes())?;
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// A response of `size` bytes, written as fast as the peer reads them (a
/// large download, for a test of a client that reads slowly).
fn large_body(writer: &mut TcpStream, size: u64, close: bool) -> std::io::Result<()> {
    let connection = if close { "connection: close\r\n" } else { "" };
    write!(
        writer,
        "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n{connection}\r\n"
    )?;
    let chunk = [b'x'; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        writer.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    writer.flush()
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
