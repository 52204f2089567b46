//! The kernel x layout table `cargo xtask kernels` ends with.

use std::fmt::Write as _;
use std::time::Duration;

use super::guest::binary_results;

pub struct Row {
    pub kernel: String,
    pub layout: String,
    /// The data path's own summary of what it found and loaded.
    pub detected: String,
    pub outcome: Outcome,
    pub time: Duration,
    /// The failing binaries' own reports (`guest::failure_excerpts`).
    pub failures: String,
    /// Boots that died before the tests started (`guest::crashed_boots`).
    pub crashed_boots: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub passed: u32,
    pub failed: u32,
    /// Why the run counts as failed beyond failed tests (timeout, boot
    /// failure, a test binary that died or never ran).
    pub problem: Option<String>,
}

impl Outcome {
    /// Reads the guest's log: libtest's `test result:` lines and the marker
    /// after each binary; `vm_status` is vm.sh's exit status, `expected` the
    /// number of test binaries the guest was given.
    pub fn from_guest(log: &str, vm_status: Option<i32>, expected: usize) -> Self {
        let (mut passed, mut failed) = (0, 0);
        for line in log.lines() {
            let Some(rest) = line.trim().strip_prefix("test result: ") else {
                continue;
            };
            passed += count_before(rest, " passed");
            failed += count_before(rest, " failed");
        }
        let ran = binary_results(log);
        let problem = match vm_status {
            Some(124) => Some("guest timed out".to_owned()),
            Some(125) => Some("guest did not boot or report".to_owned()),
            _ if ran.len() < expected => {
                Some(format!("{} of {expected} test binaries ran", ran.len()))
            }
            _ => {
                let died: Vec<&str> = ran
                    .iter()
                    .filter(|(_, rc)| *rc != 0)
                    .map(|(name, _)| name.as_str())
                    .collect();
                (!died.is_empty() && failed == 0)
                    .then(|| format!("{} exited non-zero", died.join(", ")))
            }
        };
        Self {
            passed,
            failed,
            problem,
        }
    }

    pub fn is_pass(&self) -> bool {
        self.failed == 0 && self.problem.is_none() && self.passed > 0
    }
}

/// The number just before `word` in `rest` (`5 passed; 0 failed; ...`).
fn count_before(rest: &str, word: &str) -> u32 {
    rest.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(word.trim_start())
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

pub fn render(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<26} {:<7} {:>6} {:>6} {:>7}  {}\n",
        "kernel", "cgroup", "passed", "failed", "time", "data path (as the agent reports it)"
    );
    for r in rows {
        let verdict = if r.outcome.is_pass() { "" } else { "FAIL " };
        let problem = r
            .outcome
            .problem
            .as_deref()
            .map(|p| format!(" [{p}]"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<26} {:<7} {:>6} {:>6} {:>6}s  {verdict}{}{problem}",
            r.kernel,
            r.layout,
            r.outcome.passed,
            r.outcome.failed,
            r.time.as_secs(),
            r.detected
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::guest::E2E_TESTS;
    use super::*;

    fn markers(rcs: [i32; E2E_TESTS.len()]) -> String {
        E2E_TESTS
            .iter()
            .zip(rcs)
            .map(|(n, rc)| format!("weir-kernels: test {n} rc={rc} secs=1\n"))
            .collect()
    }

    #[test]
    fn results_are_summed_over_binaries() {
        let mut rcs = [0; E2E_TESTS.len()];
        rcs[1] = 101;
        let log = format!(
            "test result: ok. 4 passed; 0 failed; 0 ignored\ntest result: FAILED. 2 passed; 1 failed; 0 ignored\n{}",
            markers(rcs)
        );
        let outcome = Outcome::from_guest(&log, Some(101), E2E_TESTS.len());
        assert_eq!((outcome.passed, outcome.failed), (6, 1));
        assert!(!outcome.is_pass());
    }

    #[test]
    fn a_clean_run_passes_and_a_short_one_does_not() {
        let clean = format!(
            "test result: ok. 3 passed; 0 failed\n{}",
            markers([0; E2E_TESTS.len()])
        );
        assert!(Outcome::from_guest(&clean, Some(0), E2E_TESTS.len()).is_pass());
        let short =
            "test result: ok. 3 passed; 0 failed\nweir-kernels: test egress_redirect rc=0 secs=1\n";
        let outcome = Outcome::from_guest(short, Some(124), E2E_TESTS.len());
        assert_eq!(outcome.problem.as_deref(), Some("guest timed out"));
        let mut rcs = [0; E2E_TESTS.len()];
        rcs[E2E_TESTS.len() - 1] = 134;
        let crashed = format!("test result: ok. 3 passed; 0 failed\n{}", markers(rcs));
        assert!(!Outcome::from_guest(&crashed, Some(134), E2E_TESTS.len()).is_pass());
    }
}
