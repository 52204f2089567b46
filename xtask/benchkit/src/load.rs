//! The load: wrk runs (one thread, closed loop) and the parsing of wrk's report.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every connection carries many requests.
    KeepAlive,
    /// `Connection: close` on every request: one TCP connection per request.
    ConnectionPerRequest,
    /// HTTP/1.1 keep-alive over TLS (wrk to `https://`).
    TlsKeepAlive,
    /// HTTP/2 over TLS, ALPN h2 (h2load to `https://`).
    H2,
    /// HTTP/2 over cleartext with prior knowledge (h2load to `http://`).
    H2c,
    /// A set request rate over keep-alive connections (open loop, well
    /// below saturation: the latency is the path's, not queueing).
    RateKeepAlive,
    /// A set rate of requests, each on a new connection, timed from `connect()`.
    RateConnectionPerRequest,
}

impl Mode {
    /// The plaintext HTTP/1.1 loads (wrk).
    pub const ALL: [Mode; 2] = [Mode::KeepAlive, Mode::ConnectionPerRequest];
    /// The loads of `bench intercept`: saturation (wrk) and a set rate (latency).
    pub const INTERCEPT: [Mode; 4] = [
        Mode::KeepAlive,
        Mode::ConnectionPerRequest,
        Mode::RateKeepAlive,
        Mode::RateConnectionPerRequest,
    ];
    /// Every load there is, in the order reports list them.
    pub const VARIANTS: [Mode; 7] = [
        Mode::KeepAlive,
        Mode::ConnectionPerRequest,
        Mode::TlsKeepAlive,
        Mode::H2,
        Mode::H2c,
        Mode::RateKeepAlive,
        Mode::RateConnectionPerRequest,
    ];
    /// Every load `bench proxy` knows, in the order it runs and reports them.
    pub const EVERY: [Mode; 5] = [
        Mode::KeepAlive,
        Mode::ConnectionPerRequest,
        Mode::TlsKeepAlive,
        Mode::H2,
        Mode::H2c,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::ConnectionPerRequest => "conn-per-request",
            Mode::TlsKeepAlive => "tls",
            Mode::H2 => "h2",
            Mode::H2c => "h2c",
            Mode::RateKeepAlive => "rate-keep-alive",
            Mode::RateConnectionPerRequest => "rate-conn-per-request",
        }
    }

    /// The mode whose [`Mode::label`] is `label`.
    pub fn from_label(label: &str) -> Option<Mode> {
        Mode::VARIANTS.into_iter().find(|m| m.label() == label)
    }

    /// Parses a load flag value, accepting only the loads in `allowed`.
    pub fn parse_among(text: &str, allowed: &[Mode]) -> Result<Mode, String> {
        allowed
            .iter()
            .copied()
            .find(|m| m.label() == text.trim())
            .ok_or_else(|| {
                let known: Vec<&str> = allowed.iter().map(|m| m.label()).collect();
                format!("unknown load {text:?}: expected {}", known.join(", "))
            })
    }

    /// Whether h2load drives this load (wrk drives the others).
    pub fn is_h2(self) -> bool {
        matches!(self, Mode::H2 | Mode::H2c)
    }

    /// Whether this load runs at a set rate (the latency probe drives it).
    pub fn is_fixed_rate(self) -> bool {
        matches!(self, Mode::RateKeepAlive | Mode::RateConnectionPerRequest)
    }
}

/// One wrk run.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    pub wrk: &'a Path,
    pub url: &'a str,
    pub connections: u32,
    pub duration: Duration,
    pub mode: Mode,
}

impl Load<'_> {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.wrk);
        cmd.args(["-t1", "--latency", "--timeout", "2s"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)));
        if self.mode == Mode::ConnectionPerRequest {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(self.url);
        cmd
    }

    /// Runs wrk to the end and parses its report.
    pub fn run(&self) -> Result<WrkReport> {
        let out = self
            .command()
            .output()
            .with_context(|| format!("could not start {}", self.wrk.display()))?;
        report_from_output(&out)
    }
}

/// One load of a benchmark on a simulated node: wrk for the saturating
/// loads, `latency-probe` (`probe`) at `rate` for the set-rate ones.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub load: Load<'a>,
    pub probe: &'a Path,
    pub rate: u32,
}

impl Run<'_> {
    /// The command to run, wherever it runs (a pod's namespace).
    pub fn command(&self) -> Command {
        let load = &self.load;
        if !load.mode.is_fixed_rate() {
            return load.command();
        }
        let mut cmd = Command::new(self.probe);
        cmd.arg(load.url)
            .arg(format!("--rate={}", self.rate))
            .arg(format!("--connections={}", load.connections))
            .arg(format!("--duration-ms={}", load.duration.as_millis()));
        if load.mode == Mode::RateConnectionPerRequest {
            cmd.arg("--new-connection");
        }
        cmd
    }
}

