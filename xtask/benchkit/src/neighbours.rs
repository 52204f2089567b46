//! `cargo xtask bench neighbours`: what one misbehaving pod (A) costs its
//! neighbour (B) on a node, with weir and with a sidecar per pod. The names
//! of the attacks and setups, shared by xtask (its flags) and the benchmark
//! binary (which runs them), and the report: one row per attack and setup,
//! judged against the acceptance.

use std::fmt::Write as _;

use crate::load::WrkReport;

/// What pod A does while B sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attack {
    /// Nothing: B's baseline.
    Alone,
    /// wrk on a route the proxy answers itself (`direct_response`).
    CpuDirect,
    /// wrk on another service, through the proxy to its pod.
    CpuUpstream,
    /// Thousands of connections to a proxied HTTP destination that never
    /// send a byte.
    Silent,
    /// Thousands of connections to a non-HTTP sink, held open; some send
    /// bytes now and then.
    Opaque,
    /// A 100 MB response read slowly.
    SlowReader,
}

impl Attack {
    pub const ALL: [Attack; 6] = [
        Attack::Alone,
        Attack::CpuDirect,
        Attack::CpuUpstream,
        Attack::Silent,
        Attack::Opaque,
        Attack::SlowReader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Attack::Alone => "alone",
            Attack::CpuDirect => "cpu-direct",
            Attack::CpuUpstream => "cpu-upstream",
            Attack::Silent => "silent",
            Attack::Opaque => "opaque",
            Attack::SlowReader => "slow-reader",
        }
    }

    /// Parses one item of a comma-separated flag value.
    pub fn parse(name: &str) -> Result<Attack, String> {
        parse_one("attack", &Attack::ALL, Attack::name, name)
    }
}

/// The item of `all` called `name`, else an error listing every name.
fn parse_one<T: Copy>(
    what: &str,
    all: &[T],
    name_of: fn(T) -> &'static str,
    name: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|item| name_of(*item) == name.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|item| name_of(*item)).collect();
            format!(
                "unknown {what} {name:?}: expected one of {}",
                names.join(", ")
            )
        })
}

/// How the pods reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Setup {
    /// One `weir run` for the node, every pod enrolled.
    Weir,
    /// An Envoy in each pod behind iptables REDIRECT, as the seeds run it.
    Sidecars,
    /// No proxy at all: B straight to its server's pod, A straight to
    /// `other` and the sink. What the node itself (two cores, veth, the
    /// applications) gives B under the same attack: the floor any proxy is
    /// measured above.
    NoProxy,
}

impl Setup {
    pub const ALL: [Setup; 3] = [Setup::Weir, Setup::Sidecars, Setup::NoProxy];

    pub fn name(self) -> &'static str {
        match self {
            Setup::Weir => "weir",
            Setup::Sidecars => "sidecars",
            Setup::NoProxy => "no-proxy",
        }
    }

    pub fn parse(name: &str) -> Result<Setup, String> {
        parse_one("setup", &Setup::ALL, Setup::name, name)
    }
}

/// B's p99 under an attack may be at most this many times its p99 alone
/// (measured on the same setup just before the attack).
pub const P99_LIMIT: f64 = 2.0;
/// Descriptors and RSS must be back within this factor of their values
/// before the attack ...
pub const RECOVERY_FACTOR: f64 = 2.0;
/// ... within this many seconds of its end.
pub const RECOVERY_SECS: f64 = 60.0;

/// Open descriptors and resident memory of a set of processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Footprint {
    pub fds: usize,
    pub rss_kib: u64,
}

impl Footprint {
    /// Within [`RECOVERY_FACTOR`] of `before` on both counts.
    pub fn back_to(&self, before: &Footprint) -> bool {
        self.fds as f64 <= before.fds as f64 * RECOVERY_FACTOR
            && self.rss_kib as f64 <= before.rss_kib as f64 * RECOVERY_FACTOR
    }
}

/// One proxy process over an attack.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyUse {
    /// `weir`, or the pod whose sidecar it is (`a`, `b`, `server`, ...).
    pub role: String,
    pub peak_fds: usize,
    pub peak_rss_kib: u64,
    /// CPU time over the attack divided by its wall time.
    pub cpu_cores: f64,
}

/// How the proxies came back after the attack ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// All proxies, before the attack began.
    pub before: Footprint,
    /// When they were back within [`RECOVERY_FACTOR`], or at the deadline.
    pub after: Footprint,
    /// Seconds from the attack's end until `after`; `None`: not back within
    /// [`RECOVERY_SECS`].
    pub secs: Option<f64>,
}

