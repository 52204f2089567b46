//! One wrk run with the CPU the measured process spent during it, the medians
//! over interleaved rounds, and a one-line text form of a run, so that a
//! benchmark binary can measure and `cargo xtask` can report.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::load::{Mode, WrkReport};

/// What a benchmark compares (a proxy, an interception scenario), by name.
pub trait Subject: Copy + PartialEq {
    fn name(self) -> &'static str;
    /// The subject whose [`Subject::name`] is `name`.
    fn from_name(name: &str) -> Option<Self>;
}

/// One wrk run against one subject, with the CPU the measured process spent during it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<K> {
    pub kind: K,
    pub mode: Mode,
    pub round: u32,
    pub wrk: WrkReport,
    pub cpu: Duration,
    /// CPU the rest of the machine used during the run, in cores.
    pub other_cores: f64,
}

impl<K> Sample<K> {
    pub fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.wrk.requests.max(1) as f64
    }
}

impl<K: Subject> Sample<K> {
    /// The start of a run's progress line: round, load, subject, rate and
    /// latency (a benchmark appends what else it measured).
    pub fn progress_line(&self, rounds: u32) -> String {
        format!(
            "round {}/{rounds} {:<22} {:<16} {:>8.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            self.round + 1,
            self.mode.label(),
            self.kind.name(),
            self.wrk.requests_per_sec,
            self.wrk.p50_us / 1e3,
            self.wrk.p99_us / 1e3,
        )
    }
}

/// Medians of one subject under one load.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<K> {
    pub kind: K,
    pub mode: Mode,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_request: f64,
    pub other_cores: f64,
    pub runs: usize,
    /// Runs with socket errors or non-2xx/3xx responses.
    pub flagged_runs: usize,
    pub errors: u64,
}

