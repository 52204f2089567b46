//! The HTTP/2 load: h2load runs (one thread, `-c` connections with `-m`
//! concurrent streams each, for a fixed duration) and the parsing of its
//! report. h2load prints no percentiles, so p50 and p99 come from its
//! per-request log (`--log-file`: start time, status, µs to the end of the
//! response, one line per completed request).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::run::command_output;
use benchkit::load::WrkReport;

/// Concurrent streams per connection (`h2load -m`).
pub const STREAMS: u32 = 8;

/// One h2load run.
#[derive(Debug, Clone)]
pub struct H2Load<'a> {
    pub h2load: &'a Path,
    pub url: &'a str,
    pub connections: u32,
    pub duration: Duration,
    /// Where h2load writes its per-request log (removed after parsing).
    pub log: PathBuf,
}

/// What the connection negotiated, as h2load reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Negotiated {
    /// `h2` (TLS, by ALPN) or `h2c` (cleartext).
    pub protocol: String,
    /// e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`; empty for cleartext.
    pub tls: String,
}

impl H2Load<'_> {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.h2load);
        cmd.args(["-t", "1"])
            .arg(format!("-c{}", self.connections))
            .arg(format!("-m{STREAMS}"))
            .arg(format!("-D{}", self.duration.as_secs().max(1)))
            .arg("--log-file")
            .arg(&self.log)
            .arg(self.url);
        cmd
    }

    /// Runs h2load to the end; the report in wrk's terms (failed requests
    /// count as socket errors, 4xx and 5xx as bad statuses), and what the
    /// connections negotiated.
    pub fn run(&self) -> Result<(WrkReport, Negotiated)> {
        let out = command_output(&mut self.command())?;
        let report =
            parse_h2load(&out).with_context(|| format!("parsing h2load's report:\n{out}"))?;
        let log = std::fs::read_to_string(&self.log)
            .with_context(|| format!("reading h2load's log {}", self.log.display()))?;
        let _ = std::fs::remove_file(&self.log);
        let mut latencies = parse_log(&log)?;
        if report.negotiated.protocol != "h2" && report.negotiated.protocol != "h2c" {
            bail!(
                "h2load spoke {:?} to {}, not HTTP/2",
                report.negotiated.protocol,
                self.url
            );
        }
        Ok((
            WrkReport {
                requests: report.succeeded,
                seconds: report.seconds,
                requests_per_sec: report.requests_per_sec,
                p50_us: percentile(&mut latencies, 0.50),
                p99_us: percentile(&mut latencies, 0.99),
                socket_errors: report.failed,
                non_2xx_3xx: report.status_4xx + report.status_5xx,
            },
            report.negotiated,
        ))
    }
}

/// The lines of h2load's report the benchmark uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2Report {
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub succeeded: u64,
    /// Requests that did not complete with a response (includes errored
    /// and timed out).
    pub failed: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub negotiated: Negotiated,
}

/// Parses the text h2load prints.
pub fn parse_h2load(text: &str) -> Result<H2Report> {
    let mut r = H2Report::default();
    let (mut finished, mut requests, mut statuses) = (false, false, false);
    let (mut tls_protocol, mut cipher) = (String::new(), String::new());
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 2.02s, 8000.00 req/s, 539.58KB/s"
            let mut parts = rest.split(", ");
            let secs = parts.next().unwrap_or_default();
            r.seconds = secs
                .strip_suffix('s')
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("duration in {line:?}"))?;
            r.requests_per_sec = parts
                .next()
                .and_then(|s| s.strip_suffix(" req/s"))
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("req/s in {line:?}"))?;
            finished = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // "16051 total, 16112 started, 16051 done, 16000 succeeded, 51 failed, ..."
            r.succeeded = count_of(rest, "succeeded").with_context(|| format!("in {line:?}"))?;
            r.failed = count_of(rest, "failed").with_context(|| format!("in {line:?}"))?;
            requests = true;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // "16000 2xx, 0 3xx, 0 4xx, 0 5xx"
            r.status_4xx = count_of(rest, "4xx").with_context(|| format!("in {line:?}"))?;
            r.status_5xx = count_of(rest, "5xx").with_context(|| format!("in {line:?}"))?;
            statuses = true;
        } else if let Some(p) = line.strip_prefix("Application protocol: ") {
            p.trim().clone_into(&mut r.negotiated.protocol);
        } else if let Some(p) = line.strip_prefix("TLS Protocol: ") {
            p.trim().clone_into(&mut tls_protocol);
        } else if let Some(c) = line.strip_prefix("Cipher: ") {
            c.trim().clone_into(&mut cipher);
        }
    }
    if !finished {
        bail!("no `finished in` line");
    }
    if !requests {
        bail!("no `requests:` line");
    }
    if !statuses {
        bail!("no `status codes:` line");
    }
    r.negotiated.tls = format!("{tls_protocol} {cipher}").trim().to_owned();
    Ok(r)
}