/// One attack on one setup.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub attack: Attack,
    pub setup: Setup,
    /// What A managed (its own report), e.g. `41000 req/s`.
    pub load: String,
    /// B's requests over the attack (latency-probe's report).
    pub b: WrkReport,
    /// B's p99 alone on this setup, measured just before the attack for as
    /// long (for `alone`, its own), so that drift in how busy the shared
    /// machine is falls on both.
    pub alone_p99_us: f64,
    pub proxies: Vec<ProxyUse>,
    /// Readiness probes answered 200 during the attack, of those sent (weir's
    /// `/ready`; B's sidecar's `/ready`).
    pub ready: (u32, u32),
    /// A pod enrolled during the attack: milliseconds from the pods file's
    /// change to its first request served; `Some(None)`: not served in time;
    /// `None`: not asked (no enrolment with sidecars).
    pub enrolled_ms: Option<Option<f64>>,
    /// Connections refused during the attack, counted against A and against
    /// B (weir's `weir_intercept_connections_refused_total`); `None`: no such count.
    pub refused: Option<(f64, f64)>,
    pub recovery: Recovery,
}

impl Row {
    fn proxy(&self, role: &str) -> Option<&ProxyUse> {
        self.proxies.iter().find(|p| p.role == role)
    }

    /// Why this row misses the acceptance (empty: it meets it).
    pub fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.b.errors() > 0 {
            why.push(format!("B had {} failed requests", self.b.errors()));
        }
        if let Some(alone) = Some(self.alone_p99_us).filter(|a| *a > 0.0) {
            let ratio = self.b.p99_us / alone;
            if ratio > P99_LIMIT {
                why.push(format!(
                    "B's p99 {} is {ratio:.1}x its p99 alone ({}; at most {P99_LIMIT}x)",
                    ms(self.b.p99_us),
                    ms(alone)
                ));
            }
        }
        if self.ready.0 < self.ready.1 {
            why.push(format!(
                "/ready answered {} of {} probes",
                self.ready.0, self.ready.1
            ));
        }
        if self.enrolled_ms == Some(None) {
            why.push("a pod enrolled during the attack was not served".to_owned());
        }
        if let Some((_, b)) = self.refused
            && b > 0.0
        {
            why.push(format!("{b} of B's connections were refused"));
        }
        if self.recovery.secs.is_none() {
            why.push(format!(
                "descriptors and RSS not back within {RECOVERY_FACTOR}x in {RECOVERY_SECS} s \
                 ({} fds, {} after; {} fds, {} before)",
                self.recovery.after.fds,
                mib(self.recovery.after.rss_kib),
                self.recovery.before.fds,
                mib(self.recovery.before.rss_kib)
            ));
        }
        why
    }
}

pub fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A proxy cell: weir's one process, or B's sidecar, A's and all of them;
/// `-` without a proxy.
fn per_proxy(row: &Row, value: impl Fn(&ProxyUse) -> f64, fmt: impl Fn(f64) -> String) -> String {
    match row.proxies.as_slice() {
        [] => return "-".to_owned(),
        [one] => return fmt(value(one)),
        _ => {}
    }
    let all: f64 = row.proxies.iter().map(&value).sum();
    let of = |role: &str| row.proxy(role).map(&value).map_or("-".to_owned(), &fmt);
    format!("B {}, A {}, all {}", of("b"), of("a"), fmt(all))
}

