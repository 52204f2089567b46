//! A pod's application in tests.
//!
//! usage: sim-client ADDR MESSAGE     connect, send MESSAGE, close the sending
//!                                    side, print the reply
//!        sim-client http ADDR HOST PATH COUNT
//!                                    COUNT GETs on one keep-alive connection;
//!                                    prints `STATUS BODY` counts, one a line
//!        sim-client loop ADDR HOST PATH GAP_MS DURATION_MS
//!                                    one GET per new connection every GAP_MS for
//!                                    DURATION_MS; prints `ok MS BODY` or
//!                                    `err MS ERROR` per request (MS since start)
//!        sim-client keepalive ADDR HOST PATH GAP_MS DURATION_MS
//!                                    a GET every GAP_MS for DURATION_MS on one
//!                                    keep-alive connection, a new one only
//!                                    after `connection: close` (RFC 9112 9.6)
//!                                    or an error; prints as `loop`
//!          (`loop` and `keepalive` also end once the file named by
//!          SIM_CLIENT_STOP_FILE exists)
//!        sim-client hold ADDR HOST COUNT
//!                                    opens COUNT keep-alive connections, one GET
//!                                    on each, and keeps them open until the file
//!                                    SIM_CLIENT_STOP_FILE names exists (60 s at
//!                                    most); prints `ok N BODY` or `err N ERROR`
//!                                    per connection as it goes
//!        sim-client idle ADDR COUNT EVERY
//!                                    opens COUNT connections that send no
//!                                    request; every EVERYth (0: none) sends a
//!                                    line of non-HTTP bytes at once and each
//!                                    second; prints `opened N of COUNT in MS ms,
//!                                    F failed`
//!                                    once all are tried, keeps them until the
//!                                    file SIM_CLIENT_STOP_FILE names exists (60 s
//!                                    at most), then prints how many the peer
//!                                    had closed or reset
//!        sim-client slow-read ADDR HOST PATH BYTES_PER_SEC
//!                                    one GET, its response read at BYTES_PER_SEC
//!                                    until its end, the stop file or 60 s;
//!                                    prints `reading` at the first bytes, then
//!                                    `read N bytes in MS ms` (`, complete`)
//!        sim-client echo ADDR BYTES  send BYTES pseudo-random bytes, read them
//!                                    back, print `identical` or what differed
//!        sim-client until-ok ADDR HOST PATH GAP_MS TIMEOUT_MS
//!                                    a GET on a new connection every GAP_MS until
//!                                    one answers 200; prints `ok EPOCH_US ATTEMPTS`
//!                                    (wall-clock time of that answer); fails after
//!                                    TIMEOUT_MS
//!        sim-client reach KIND ADDR  one connection of KIND (`tcp`: a line of
//!                                    text; `http`: a GET; `tls`: a TLS
//!                                    ClientHello; `udp`: one datagram on a
//!                                    connected socket; `udp-sendto`: one
//!                                    datagram addressed by sendto() on an
//!                                    unconnected one); prints `EPERM` when
//!                                    connect() (sendto()) is refused with it,
//!                                    else `connected` (`sent`) and the reply's
//!                                    first line (`(none)` if none came in 2 s)
//!        sim-client until-refused ADDR GAP_MS TIMEOUT_MS
//!                                    connects every GAP_MS until one is refused;
//!                                    prints `refused EPOCH_US ATTEMPTS`; fails
//!                                    after TIMEOUT_MS

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [_, "http", addr, host, path, count] => {
            return exit_with(http_loop(addr, host, path, count));
        }
        [_, "echo", addr, bytes] => return exit_with(echo_check(addr, bytes)),
        [_, "hold", addr, host, count] => return exit_with(hold(addr, host, count)),
        [_, "idle", addr, count, every] => return exit_with(idle(addr, count, every)),
        [_, "slow-read", addr, host, path, rate] => {
            return exit_with(slow_read(addr, host, path, rate));
        }
        [_, "loop", addr, host, path, gap, duration] => {
            return exit_with(request_loop(addr, host, path, gap, duration));
        }
        [_, "keepalive", addr, host, path, gap, duration] => {
            return exit_with(keepalive_loop(addr, host, path, gap, duration));
        }
        [_, "until-ok", addr, host, path, gap, timeout] => {
            return exit_with(until(addr, gap, timeout, Until::Ok { host, path }));
        }
        [_, "reach", kind, addr] => return exit_with(reach(kind, addr)),
        [_, "until-refused", addr, gap, timeout] => {
            return exit_with(until(addr, gap, timeout, Until::Refused));
        }
        _ => {}
    }
    let [_, addr, message] = args.as_slice() else {
        eprintln!("usage: sim-client ADDR MESSAGE");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("sim-client: bad address {addr}: {e}");
            std::process::exit(2);
        }
    };
    match exchange(addr, message) {
        Ok(reply) => print!("{reply}"),
        Err(e) => {
            eprintln!("sim-client: {addr}: {e}");
            std::process::exit(1);
        }
    }
}