/// wrk's report from a finished wrk process (started by [`Load::command`],
/// wherever it ran), or why there is none.
pub fn report_from_output(out: &Output) -> Result<WrkReport> {
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            text.trim()
        );
    }
    parse_wrk(&text).with_context(|| format!("parsing wrk's report:\n{text}"))
}

/// What the benchmark takes from wrk's report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// connect + read + write + timeout errors.
    pub socket_errors: u64,
    pub non_2xx_3xx: u64,
}

impl WrkReport {
    /// A run with any error is flagged in the report, not silently averaged.
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx_3xx
    }
}

/// Parses the text wrk prints with `--latency`.
pub fn parse_wrk(text: &str) -> Result<WrkReport> {
    let mut report = WrkReport::default();
    let (mut p50, mut p99, mut total, mut rps) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => p50 = Some(parse_latency_us(value)?),
            ["99%", value] => p99 = Some(parse_latency_us(value)?),
            [n, "requests", "in", secs, ..] => {
                let n = n
                    .parse()
                    .with_context(|| format!("request count in {line:?}"))?;
                let secs = parse_latency_us(secs.trim_end_matches(','))? / 1e6;
                total = Some((n, secs));
            }
            ["Requests/sec:", value] => {
                rps = Some(value.parse().with_context(|| format!("in {line:?}"))?);
            }
            ["Socket", "errors:", counts @ ..] => {
                // "connect 0, read 0, write 0, timeout 0"
                for pair in counts.chunks(2) {
                    if let [_, n] = pair {
                        report.socket_errors += n
                            .trim_end_matches(',')
                            .parse::<u64>()
                            .with_context(|| format!("in {line:?}"))?;
                    }
                }
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                report.non_2xx_3xx = n.parse().with_context(|| format!("in {line:?}"))?;
            }
            _ => {}
        }
    }
    let Some((requests, seconds)) = total else {
        bail!("no `N requests in T` line");
    };
    report.requests = requests;
    report.seconds = seconds;
    report.requests_per_sec = rps.context("no Requests/sec line")?;
    report.p50_us = p50.context("no 50% latency line (was --latency given?)")?;
    report.p99_us = p99.context("no 99% latency line (was --latency given?)")?;
    Ok(report)
}

/// wrk's durations: `412.00us`, `1.23ms`, `2.00s`, `1.00m`; returns microseconds.
pub fn parse_latency_us(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("duration without a unit: {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("duration {text:?}"))?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => bail!("unknown duration unit in {text:?}"),
    };
    Ok(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
Running 5s test @ http://127.0.0.1:40123/films/42
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.31us  120.02us   7.85ms   91.20%
    Req/Sec    38.71k     1.02k   40.12k    78.00%
  Latency Distribution
     50%  398.00us
     75%  441.00us
     90%  502.00us
     99%    1.21ms
  192612 requests in 5.00s, 33.43MB read
Requests/sec:  38521.44
Transfer/sec:      6.68MB
";

    #[test]
    fn parses_a_clean_run() {
        let r = parse_wrk(CLEAN).unwrap();
        assert_eq!(r.requests, 192_612);
        assert!((r.seconds - 5.0).abs() < 1e-9);
        assert!((r.requests_per_sec - 38_521.44).abs() < 1e-6);
        assert!((r.p50_us - 398.0).abs() < 1e-9);
        assert!((r.p99_us - 1210.0).abs() < 1e-9);
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn counts_socket_errors_and_bad_statuses() {
        let text = CLEAN.replace(
            "Requests/sec:",
            "  Socket errors: connect 3, read 2, write 0, timeout 7\n  \
             Non-2xx or 3xx responses: 11\nRequests/sec:",
        );
        let r = parse_wrk(&text).unwrap();
        assert_eq!(r.socket_errors, 12);
        assert_eq!(r.non_2xx_3xx, 11);
        assert_eq!(r.errors(), 23);
    }

    #[test]
    fn report_without_latency_distribution_is_an_error() {
        let text: String = CLEAN
            .lines()
            .filter(|l| !l.contains('%') || l.contains("Stdev"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_wrk(&text).is_err());
        assert!(parse_wrk("").is_err());
    }

    #[test]
    fn latency_units() {
        assert_eq!(parse_latency_us("250.00us").unwrap(), 250.0);
        assert_eq!(parse_latency_us("1.50ms").unwrap(), 1500.0);
        assert_eq!(parse_latency_us("2.00s").unwrap(), 2e6);
        assert!(parse_latency_us("12").is_err());
        assert!(parse_latency_us("3.0xs").is_err());
    }
}