/// The report's table: per attack, each setup side by side, with its verdict.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| attack | setup | A's load | B p50 | B p99 | B errors | B p99 alone, just before | B p99 / alone | proxy fds (peak) | proxy CPU (cores) | proxy RSS peak (MiB) | back within 2x after | /ready during | enrolment during | refused: A / B | verdict |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for attack in Attack::ALL {
        for setup in Setup::ALL {
            let Some(row) = rows.iter().find(|r| r.attack == attack && r.setup == setup) else {
                continue;
            };
            let ratio = match row.alone_p99_us {
                a if a > 0.0 => format!("{:.2}x", row.b.p99_us / a),
                _ => "-".to_owned(),
            };
            let fds = per_proxy(row, |p| p.peak_fds as f64, |v| format!("{v:.0}"));
            let cpu = per_proxy(row, |p| p.cpu_cores, |v| format!("{v:.2}"));
            let rss = per_proxy(
                row,
                |p| p.peak_rss_kib as f64,
                |v| format!("{:.1}", v / 1024.0),
            );
            let back = match row.recovery.secs {
                Some(s) => format!("{s:.1} s"),
                None => format!("not in {RECOVERY_SECS:.0} s"),
            };
            let enrolment = match row.enrolled_ms {
                None => "-".to_owned(),
                Some(Some(ms)) => format!("{ms:.0} ms"),
                Some(None) => "**no**".to_owned(),
            };
            let refused = row
                .refused
                .map_or("-".to_owned(), |(a, b)| format!("{a:.0} / {b:.0}"));
            let ready = match row.ready {
                (_, 0) => "-".to_owned(),
                (ok, of) => format!("{ok}/{of}"),
            };
            let failures = row.failures();
            let verdict = if failures.is_empty() {
                "PASS"
            } else {
                "**FAIL**"
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {ratio} | {fds} | {cpu} | {rss} | {back} | {ready} | {enrolment} | {refused} | {verdict} |",
                attack.name(),
                setup.name(),
                row.load,
                ms(row.b.p50_us),
                ms(row.b.p99_us),
                row.b.errors(),
                ms(row.alone_p99_us),
            );
        }
    }
    t
}

/// Every row's descriptors and RSS, all proxies together: before the
/// attack, at its peak (the sum of each process's peak) and when back.
/// The no-proxy rows have none to show.
pub fn recovery_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| attack | setup | before: fds, RSS | peak: fds, RSS | back: fds, RSS | after the end |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    let mut sorted: Vec<&Row> = rows.iter().filter(|r| !r.proxies.is_empty()).collect();
    sorted.sort_by_key(|r| (r.attack, r.setup));
    for row in sorted {
        let r = &row.recovery;
        let peak_fds: usize = row.proxies.iter().map(|p| p.peak_fds).sum();
        let peak_rss: u64 = row.proxies.iter().map(|p| p.peak_rss_kib).sum();
        let when = match r.secs {
            Some(s) => format!("{s:.1} s"),
            None => format!("not back in {RECOVERY_SECS:.0} s"),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {}, {} | {peak_fds}, {} | {}, {} | {when} |",
            row.attack.name(),
            row.setup.name(),
            r.before.fds,
            mib(r.before.rss_kib),
            mib(peak_rss),
            r.after.fds,
            mib(r.after.rss_kib),
        );
    }
    t
}

