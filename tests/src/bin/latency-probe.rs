//! Fixed-rate HTTP/1.1 latency probe for `cargo xtask bench intercept`.
//!
//! wrk is a closed loop: at saturation its latency is mostly queueing
//! (connections / rate) and, with `Connection: close`, it leaves out the
//! connect, where interception acts. This probe is an open loop at a set
//! rate spread over a set number of connections, as Istio's latency
//! benchmarks are (fortio, 1000 requests/s over 16 connections), and with
//! `--new-connection` it times every request from `connect()` to the last
//! byte of the response. It prints its report in the part of wrk's
//! `--latency` format that `benchkit::load::parse_wrk` reads.
//!
//! usage: latency-probe URL --rate R --connections C --duration-ms D [--new-connection] [--slowest N]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
struct Args {
    /// `http://IP:PORT/PATH` (the port defaults to 80).
    url: String,
    /// Requests per second, all connections together.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Concurrent connections (one thread each); each sends rate/connections a second.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// How long to send, in milliseconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    duration_ms: u64,
    /// A new TCP connection for every request (`Connection: close`), timed from `connect()`.
    #[arg(long)]
    new_connection: bool,
    /// Also print the N slowest requests, with when each began, to stderr:
    /// whether a tail is spread or bunched says what caused it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    slowest: u32,
}

/// One answered request.
#[derive(Clone, Copy)]
struct Sample {
    latency_us: f64,
    /// When it began, after the start.
    began_ms: f64,
}

#[derive(Default)]
struct Outcome {
    samples: Vec<Sample>,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    bad_status: u64,
}

enum Failure {
    Connect(std::io::Error),
    Write(std::io::Error),
    Read(std::io::Error),
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("latency-probe: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let (addr, host, path) = parse_url(&args.url)?;
    let connection = if args.new_connection {
        "connection: close\r\n"
    } else {
        ""
    };
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n{connection}\r\n");
    // Sleeps end on time: the default 50 µs timer slack would be a jitter
    // the size of what is measured.
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects this thread only;
    // threads spawned later inherit it.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64) };

    let period = Duration::from_secs_f64(f64::from(args.connections) / f64::from(args.rate));
    let offset = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = Instant::now() + Duration::from_millis(10);
    let end = start + Duration::from_millis(args.duration_ms);
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let request = request.clone();
            let first = start + offset * i;
            let new_connection = args.new_connection;
            std::thread::spawn(move || {
                connection_loop(addr, &request, start, first, period, end, new_connection)
            })
        })
        .collect();
    let mut all = Outcome::default();
    for w in workers {
        let o = w
            .join()
            .map_err(|_| anyhow::anyhow!("a connection thread panicked"))?;
        all.samples.extend(o.samples);
        all.connect_errors += o.connect_errors;
        all.read_errors += o.read_errors;
        all.write_errors += o.write_errors;
        all.timeouts += o.timeouts;
        all.bad_status += o.bad_status;
    }
    let seconds = end.duration_since(start).as_secs_f64();
    if args.slowest > 0 {
        eprintln!("{}", slowest(&all, args.slowest as usize));
    }
    print!("{}", report(&all, seconds));
    Ok(())
}

/// `n` slowest requests, slowest first: `slowest: 1.24 ms at +1093 ms, ...`.
fn slowest(all: &Outcome, n: usize) -> String {
    let mut order = all.samples.clone();
    order.sort_by(|a, b| b.latency_us.total_cmp(&a.latency_us));
    let listed: Vec<String> = order
        .iter()
        .take(n)
        .map(|s| format!("{:.2} ms at +{:.0} ms", s.latency_us / 1e3, s.began_ms))
        .collect();
    format!("slowest: {}", listed.join(", "))
}

fn parse_url(url: &str) -> Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse()
        .or_else(|_| format!("{authority}:80").parse())
        .with_context(|| format!("{url:?}: the host must be an IP address"))?;
    Ok((addr, authority.to_owned(), path.to_owned()))
}

fn connection_loop(
    addr: SocketAddr,
    request: &str,
    start: Instant,
    first: Instant,
    period: Duration,
    end: Instant,
    new_connection: bool,
) -> Outcome {
    let mut out = Outcome::default();
    let mut kept: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut due = first;
    while due < end {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let began = Instant::now();
        let result = exchange(addr, request, &mut kept, &mut buf);
        let took = began.elapsed();
        match result {
            Ok(status) => {
                out.samples.push(Sample {
                    latency_us: took.as_secs_f64() * 1e6,
                    began_ms: began.saturating_duration_since(start).as_secs_f64() * 1e3,
                });
                if !(200..400).contains(&status) {
                    out.bad_status += 1;
                }
            }
            Err(failure) => {
                kept = None;
                let (e, count) = match failure {
                    Failure::Connect(e) => (e, &mut out.connect_errors),
                    Failure::Write(e) => (e, &mut out.write_errors),
                    Failure::Read(e) => (e, &mut out.read_errors),
                };
                // wrk's way: a timeout is counted as that, not also as a read error.
                let timed_out = matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
                *(if timed_out { &mut out.timeouts } else { count }) += 1;
            }
        }
        if new_connection {
            kept = None;
        }
        due += period;
    }
    out
}

