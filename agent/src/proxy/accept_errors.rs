//! What an accept loop does when `accept()` fails (EMFILE with the fd table
//! full, ENFILE, ENOBUFS): pause instead of spinning, and log the first
//! failure, then at most one line per [`LogLimit::PERIOD`] (10 s) carrying the number of
//! failures not logged, so a node out of file descriptors does not also
//! flood its logs (issue 10). The first success after failures says so once.

use std::time::Duration;

use crate::proxy::tls::failure::LogLimit;

/// Pause after a failed accept: long enough not to spin, short enough that
/// service resumes at once when descriptors are freed.
pub const BACKOFF: Duration = Duration::from_millis(50);

/// Failed accepts of one listener, for bounded logging.
pub struct AcceptErrors {
    what: String,
    /// One line per period, as for TLS handshake failures.
    limit: LogLimit,
    /// "Accepting again" lines, bounded the same way.
    recovered: LogLimit,
    /// Failures since the last success.
    streak: u64,
    /// Every failure, where the listener has metrics.
    counter: Option<prometheus::IntCounter>,
}

impl AcceptErrors {
    /// `what` names the listener in log lines.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            limit: LogLimit::default(),
            recovered: LogLimit::default(),
            streak: 0,
            counter: None,
        }
    }

    /// Count every failure in `counter` too.
    pub fn counted(mut self, counter: prometheus::IntCounter) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Record a failed accept, log it if due, then back off.
    pub async fn failed(&mut self, e: &std::io::Error) {
        self.note(e);
        tokio::time::sleep(BACKOFF).await;
    }

    /// A connection was accepted: after failures, say so (at most once
    /// per period: with descriptors at the limit, accepts can flap between
    /// failing and succeeding as other descriptors come and go).
    pub fn accepted(&mut self) {
        if self.streak > 0 {
            if self.recovered.admit().is_some() {
                log::warn!(
                    "{}: accepting again after {} failed accept(s)",
                    self.what,
                    self.streak
                );
            }
            // The failure limit stays: the next streak's first failure is
            // logged only once the period since the last line is over.
            self.streak = 0;
        }
    }

    /// Counts the failure; true when a line was logged for it.
    fn note(&mut self, e: &std::io::Error) -> bool {
        self.streak += 1;
        if let Some(c) = &self.counter {
            c.inc();
        }
        let Some(skipped) = self.limit.admit() else {
            return false;
        };
        let every = LogLimit::PERIOD.as_secs();
        let pause = BACKOFF.as_millis();
        if skipped > 0 {
            log::warn!(
                "{}: accept: {e} ({skipped} more failed accept(s) in the last {every} s not logged; backing off {pause} ms each)",
                self.what
            );
        } else {
            log::warn!(
                "{}: accept: {e} (backing off {pause} ms; further failures logged at most every {every} s)",
                self.what
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_logged_then_none_within_the_period_even_when_accepts_flap() {
        let mut a = AcceptErrors::new("test");
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(a.note(&e));
        for _ in 1..200 {
            assert!(!a.note(&e));
        }
        assert_eq!(a.streak, 200);
        // A descriptor came free for one accept (the CI run that saw two
        // lines in 3 s): the next failure is still within the period.
        a.accepted();
        assert_eq!(a.streak, 0);
        assert!(!a.note(&e));
        a.accepted();
        assert!(!a.note(&e));
    }
}