/// One line per row that misses the acceptance, saying why.
pub fn failures(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            let why = r.failures();
            (!why.is_empty()).then(|| {
                format!(
                    "{} under {}: {}",
                    r.setup.name(),
                    r.attack.name(),
                    why.join("; ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(attack: Attack, setup: Setup, p99_us: f64, alone_p99_us: f64) -> Row {
        let before = Footprint {
            fds: 40,
            rss_kib: 30 * 1024,
        };
        Row {
            attack,
            setup,
            load: "1000 req/s".to_owned(),
            b: WrkReport {
                requests: 1000,
                seconds: 10.0,
                requests_per_sec: 100.0,
                p50_us: 500.0,
                p99_us,
                socket_errors: 0,
                non_2xx_3xx: 0,
            },
            alone_p99_us,
            proxies: match setup {
                Setup::Weir => vec![ProxyUse {
                    role: "weir".to_owned(),
                    peak_fds: 4200,
                    peak_rss_kib: 64 * 1024,
                    cpu_cores: 1.25,
                }],
                Setup::NoProxy => Vec::new(),
                Setup::Sidecars => ["b", "a", "server"]
                    .iter()
                    .map(|role| ProxyUse {
                        role: (*role).to_owned(),
                        peak_fds: 100,
                        peak_rss_kib: 60 * 1024,
                        cpu_cores: 0.5,
                    })
                    .collect(),
            },
            ready: if setup == Setup::NoProxy {
                (0, 0)
            } else {
                (20, 20)
            },
            enrolled_ms: (setup == Setup::Weir).then_some(Some(120.0)),
            refused: (setup == Setup::Weir).then_some((1904.0, 0.0)),
            recovery: Recovery {
                before,
                after: before,
                secs: Some(0.4),
            },
        }
    }

    #[test]
    fn names_parse_back() {
        for a in Attack::ALL {
            assert_eq!(Attack::parse(a.name()), Ok(a));
        }
        assert_eq!(Setup::parse(" sidecars"), Ok(Setup::Sidecars));
        assert!(Attack::parse("ddos").unwrap_err().contains("cpu-direct"));
        assert!(Setup::parse("istio").unwrap_err().contains("no-proxy"));
    }

    #[test]
    fn verdict_against_the_baseline_of_the_same_setup() {
        let rows = vec![
            row(Attack::Alone, Setup::Weir, 1000.0, 1000.0),
            row(Attack::Alone, Setup::Sidecars, 3000.0, 3000.0),
            // 2.5x weir's baseline just before: fails; 5000 µs is within 2x
            // of the sidecars' own.
            row(Attack::CpuDirect, Setup::Weir, 2500.0, 1000.0),
            row(Attack::CpuDirect, Setup::Sidecars, 5000.0, 3000.0),
        ];
        let t = table(&rows);
        assert!(
            t.contains("| cpu-direct | weir | 1000 req/s | 0.50 ms | 2.50 ms | 0 | 1.00 ms | 2.50x | 4200 | 1.25 | 64.0 | 0.4 s | 20/20 | 120 ms | 1904 / 0 | **FAIL** |"),
            "{t}"
        );
        assert!(
            t.contains("| cpu-direct | sidecars | 1000 req/s | 0.50 ms | 5.00 ms | 0 | 3.00 ms | 1.67x | B 100, A 100, all 300 | B 0.50, A 0.50, all 1.50 | B 60.0, A 60.0, all 180.0 | 0.4 s | 20/20 | - | - | PASS |"),
            "{t}"
        );
        assert_eq!(t.matches("| PASS |").count(), 3, "{t}");
        let r = recovery_table(&rows);
        assert!(
            r.contains(
                "| cpu-direct | sidecars | 40, 30.0 MiB | 300, 180.0 MiB | 40, 30.0 MiB | 0.4 s |"
            ),
            "{r}"
        );
        let lines = failures(&rows);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "weir under cpu-direct: B's p99 2.50 ms is 2.5x its p99 alone (1.00 ms; at most 2x)"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn the_floor_shows_no_proxy_cells_but_is_judged_alike() {
        let rows = vec![
            row(Attack::Alone, Setup::NoProxy, 400.0, 400.0),
            row(Attack::CpuUpstream, Setup::NoProxy, 1000.0, 400.0),
        ];
        let t = table(&rows);
        assert!(
            t.contains("| cpu-upstream | no-proxy | 1000 req/s | 0.50 ms | 1.00 ms | 0 | 0.40 ms | 2.50x | - | - | - | 0.4 s | - | - | - | **FAIL** |"),
            "{t}"
        );
        assert_eq!(
            recovery_table(&rows).lines().count(),
            2,
            "only the header: no proxy, no footprint"
        );
        assert!(failures(&rows)[0].starts_with("no-proxy under cpu-upstream: B's p99 1.00 ms"));
        assert_eq!(Setup::parse("no-proxy"), Ok(Setup::NoProxy));
    }

    #[test]
    fn every_part_of_the_acceptance_counts() {
        let mut r = row(Attack::Silent, Setup::Weir, 1500.0, 1000.0);
        assert!(r.failures().is_empty());
        r.b.socket_errors = 2;
        r.ready = (19, 20);
        r.enrolled_ms = Some(None);
        r.refused = Some((1904.0, 3.0));
        r.recovery.secs = None;
        r.recovery.after.fds = 900;
        let why = r.failures().join("; ");
        for part in [
            "B had 2 failed requests",
            "/ready answered 19 of 20",
            "was not served",
            "3 of B's connections were refused",
            "(900 fds, 30.0 MiB after; 40 fds, 30.0 MiB before)",
        ] {
            assert!(why.contains(part), "{part}: {why}");
        }
        // No baseline: only the other parts are judged.
        let r = row(Attack::Silent, Setup::Weir, 1e9, 0.0);
        assert!(r.failures().is_empty());
    }

    #[test]
    fn recovery_is_within_the_factor_on_both_counts() {
        let before = Footprint {
            fds: 40,
            rss_kib: 1000,
        };
        assert!(
            Footprint {
                fds: 80,
                rss_kib: 2000
            }
            .back_to(&before)
        );
        assert!(
            !Footprint {
                fds: 81,
                rss_kib: 1000
            }
            .back_to(&before)
        );
        assert!(
            !Footprint {
                fds: 40,
                rss_kib: 2001
            }
            .back_to(&before)
        );
    }
}