impl<K> Summary<K> {
    /// The "runs with errors" table cell: `0/N`, or the flagged runs in bold.
    pub fn errors_cell(&self) -> String {
        if self.flagged_runs == 0 {
            format!("0/{}", self.runs)
        } else {
            format!(
                "**{}/{} ({} errors)**",
                self.flagged_runs, self.runs, self.errors
            )
        }
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians per load and subject, in the order of [`Mode::VARIANTS`] and `kinds`.
pub fn summarize<K: Copy + PartialEq>(samples: &[Sample<K>], kinds: &[K]) -> Vec<Summary<K>> {
    let mut out = Vec::new();
    for mode in Mode::VARIANTS {
        for &kind in kinds {
            let runs: Vec<&Sample<K>> = samples
                .iter()
                .filter(|s| s.kind == kind && s.mode == mode)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let med = |f: fn(&Sample<K>) -> f64| {
                median(&mut runs.iter().map(|s| f(s)).collect::<Vec<_>>())
            };
            out.push(Summary {
                kind,
                mode,
                requests_per_sec: med(|s| s.wrk.requests_per_sec),
                p50_us: med(|s| s.wrk.p50_us),
                p99_us: med(|s| s.wrk.p99_us),
                cpu_us_per_request: med(Sample::cpu_us_per_request),
                other_cores: med(|s| s.other_cores),
                runs: runs.len(),
                flagged_runs: runs.iter().filter(|s| s.wrk.errors() > 0).count(),
                errors: runs.iter().map(|s| s.wrk.errors()).sum(),
            });
        }
    }
    out
}

/// The row of `kind` under `mode`, if it ran.
pub fn find<K: PartialEq>(rows: &[Summary<K>], kind: K, mode: Mode) -> Option<&Summary<K>> {
    rows.iter().find(|r| r.kind == kind && r.mode == mode)
}

/// Every record line starts with this word; other output is ignored.
pub const RECORD_TAG: &str = "sample";

impl<K: Subject> Sample<K> {
    /// The run as one line of `key=value` words after [`RECORD_TAG`].
    /// Durations in nanoseconds and latencies in µs keep the parsed precision.
    pub fn to_record(&self) -> String {
        let mut line = String::from(RECORD_TAG);
        let w = &self.wrk;
        let _ = write!(
            line,
            " kind={} mode={} round={} requests={} seconds={} rps={} p50_us={} p99_us={} \
             socket_errors={} non_2xx_3xx={} cpu_ns={} other_cores={}",
            self.kind.name(),
            self.mode.label(),
            self.round,
            w.requests,
            w.seconds,
            w.requests_per_sec,
            w.p50_us,
            w.p99_us,
            w.socket_errors,
            w.non_2xx_3xx,
            self.cpu.as_nanos(),
            self.other_cores,
        );
        line
    }

    /// Parses a line written by [`Sample::to_record`]; `None` for any other line.
    pub fn from_record(line: &str) -> Option<Result<Self>> {
        let rest = line.trim().strip_prefix(RECORD_TAG)?.strip_prefix(' ')?;
        Some(Self::parse_fields(rest).with_context(|| format!("bad record {line:?}")))
    }

    fn parse_fields(fields: &str) -> Result<Self> {
        let pairs: Vec<(&str, &str)> = fields
            .split_whitespace()
            .map(|word| {
                word.split_once('=')
                    .with_context(|| format!("{word:?}: no `=`"))
            })
            .collect::<Result<_>>()?;
        let get = |key: &str| -> Result<&str> {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .with_context(|| format!("no {key}"))
        };
        fn num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("{key}={value:?} is not a number"))
        }
        let kind = get("kind")?;
        let Some(kind) = K::from_name(kind) else {
            bail!("unknown kind {kind:?}");
        };
        let mode = get("mode")?;
        let mode = Mode::from_label(mode).with_context(|| format!("unknown mode {mode:?}"))?;
        Ok(Sample {
            kind,
            mode,
            round: num("round", get("round")?)?,
            wrk: WrkReport {
                requests: num("requests", get("requests")?)?,
                seconds: num("seconds", get("seconds")?)?,
                requests_per_sec: num("rps", get("rps")?)?,
                p50_us: num("p50_us", get("p50_us")?)?,
                p99_us: num("p99_us", get("p99_us")?)?,
                socket_errors: num("socket_errors", get("socket_errors")?)?,
                non_2xx_3xx: num("non_2xx_3xx", get("non_2xx_3xx")?)?,
            },
            cpu: Duration::from_nanos(num("cpu_ns", get("cpu_ns")?)?),
            other_cores: num("other_cores", get("other_cores")?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        A,
        B,
    }

    impl Subject for Who {
        fn name(self) -> &'static str {
            match self {
                Who::A => "a",
                Who::B => "b-2",
            }
        }
        fn from_name(name: &str) -> Option<Self> {
            [Who::A, Who::B].into_iter().find(|w| w.name() == name)
        }
    }

    fn sample(kind: Who, round: u32, rps: f64, cpu_ms: u64, errors: u64) -> Sample<Who> {
        Sample {
            kind,
            mode: Mode::KeepAlive,
            round,
            wrk: WrkReport {
                requests: (rps * 5.0) as u64,
                seconds: 5.0,
                requests_per_sec: rps,
                p50_us: 100.0,
                p99_us: 300.0 + f64::from(round),
                socket_errors: errors,
                non_2xx_3xx: 0,
            },
            cpu: Duration::from_millis(cpu_ms),
            other_cores: 0.1,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn summary_takes_medians_and_counts_flagged_runs() {
        let samples = vec![
            sample(Who::A, 0, 10_000.0, 1000, 0),
            sample(Who::B, 0, 8_000.0, 2560, 0),
            sample(Who::A, 1, 12_000.0, 900, 4),
            sample(Who::A, 2, 11_000.0, 1100, 0),
        ];
        let rows = summarize(&samples, &[Who::A, Who::B]);
        let a = find(&rows, Who::A, Mode::KeepAlive).unwrap();
        assert_eq!(a.requests_per_sec, 11_000.0);
        assert_eq!(a.p99_us, 301.0);
        assert_eq!((a.runs, a.flagged_runs, a.errors), (3, 1, 4));
        // 1000 ms / 50 000 requests = 20 µs; 900/60 000 = 15; 1100/55 000 = 20.
        assert!((a.cpu_us_per_request - 20.0).abs() < 1e-9);
        assert_eq!(find(&rows, Who::B, Mode::KeepAlive).unwrap().runs, 1);
        assert!(find(&rows, Who::B, Mode::ConnectionPerRequest).is_none());
    }

    #[test]
    fn records_round_trip() {
        let mut s = sample(Who::B, 7, 12_345.67, 1234, 3);
        s.mode = Mode::ConnectionPerRequest;
        s.wrk.p50_us = 412.5;
        s.wrk.non_2xx_3xx = 2;
        s.cpu = Duration::from_nanos(1_234_567_891);
        s.other_cores = 0.375;
        let line = s.to_record();
        assert!(line.starts_with("sample kind=b-2 mode=conn-per-request round=7 "));
        let back = Sample::<Who>::from_record(&line).unwrap().unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn other_lines_are_not_records_and_broken_records_are_errors() {
        assert!(Sample::<Who>::from_record("round 1/3 keep-alive direct ...").is_none());
        assert!(Sample::<Who>::from_record("samples: 3").is_none());
        let good = sample(Who::A, 0, 1.0, 1, 0).to_record();
        let unknown = good.replace("kind=a", "kind=c");
        assert!(Sample::<Who>::from_record(&unknown).unwrap().is_err());
        let missing = good.replace(" p99_us=", " p98_us=");
        assert!(Sample::<Who>::from_record(&missing).unwrap().is_err());
        let garbled = good.replace("requests=5", "requests=x5");
        assert!(Sample::<Who>::from_record(&garbled).unwrap().is_err());
    }
}