/// One request and its whole response; returns the status.
fn exchange(
    addr: SocketAddr,
    request: &str,
    kept: &mut Option<TcpStream>,
    buf: &mut [u8],
) -> Result<u16, Failure> {
    let stream = match kept {
        Some(s) => s,
        None => {
            let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(Failure::Connect)?;
            s.set_nodelay(true).map_err(Failure::Connect)?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(Failure::Connect)?;
            kept.insert(s)
        }
    };
    stream
        .write_all(request.as_bytes())
        .map_err(Failure::Write)?;
    read_response(stream, buf).map_err(Failure::Read)
}

/// Reads one response with a `content-length` body (what the benchmark's
/// backend and weir send).
fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<u16> {
    let mut have = 0;
    loop {
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        if let Some(head_end) = find(&buf[..have], b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..head_end]).map_err(std::io::Error::other)?;
            let (status, length) = parse_head(head).map_err(std::io::Error::other)?;
            let mut body_seen = have - (head_end + 4);
            while body_seen < length {
                let n = stream.read(buf)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                body_seen += n;
            }
            return Ok(status);
        }
        if have == buf.len() {
            return Err(std::io::Error::other("response head over 16 KiB"));
        }
    }
}

fn parse_head(head: &str) -> Result<(u16, usize)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(v.trim().parse().context("content-length")?);
        }
    }
    match length {
        Some(l) => Ok((status, l)),
        None => bail!("response without content-length"),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// wrk's `--latency` report, as much of it as benchkit reads.
fn report(o: &Outcome, seconds: f64) -> String {
    let mut latencies: Vec<f64> = o.samples.iter().map(|s| s.latency_us).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[i.clamp(1, latencies.len()) - 1]
    };
    let n = latencies.len();
    let mut t = String::from("  Latency Distribution\n");
    for p in [50.0, 75.0, 90.0, 99.0] {
        t.push_str(&format!("     {p:.0}%  {:.2}us\n", pct(p)));
    }
    t.push_str(&format!("  {n} requests in {seconds:.2}s, 0.00MB read\n"));
    t.push_str(&format!(
        "  Socket errors: connect {}, read {}, write {}, timeout {}\n",
        o.connect_errors, o.read_errors, o.write_errors, o.timeouts
    ));
    if o.bad_status > 0 {
        t.push_str(&format!("  Non-2xx or 3xx responses: {}\n", o.bad_status));
    }
    t.push_str(&format!("Requests/sec: {:.2}\n", n as f64 / seconds));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("http://198.51.100.20/").unwrap();
        assert_eq!(addr, "198.51.100.20:80".parse().unwrap());
        assert_eq!((host.as_str(), path.as_str()), ("198.51.100.20", "/"));
        let (addr, _, path) = parse_url("http://10.0.0.1:8080").unwrap();
        assert_eq!((addr.port(), path.as_str()), (8080, "/"));
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://name.example/").is_err());
    }

    #[test]
    fn heads() {
        assert_eq!(
            parse_head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nx: y").unwrap(),
            (200, 12)
        );
        assert!(parse_head("HTTP/1.1 200 OK\r\nx: y").is_err());
    }

    #[test]
    fn report_reads_as_wrk() {
        let o = Outcome {
            samples: (1..=100)
                .rev()
                .map(|i| Sample {
                    latency_us: f64::from(i),
                    began_ms: f64::from(100 - i),
                })
                .collect(),
            timeouts: 1,
            read_errors: 1,
            ..Outcome::default()
        };
        let r = benchkit::load::parse_wrk(&report(&o, 2.0)).unwrap();
        assert_eq!((r.requests, r.p50_us, r.p99_us), (100, 50.0, 99.0));
        assert_eq!(r.socket_errors, 2);
        assert!((r.requests_per_sec - 50.0).abs() < 1e-9);
        // Each latency keeps its own start, whichever runs first.
        assert_eq!(
            slowest(&o, 2),
            "slowest: 0.10 ms at +0 ms, 0.10 ms at +1 ms"
        );
    }
}