fn exchange(addr: SocketAddr, message: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(message.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// A TLS 1.2 ClientHello record header and the start of its handshake:
/// enough for a detector, nothing a server could complete.
const TLS_HELLO_START: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
];

/// `errno` EPERM on Linux.
const EPERM: i32 = 1;

fn reach(kind: &str, addr: &str) -> Result<String, String> {
    let addr: SocketAddr = arg("address", addr)?;
    let payload: &[u8] = match kind {
        "tcp" | "udp" | "udp-sendto" => b"hello from the pod\n",
        "http" => b"GET / HTTP/1.1\r\nhost: reach.test\r\nconnection: close\r\n\r\n",
        "tls" => TLS_HELLO_START,
        other => return Err(format!("unknown kind {other}")),
    };
    let eperm = |e: &std::io::Error| e.raw_os_error() == Some(EPERM);
    let mut reply = vec![0u8; 512];
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let mut outcome = "connected";
    let got = if kind == "udp-sendto" {
        let socket = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
        match socket.send_to(payload, addr) {
            Err(e) if eperm(&e) => return Ok("EPERM\n".into()),
            Err(e) => return Err(format!("sendto {addr}: {e}")),
            Ok(_) => {}
        }
        outcome = "sent";
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok();
        socket.recv(&mut reply).unwrap_or(0)
    } else if kind == "udp" {
        let socket = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
        match socket.connect(addr) {
            Err(e) if eperm(&e) => return Ok("EPERM\n".into()),
            Err(e) => return Err(format!("connect {addr}: {e}")),
            Ok(()) => {}
        }
        socket.send(payload).map_err(|e| format!("send: {e}"))?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok();
        socket.recv(&mut reply).unwrap_or(0)
    } else {
        let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Err(e) if eperm(&e) => return Ok("EPERM\n".into()),
            Err(e) => return Err(format!("connect {addr}: {e}")),
            Ok(s) => s,
        };
        // Every TCP server these tests reach answers, so the wait ends at
        // the answer. The bound has to outlast a first request through a
        // fresh agent on an emulated (QEMU TCG) kernel: 2 s once did not.
        stream.set_read_timeout(Some(Duration::from_secs(15))).ok();
        stream
            .write_all(payload)
            .map_err(|e| format!("send: {e}"))?;
        if kind == "tcp" {
            // Servers of lines answer at the end of the message.
            let _ = stream.shutdown(Shutdown::Write);
        }
        stream.read(&mut reply).unwrap_or(0)
    };
    let text = String::from_utf8_lossy(&reply[..got]);
    let first = text
        .lines()
        .next()
        .filter(|l| !l.is_empty())
        .unwrap_or("(none)");
    Ok(format!("{outcome} {first}\n"))
}

fn exit_with(result: Result<String, String>) {
    match result {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("sim-client: {e}");
            std::process::exit(1);
        }
    }
}