/// `N word` in a comma-separated list such as `12 done, 10 succeeded`.
fn count_of(list: &str, word: &str) -> Result<u64> {
    list.split(',')
        .find_map(|item| {
            let (n, w) = item.trim().split_once(' ')?;
            (w == word).then_some(n)
        })
        .with_context(|| format!("no `N {word}`"))?
        .parse()
        .with_context(|| format!("count of {word}"))
}

/// The third column of h2load's `--log-file` (µs until the end of the
/// response), one value per completed request.
pub fn parse_log(text: &str) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let micros = line
            .split('\t')
            .nth(2)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| format!("h2load log line {line:?}"))?;
        out.push(micros as f64);
    }
    if out.is_empty() {
        bail!("h2load's log has no completed request");
    }
    Ok(out)
}

/// Nearest-rank percentile (`p` in 0..=1); NaN for no values.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = (p * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// h2load 1.52.0 (Debian nghttp2-client) against nginx 1.22 over TLS,
    /// `-c 16 -m 8 -t 1 -D 2`, progress lines shortened; nginx closed each
    /// connection after 1000 requests (its default), hence the failures.
    const TLS: &str = "\
starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
progress: 6% of clients started
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
TLS Protocol: TLSv1.2
Cipher: ECDHE-ECDSA-AES128-GCM-SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
Process Request Failure:2
Process Request Failure:10
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.02s, 8000.00 req/s, 539.58KB/s
requests: 16051 total, 16112 started, 16051 done, 16000 succeeded, 51 failed, 51 errored, 0 timeout
status codes: 16000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 1.05MB (1105056) total, 750.00KB (768000) headers (space savings 51.02%), 46.88KB (48000) data
                     min         max         mean         sd        +/- sd
time for request:       75us      5.78ms      1.49ms       694us    69.10%
time for connect:     1.84ms     15.74ms      9.04ms      4.31ms    62.50%
time to 1st byte:    16.36ms     18.63ms     18.10ms       530us    93.75%
req/s           :    3348.83     3814.47     3470.26      138.60    81.25%
";

    #[test]
    fn parses_a_tls_run() {
        let r = parse_h2load(TLS).unwrap();
        assert!((r.seconds - 2.02).abs() < 1e-9);
        assert!((r.requests_per_sec - 8000.0).abs() < 1e-9);
        assert_eq!((r.succeeded, r.failed), (16_000, 51));
        assert_eq!((r.status_4xx, r.status_5xx), (0, 0));
        assert_eq!(r.negotiated.protocol, "h2");
        assert_eq!(r.negotiated.tls, "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256");
    }

    #[test]
    fn parses_a_cleartext_run_with_bad_statuses() {
        let text = TLS
            .replace("TLS Protocol: TLSv1.2\n", "")
            .replace("Cipher: ECDHE-ECDSA-AES128-GCM-SHA256\n", "")
            .replace("Server Temp Key: X25519 253 bits\n", "")
            .replace("Application protocol: h2\n", "Application protocol: h2c\n")
            .replace(
                "16000 2xx, 0 3xx, 0 4xx, 0 5xx",
                "15990 2xx, 0 3xx, 4 4xx, 6 5xx",
            );
        let r = parse_h2load(&text).unwrap();
        assert_eq!(r.negotiated.protocol, "h2c");
        assert_eq!(r.negotiated.tls, "");
        assert_eq!((r.status_4xx, r.status_5xx), (4, 6));
    }

    #[test]
    fn a_report_cut_short_is_an_error() {
        let cut = &TLS[..TLS.find("requests:").unwrap()];
        assert!(parse_h2load(cut).is_err());
        assert!(parse_h2load("").is_err());
        assert!(parse_h2load(&TLS.replace("8000.00 req/s", "many req/s")).is_err());
    }

    #[test]
    fn latencies_from_the_log() {
        // Real lines of `--log-file`: start µs since the epoch, status, µs.
        let log = "1795446577965593\t200\t542\n1795446577965595\t200\t589\n\
                   1795446577965595\t200\t596\n1795446577965601\t200\t1210\n";
        let mut v = parse_log(log).unwrap();
        assert_eq!(v, vec![542.0, 589.0, 596.0, 1210.0]);
        assert_eq!(percentile(&mut v, 0.50), 589.0);
        assert_eq!(percentile(&mut v, 0.99), 1210.0);
        assert_eq!(percentile(&mut v, 0.0), 542.0);
        assert!(percentile(&mut [], 0.5).is_nan());
        assert!(parse_log("").is_err());
        assert!(parse_log("1\t200\n").is_err());
    }

    #[test]
    fn command_line() {
        let load = H2Load {
            h2load: Path::new("/usr/bin/h2load"),
            url: "https://127.0.0.1:1/films/42",
            connections: 16,
            duration: Duration::from_secs(3),
            log: "/t/h2.log".into(),
        };
        let cmd = load.command();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "-t",
                "1",
                "-c16",
                "-m8",
                "-D3",
                "--log-file",
                "/t/h2.log",
                "https://127.0.0.1:1/films/42"
            ]
        );
    }
}
