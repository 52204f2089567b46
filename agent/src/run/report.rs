//! The agent's enrolment log: one line per state change, never one per retry.

use std::collections::HashMap;

use crate::enroll::Reconciled;

/// Remembers why each pod last failed, so a pod retried every few hundred
/// milliseconds (waiting for its sandbox, or with a bad annotation) is logged
/// when its reason changes, not on every attempt.
#[derive(Debug, Default)]
pub(super) struct Reporter {
    failing: HashMap<String, String>,
}

impl Reporter {
    /// Why pods failed at the last reconciliation, by `namespace/name`.
    pub(super) fn failing(&self) -> &HashMap<String, String> {
        &self.failing
    }

    /// Logs what `done` changed; returns whether some pod still failed (and
    /// so is worth retrying).
    pub(super) fn report(&mut self, done: &Reconciled) -> bool {
        for pod in &done.enrolled {
            self.failing.remove(pod);
            log::info!("pod {pod}: enrolled");
        }
        for pod in &done.updated {
            self.failing.remove(pod);
            log::info!("pod {pod}: updated");
        }
        for pod in &done.unenrolled {
            self.failing.remove(pod);
            log::info!("pod {pod}: un-enrolled");
        }
        let still: HashMap<String, String> = done.failed.iter().cloned().collect();
        for (pod, why) in &still {
            if self.failing.get(pod) != Some(why) {
                log::error!("pod {pod}: not enrolled: {why}");
            }
        }
        for pod in self.failing.keys() {
            if !still.contains_key(pod) && !done.enrolled.contains(pod) {
                log::info!("pod {pod}: its earlier problem is gone");
            }
        }
        self.failing = still;
        !self.failing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(pod: &str, why: &str) -> Reconciled {
        Reconciled {
            failed: vec![(pod.to_owned(), why.to_owned())],
            ..Reconciled::default()
        }
    }

    #[test]
    fn retries_are_reported_while_pods_fail() {
        let mut reporter = Reporter::default();
        assert!(reporter.report(&failed("a/b", "waiting for its sandbox")));
        assert!(reporter.report(&failed("a/b", "waiting for its sandbox")));
        let enrolled = Reconciled {
            enrolled: vec!["a/b".to_owned()],
            ..Reconciled::default()
        };
        assert!(!reporter.report(&enrolled));
        assert!(reporter.failing.is_empty());
    }
}
