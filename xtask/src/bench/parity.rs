//! The TLS and HTTP/2 rows' own table: requests per CPU second (1e6 / CPU
//! µs per request) beside req/s and latency, the ratios of weir to Envoy
//! (and nginx), and the target for them: at least parity with
//! Envoy on requests per CPU second, per load.

use std::fmt::Write as _;

use super::measure::Memory;
use super::peers::Kind;
use super::report::{Summary, ms, ratio};
use benchkit::load::Mode;

/// The loads this table covers.
pub const MODES: [Mode; 3] = [Mode::TlsKeepAlive, Mode::H2, Mode::H2c];

/// What each load is, for the table.
pub fn describe(mode: Mode) -> &'static str {
    match mode {
        Mode::TlsKeepAlive => "HTTP/1.1 keep-alive over TLS (wrk)",
        Mode::H2 => "HTTP/2 over TLS, ALPN h2 (h2load)",
        Mode::H2c => "HTTP/2 cleartext, prior knowledge (h2load)",
        Mode::KeepAlive | Mode::ConnectionPerRequest => "HTTP/1.1 (wrk)",
        Mode::RateKeepAlive | Mode::RateConnectionPerRequest => "HTTP/1.1 at a set rate",
    }
}

/// Requests the proxy serves per second of its own CPU time.
pub fn per_cpu_second(row: &Summary) -> f64 {
    if row.cpu_us_per_request > 0.0 {
        1e6 / row.cpu_us_per_request
    } else {
        f64::NAN
    }
}

fn find(rows: &[Summary], kind: Kind, mode: Mode) -> Option<&Summary> {
    rows.iter().find(|r| r.kind == kind && r.mode == mode)
}

/// Markdown: one row per proxy and load, then weir's ratios, then memory
/// after all runs (`memory`); empty when none of [`MODES`] ran.
pub fn tables(rows: &[Summary], memory: &[(Kind, Memory)]) -> String {
    let ours: Vec<&Summary> = MODES
        .iter()
        .flat_map(|&m| rows.iter().filter(move |r| r.mode == m))
        .collect();
    if ours.is_empty() {
        return String::new();
    }
    let mut t = String::new();
    t.push_str("| load | proxy | req/s | p50 | p99 | CPU µs/req | requests per CPU second | vs Envoy | others (cores) | runs with errors |\n");
    t.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in &ours {
        let envoy = find(rows, Kind::Envoy, r.mode).map_or(f64::NAN, per_cpu_second);
        let flag = r.errors_cell();
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {} | {} | {:.1} | {:.0} | {} | {:.1} | {flag} |",
            r.mode.label(),
            r.kind.name(),
            r.requests_per_sec,
            ms(r.p50_us),
            ms(r.p99_us),
            r.cpu_us_per_request,
            per_cpu_second(r),
            ratio(per_cpu_second(r), envoy),
            r.other_cores,
        );
    }
    let mut ratios = String::new();
    for mode in MODES {
        let Some(w) = find(rows, Kind::Weir, mode) else {
            continue;
        };
        for peer in [Kind::Envoy, Kind::Nginx] {
            let Some(p) = find(rows, peer, mode) else {
                continue;
            };
            let _ = writeln!(
                ratios,
                "| {} | weir/{} | {} | {} | {} | {} | {} |",
                mode.label(),
                peer.name(),
                ratio(w.requests_per_sec, p.requests_per_sec),
                ratio(w.p50_us, p.p50_us),
                ratio(w.p99_us, p.p99_us),
                ratio(w.cpu_us_per_request, p.cpu_us_per_request),
                ratio(per_cpu_second(w), per_cpu_second(p)),
            );
        }
    }
    if !ratios.is_empty() {
        t.push_str("\n| load | ratio | req/s | p50 | p99 | CPU/req | requests per CPU second |\n");
        t.push_str("|---|---|---:|---:|---:|---:|---:|\n");
        t.push_str(&ratios);
    }
    if !memory.is_empty() {
        let list: Vec<String> = memory
            .iter()
            .map(|(k, m)| {
                format!(
                    "{} {:.1} MiB (peak {:.1})",
                    k.name(),
                    m.rss_mib(),
                    m.hwm_mib()
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "\nRSS after all runs, every load included: {}.",
            list.join(", ")
        );
    }
    t
}

/// The target per load: weir's requests per CPU second at least Envoy's.
pub fn targets(rows: &[Summary]) -> Vec<String> {
    let mut lines = Vec::new();
    for mode in MODES {
        let (Some(w), Some(e)) = (find(rows, Kind::Weir, mode), find(rows, Kind::Envoy, mode))
        else {
            continue;
        };
        let (wr, er) = (per_cpu_second(w), per_cpu_second(e));
        let r = wr / er;
        lines.push(format!(
            "Requests per CPU second ({}: {}) at least Envoy's: weir {wr:.0} vs Envoy {er:.0} = {r:.2}x: {}",
            mode.label(),
            describe(mode),
            if r >= 1.0 { "met" } else { "NOT met" },
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: Kind, mode: Mode, cpu_us: f64) -> Summary {
        Summary {
            kind,
            mode,
            requests_per_sec: 10_000.0,
            p50_us: 800.0,
            p99_us: 4000.0,
            cpu_us_per_request: cpu_us,
            other_cores: 0.5,
            runs: 3,
            flagged_runs: 0,
            errors: 0,
        }
    }

    #[test]
    fn requests_per_cpu_second_and_the_parity_target() {
        let rows = vec![
            row(Kind::Weir, Mode::KeepAlive, 25.0),
            row(Kind::Envoy, Mode::KeepAlive, 60.0),
            row(Kind::Weir, Mode::TlsKeepAlive, 40.0),
            row(Kind::Envoy, Mode::TlsKeepAlive, 80.0),
            row(Kind::Weir, Mode::H2, 50.0),
            row(Kind::Envoy, Mode::H2, 40.0),
        ];
        assert_eq!(per_cpu_second(&rows[2]), 25_000.0);
        let t = tables(&rows, &[]);
        // Plaintext HTTP/1.1 rows belong to the other table.
        assert!(!t.contains("| keep-alive |"), "{t}");
        assert!(
            t.contains(
                "| tls | weir | 10000 | 0.800 ms | 4.000 ms | 40.0 | 25000 | 2.00x | 0.5 | 0/3 |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| tls | envoy | 10000 | 0.800 ms | 4.000 ms | 80.0 | 12500 | 1.00x |"),
            "{t}"
        );
        assert!(
            t.contains("| h2 | weir/envoy | 1.00x | 1.00x | 1.00x | 1.25x | 0.80x |"),
            "{t}"
        );
        let lines = targets(&rows);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with("Requests per CPU second (tls:"),
            "{lines:?}"
        );
        assert!(
            lines[0].ends_with("weir 25000 vs Envoy 12500 = 2.00x: met"),
            "{lines:?}"
        );
        assert!(
            lines[1].ends_with("weir 20000 vs Envoy 25000 = 0.80x: NOT met"),
            "{lines:?}"
        );
        assert_eq!(tables(&rows[..2], &[]), "");
        let mem = Memory {
            rss_kib: 10 * 1024,
            hwm_kib: 12 * 1024,
        };
        assert!(
            tables(&rows, &[(Kind::Weir, mem)])
                .contains("RSS after all runs, every load included: weir 10.0 MiB (peak 12.0).")
        );
    }
}