/// One HTTP/1.1 response with a content-length body: (status, body
/// trimmed, whether the server closes after it).
fn read_response(
    reader: &mut std::io::BufReader<TcpStream>,
) -> Result<(String, String, bool), String> {
    use std::io::BufRead;
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| format!("reading status: {e}"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("none")
        .to_owned();
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("reading headers: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading body: {e}"))?;
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    Ok((status, body, close))
}

/// A command's argument `value`, named `what` when it does not parse.
fn arg<T: std::str::FromStr>(what: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| format!("bad {what} {value}: {e}"))
}

/// A connection for several requests: its writing half and a buffered
/// reader of its responses.
fn connect_keepalive(
    addr: SocketAddr,
) -> std::io::Result<(TcpStream, std::io::BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    // Longer than the slowest answer a test asks for (`/delay/MS`, up to
    // 20 s in the hand-over test on a slow machine).
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let reader = std::io::BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Connections held open, the way a pod hoarding the proxy's descriptors would.
fn hold(addr: &str, host: &str, count: &str) -> Result<String, String> {
    use std::io::Write as _;
    let addr: SocketAddr = arg("address", addr)?;
    let count: usize = arg("count", count)?;
    let mut held = Vec::with_capacity(count);
    let mut stdout = std::io::stdout();
    for n in 0..count {
        let opened = connect_keepalive(addr)
            .map_err(|e| format!("connecting: {e}"))
            .and_then(|mut conn| {
                conn.0
                    .write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
                    .map_err(|e| format!("sending: {e}"))?;
                let (status, body, _) = read_response(&mut conn.1)?;
                if status == "none" {
                    return Err("closed without an answer".to_owned());
                }
                Ok((conn, format!("{status} {body}")))
            });
        let line = match opened {
            Ok((conn, answer)) => {
                held.push(conn);
                format!("ok {n} {answer}")
            }
            Err(e) => format!("err {n} {e}"),
        };
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stop_requested() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(String::new())
}

/// Threads that open `idle`'s connections.
const IDLE_OPENERS: usize = 16;

/// Connections that send no request, the way a pod could hoard the proxy's
/// descriptors without ever asking for anything; a few send opaque bytes.
fn idle(addr: &str, count: &str, every: &str) -> Result<String, String> {
    let addr: SocketAddr = arg("address", addr)?;
    let count: usize = arg("count", count)?;
    let every: usize = arg("every", every)?;
    let talks = move |n: usize| every > 0 && n.is_multiple_of(every);
    let line = b"opaque bytes, not a request\n";
    let opening = std::time::Instant::now();
    // Opened from several threads, as a client with a pool would: a connect
    // whose SYN a full accept queue dropped waits a second for its retry,
    // and should not hold up all the others.
    let openers: Vec<_> = (0..IDLE_OPENERS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let (mut failed, mut first_error) = (0usize, None);
                for n in (t..count).step_by(IDLE_OPENERS) {
                    if stop_requested() {
                        break;
                    }
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                        Ok(mut stream) => {
                            if talks(n) {
                                let _ = stream.write_all(line);
                            }
                            held.push((stream, talks(n)));
                        }
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (held, failed, first_error)
            })
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    let (mut failed, mut first_error) = (0usize, None);
    for opener in openers {
        let (h, f, e) = opener
            .join()
            .map_err(|_| "an opening thread panicked".to_owned())?;
        held.extend(h);
        failed += f;
        first_error = first_error.or(e);
    }
    let first = first_error
        .map(|e| format!(" (first: {e})"))
        .unwrap_or_default();
    println!(
        "opened {} of {count} in {} ms, {failed} failed{first}",
        held.len(),
        opening.elapsed().as_millis()
    );
    let _ = std::io::stdout().flush();
    let start = std::time::Instant::now();
    let mut said = start;
    while !stop_requested() && start.elapsed() < Duration::from_secs(60) {
        if said.elapsed() >= Duration::from_secs(1) {
            for (stream, _) in held.iter_mut().filter(|(_, talks)| *talks) {
                let _ = stream.write_all(line);
            }
            said = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Open: nothing to read yet, or the sink's echo waiting.
    let open = held
        .iter()
        .filter(|(stream, _)| {
            stream.set_nonblocking(true).is_ok()
                && match stream.peek(&mut [0u8; 1]) {
                    Ok(n) => n > 0,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
        })
        .count();
    Ok(format!(
        "held {open} open to the end, {} closed or reset by the peer\n",
        held.len() - open
    ))
}

/// A download read at `rate` bytes a second at most.
fn slow_read(addr: &str, host: &str, path: &str, rate: &str) -> Result<String, String> {
    let addr: SocketAddr = arg("address", addr)?;
    let rate: u64 = arg("rate", rate)?;
    if rate == 0 {
        return Err("the rate must be above 0".to_owned());
    }
    let (mut stream, _) = connect_keepalive(addr).map_err(|e| format!("{addr}: {e}"))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("sending: {e}"))?;
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let (mut read, mut complete) = (0u64, false);
    while !stop_requested() && start.elapsed() < Duration::from_secs(60) {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("reading after {read} bytes: {e}"))?;
        if n == 0 {
            complete = true;
            break;
        }
        if read == 0 {
            println!("reading");
            let _ = std::io::stdout().flush();
        }
        read += n as u64;
        // Ahead of the rate: wait until it catches up.
        let due = Duration::from_secs_f64(read as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(format!(
        "read {read} bytes in {} ms{}\n",
        start.elapsed().as_millis(),
        if complete { ", complete" } else { "" }
    ))
}

fn http_loop(addr: &str, host: &str, path: &str, count: &str) -> Result<String, String> {
    use std::collections::BTreeMap;
    let addr: SocketAddr = arg("address", addr)?;
    let count: usize = arg("count", count)?;
    let (mut stream, mut reader) = connect_keepalive(addr).map_err(|e| format!("{addr}: {e}"))?;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..count {
        let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            // The proxy may close a keep-alive connection between requests.
            (stream, reader) = connect_keepalive(addr).map_err(|e| format!("{addr}: {e}"))?;
            stream
                .write_all(request.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let (status, body, close) = read_response(&mut reader)?;
        *tally.entry(format!("{status} {body}")).or_default() += 1;
        if close {
            (stream, reader) = connect_keepalive(addr).map_err(|e| format!("{addr}: {e}"))?;
        }
    }
    Ok(tally.iter().map(|(k, n)| format!("{n} {k}\n")).collect())
}

fn echo_check(addr: &str, bytes: &str) -> Result<String, String> {
    let addr: SocketAddr = arg("address", addr)?;
    let size: usize = arg("size", bytes)?;
    // xorshift: reproducible bytes without a dependency.
    let data = pseudo_random(size);
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)?;
        Ok(())
    });
    let mut back = Vec::with_capacity(size);
    stream
        .read_to_end(&mut back)
        .map_err(|e| format!("reading the echo: {e}"))?;
    sender
        .join()
        .map_err(|_| "sender panicked".to_owned())?
        .map_err(|e| format!("sending: {e}"))?;
    let expected = pseudo_random(size);
    if back == expected {
        Ok("identical\n".to_owned())
    } else {
        let first = back.iter().zip(&expected).position(|(a, b)| a != b);
        Ok(format!(
            "differ: got {} bytes of {size}, first difference at {first:?}\n",
            back.len()
        ))
    }
}

fn request_loop(
    addr: &str,
    host: &str,
    path: &str,
    gap: &str,
    duration: &str,
) -> Result<String, String> {
    use std::io::Write as _;
    let gap = Duration::from_millis(arg("gap", gap)?);
    let duration = Duration::from_millis(arg("duration", duration)?);
    let start = std::time::Instant::now();
    let mut stdout = std::io::stdout();
    // Bounded by time and, through the gap, by count.
    while start.elapsed() < duration && !stop_requested() {
        let at = start.elapsed().as_millis();
        let line = match http_loop(addr, host, path, "1") {
            Ok(tally) => format!("ok {at} {}", tally.trim().trim_start_matches("1 200 ")),
            Err(e) => format!("err {at} {e}"),
        };
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        std::thread::sleep(gap);
    }
    Ok(String::new())
}

/// The test asked the loop to end (the file SIM_CLIENT_STOP_FILE names exists).
fn stop_requested() -> bool {
    std::env::var_os("SIM_CLIENT_STOP_FILE").is_some_and(|f| std::path::Path::new(&f).exists())
}

/// One connection's GETs, `connection: close` honoured.
fn keepalive_loop(
    addr: &str,
    host: &str,
    path: &str,
    gap: &str,
    duration: &str,
) -> Result<String, String> {
    use std::io::{BufReader, Write as _};
    let addr: SocketAddr = arg("address", addr)?;
    let gap = Duration::from_millis(arg("gap", gap)?);
    let duration = Duration::from_millis(arg("duration", duration)?);
    // One exchange on `conn`: (body, whether the server closes after it).
    let exchange =
        |conn: &mut (TcpStream, BufReader<TcpStream>)| -> Result<(String, bool), String> {
            // One write: several small ones would wait on Nagle and the
            // peer's delayed ACK (40 ms a request).
            let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n");
            conn.0
                .write_all(request.as_bytes())
                .map_err(|e| format!("sending: {e}"))?;
            let (status, body, close) = read_response(&mut conn.1)?;
            if status != "200" {
                return Err(format!("status {status}"));
            }
            Ok((body, close))
        };
    let start = std::time::Instant::now();
    let mut stdout = std::io::stdout();
    let mut conn = None;
    // Bounded by time and, through the gap, by count.
    while start.elapsed() < duration && !stop_requested() {
        let at = start.elapsed().as_millis();
        let result = match conn.as_mut() {
            Some(c) => Ok(c),
            None => connect_keepalive(addr)
                .map(|c| conn.insert(c))
                .map_err(|e| format!("connecting: {e}")),
        }
        .and_then(&exchange);
        let line = match result {
            Ok((body, close)) => {
                if close {
                    conn = None;
                }
                format!("ok {at} {body}")
            }
            Err(e) => {
                conn = None;
                format!("err {at} {e}")
            }
        };
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        std::thread::sleep(gap);
    }
    Ok(String::new())
}

/// What [`until`] waits for.
enum Until<'a> {
    /// A `200` to `GET path` with `host`.
    Ok { host: &'a str, path: &'a str },
    /// A refused connection.
    Refused,
}

/// Tries on a new connection every `gap` until `what` happens or `timeout`
/// passes; the wall-clock time (epoch µs) when it happened lets a caller in
/// another process compare it with its own events.
fn until(addr: &str, gap: &str, timeout: &str, what: Until<'_>) -> Result<String, String> {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let addr: SocketAddr = arg("address", addr)?;
    let gap = Duration::from_millis(arg("gap", gap)?);
    let timeout = Duration::from_millis(arg("timeout", timeout)?);
    let start = Instant::now();
    let mut last = String::from("no attempt");
    let mut attempt = 0u64;
    // Bounded by time and, through the gap, by count.
    loop {
        attempt += 1;
        let done = match &what {
            Until::Ok { host, path } => match get_status(addr, host, path) {
                Ok(200) => true,
                Ok(status) => {
                    last = format!("status {status}");
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            },
            Until::Refused => match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => true,
                Err(e) => {
                    last = e.to_string();
                    false
                }
                Ok(_) => {
                    last = "connected".to_owned();
                    false
                }
            },
        };
        if done {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?;
            let word = match what {
                Until::Ok { .. } => "ok",
                Until::Refused => "refused",
            };
            return Ok(format!("{word} {} {attempt}\n", at.as_micros()));
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "{addr}: not done within {timeout:?} ({attempt} attempts; last: {last})"
            ));
        }
        std::thread::sleep(gap);
    }
}

/// How long one attempt of [`until`] waits for a connection: on a node a
/// refused or redirected connect completes at once, so this only bounds a lost SYN.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// One `GET` on a new connection (`connection: close`); the response's status.
fn get_status(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {} bytes", response.len())))
}

/// The same `size` pseudo-random bytes every time (xorshift), without a dependency.
fn pseudo_random(size: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
