//! Medians over the interleaved rounds, the result table with ratios to Envoy
//! and nginx, and the targets checked against the numbers.

use std::fmt::Write as _;

use benchkit::load::Mode;
use benchkit::measure::Memory;
use benchkit::sample::find;

use super::peers::Kind;

pub type Sample = benchkit::sample::Sample<Kind>;
pub type Summary = benchkit::sample::Summary<Kind>;

pub fn summarize(samples: &[Sample], kinds: &[Kind]) -> Vec<Summary> {
    benchkit::sample::summarize(samples, kinds)
}

fn mem_of(memory: &[(Kind, Memory)], kind: Kind) -> Option<Memory> {
    memory.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m)
}

pub fn ms(us: f64) -> String {
    format!("{:.3} ms", us / 1000.0)
}

pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".to_owned()
    }
}

/// The results table (Markdown), then the ratios of weir to each peer.
pub fn tables(rows: &[Summary], memory: &[(Kind, Memory)]) -> String {
    let mut t = String::new();
    t.push_str("| load | proxy | req/s | p50 | p99 | CPU µs/req | RSS MiB | peak RSS MiB | others (cores) | runs with errors |\n");
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        let m = mem_of(memory, r.kind).unwrap_or_default();
        let flag = r.errors_cell();
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {flag} |",
            r.mode.label(),
            r.kind.name(),
            r.requests_per_sec,
            ms(r.p50_us),
            ms(r.p99_us),
            r.cpu_us_per_request,
            m.rss_mib(),
            m.hwm_mib(),
            r.other_cores,
        );
    }
    // weir over each peer, then weir with its access log over weir (the
    // log's cost).
    let pairs = [
        (Kind::Weir, Kind::Envoy),
        (Kind::Weir, Kind::Nginx),
        (Kind::WeirLog, Kind::Weir),
    ];
    let mut ratios = String::new();
    for mode in Mode::ALL {
        for (a, b) in pairs {
            let (Some(x), Some(y)) = (find(rows, a, mode), find(rows, b, mode)) else {
                continue;
            };
            let xm = mem_of(memory, a).unwrap_or_default();
            let ym = mem_of(memory, b).unwrap_or_default();
            let _ = writeln!(
                ratios,
                "| {} | {}/{} | {} | {} | {} | {} | {} |",
                mode.label(),
                a.name(),
                b.name(),
                ratio(x.requests_per_sec, y.requests_per_sec),
                ratio(x.p50_us, y.p50_us),
                ratio(x.p99_us, y.p99_us),
                ratio(x.cpu_us_per_request, y.cpu_us_per_request),
                ratio(xm.rss_kib as f64, ym.rss_kib as f64),
            );
        }
    }
    if !ratios.is_empty() {
        t.push_str("\n| load | ratio | req/s | p50 | p99 | CPU/req | RSS |\n");
        t.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        t.push_str(&ratios);
    }
    t
}

/// Other work on the machine from which on a p99 says more about the
/// scheduler than about the proxy (a quarter of a core of 2).
pub const NOISY_CORES: f64 = 0.25;

/// The targets, each as a line saying met or not met with numbers.
pub fn targets(rows: &[Summary], memory: &[(Kind, Memory)]) -> Vec<String> {
    let mut lines = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    if let (Some(w), Some(e)) = (
        find(rows, Kind::Weir, Mode::KeepAlive),
        find(rows, Kind::Envoy, Mode::KeepAlive),
    ) {
        let r = w.cpu_us_per_request / e.cpu_us_per_request;
        let mut line = format!(
            "CPU per keep-alive request at most 0.5x Envoy's: weir {:.1} µs vs Envoy {:.1} µs = {r:.2}x: {}",
            w.cpu_us_per_request,
            e.cpu_us_per_request,
            verdict(r <= 0.5)
        );
        if let Some(n) = find(rows, Kind::Nginx, Mode::KeepAlive) {
            let _ = write!(
                line,
                " (nginx {:.1} µs; weir/nginx {:.2}x)",
                n.cpu_us_per_request,
                w.cpu_us_per_request / n.cpu_us_per_request
            );
        }
        lines.push(line);
    }
    for mode in Mode::ALL {
        if let (Some(w), Some(e)) = (find(rows, Kind::Weir, mode), find(rows, Kind::Envoy, mode)) {
            let mut line = format!(
                "p99 ({}) no worse than Envoy's: weir {} vs Envoy {}: {}",
                mode.label(),
                ms(w.p99_us),
                ms(e.p99_us),
                verdict(w.p99_us <= e.p99_us)
            );
            let others = w.other_cores.max(e.other_cores);
            if others >= NOISY_CORES {
                let _ = write!(
                    line,
                    " (other work used up to {others:.1} cores meanwhile: p99 is mostly preemption)"
                );
            }
            lines.push(line);
        }
    }
    if let (Some(w), Some(e)) = (mem_of(memory, Kind::Weir), mem_of(memory, Kind::Envoy))
        && e.rss_kib > 0
    {
        let r = w.rss_kib as f64 / e.rss_kib as f64;
        lines.push(format!(
            "RSS at most 0.25x Envoy's: weir {:.1} MiB vs Envoy {:.1} MiB = {r:.2}x: {}",
            w.rss_mib(),
            e.rss_mib(),
            verdict(r <= 0.25)
        ));
    }
    let flagged: usize = rows.iter().map(|r| r.flagged_runs).sum();
    if flagged > 0 {
        lines.push(format!(
            "WARNING: {flagged} run(s) had socket errors or non-2xx/3xx responses (see the table)"
        ));
    }
    lines
}

/// Every run, for the record under the table.
pub fn raw_runs(samples: &[Sample]) -> String {
    let mut t = String::new();
    t.push_str(
        "| round | load | proxy | requests | req/s | p50 | p99 | CPU ms | CPU µs/req | others (cores) | errors |\n",
    );
    t.push_str("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in samples {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0} | {:.1} | {:.1} | {} |",
            s.round + 1,
            s.mode.label(),
            s.kind.name(),
            s.wrk.requests,
            s.wrk.requests_per_sec,
            ms(s.wrk.p50_us),
            ms(s.wrk.p99_us),
            s.cpu.as_secs_f64() * 1e3,
            s.cpu_us_per_request(),
            s.other_cores,
            s.wrk.errors(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use benchkit::load::WrkReport;

    use super::*;

    fn sample(kind: Kind, round: u32, rps: f64, cpu_ms: u64, errors: u64) -> Sample {
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
    fn summary_takes_medians_and_flags_errors() {
        let samples = vec![
            sample(Kind::Weir, 0, 10_000.0, 1000, 0),
            sample(Kind::Envoy, 0, 8_000.0, 2560, 0),
            sample(Kind::Weir, 1, 12_000.0, 900, 4),
            sample(Kind::Envoy, 1, 9_000.0, 2880, 0),
            sample(Kind::Weir, 2, 11_000.0, 1100, 0),
            sample(Kind::Envoy, 2, 7_000.0, 2240, 0),
        ];
        let rows = summarize(&samples, &[Kind::Weir, Kind::Envoy]);
        let weir = find(&rows, Kind::Weir, Mode::KeepAlive).unwrap();
        assert_eq!(weir.requests_per_sec, 11_000.0);
        assert_eq!(weir.p99_us, 301.0);
        assert_eq!((weir.flagged_runs, weir.errors), (1, 4));
        // 1000 ms / 50 000 requests = 20 µs; 900/60 000 = 15; 1100/55 000 = 20.
        assert!((weir.cpu_us_per_request - 20.0).abs() < 1e-9);
        let envoy = find(&rows, Kind::Envoy, Mode::KeepAlive).unwrap();
        assert!((envoy.cpu_us_per_request - 64.0).abs() < 1e-9);

        let table = tables(&rows, &[]);
        assert!(table.contains("**1/3 (4 errors)**"), "{table}");
        assert!(
            table.contains("| keep-alive | weir/envoy | 1.38x |"),
            "{table}"
        );
        let t = targets(&rows, &[]);
        assert!(t[0].contains("= 0.31x: met"), "{t:?}");
        assert!(t.iter().any(|l| l.starts_with("WARNING: 1 run")), "{t:?}");
    }
}
