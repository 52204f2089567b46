//! Connection timers without per-request timer allocations: the header-read
//! timeout (slowloris) and the idle timeout, evaluated from timestamps the
//! IO wrapper and the service record in [`ConnShared`].
//!
//! The header-read clock starts with the first byte read while no request is
//! in flight and stops when hyper hands the parsed head to the service, so an
//! idle keep-alive connection is governed by the idle timeout alone.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::activity::ConnShared;
use crate::proxy::cluster::outlier::now_ms;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing expired; check again at this many ms from now (`None`: never).
    Fine(Option<u64>),
    Idle,
    HeaderTimeout,
}

/// Smallest re-check delay, so a busy connection does not spin.
const MIN_RECHECK_MS: u64 = 10;

pub fn check(shared: &ConnShared, header: Option<Duration>, idle: Option<Duration>) -> Verdict {
    check_at(shared, header, idle, now_ms())
}

fn check_at(
    shared: &ConnShared,
    header: Option<Duration>,
    idle: Option<Duration>,
    now: u64,
) -> Verdict {
    let in_flight = shared.in_flight.load(Ordering::Relaxed) != 0;
    let mut next: Option<u64> = None;
    let mut at = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
    if let Some(h) = header {
        let h = h.as_millis() as u64;
        let started = shared.head_started_ms.load(Ordering::Relaxed);
        if started != 0 && !in_flight {
            if now.saturating_sub(started) >= h {
                return Verdict::HeaderTimeout;
            }
            at(started + h);
        } else {
            // a head may start at any moment: look again within half the timeout
            at(now + (h / 2).max(MIN_RECHECK_MS));
        }
    }
    if let Some(i) = idle {
        let i = i.as_millis() as u64;
        let last = shared.last_activity_ms.load(Ordering::Relaxed);
        if !in_flight && now.saturating_sub(last) >= i {
            return Verdict::Idle;
        }
        at(if in_flight { now + i } else { last + i });
    }
    Verdict::Fine(next.map(|t| t.saturating_sub(now).max(MIN_RECHECK_MS)))
}

/// How long the connection has been idle: no request in flight and no
/// byte either way (`None` while a request is in flight).
pub fn idle_for(shared: &ConnShared) -> Option<Duration> {
    if shared.in_flight.load(Ordering::Relaxed) != 0 {
        return None;
    }
    let last = shared.last_activity_ms.load(Ordering::Relaxed);
    Some(Duration::from_millis(now_ms().saturating_sub(last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    const S: Option<Duration> = Some(Duration::from_secs(1));

    #[test]
    fn header_timeout_only_while_no_request_in_flight() {
        let s = ConnShared::default();
        s.last_activity_ms.store(1000, Relaxed);
        assert_eq!(check_at(&s, S, None, 1000), Verdict::Fine(Some(500)));
        s.head_started_ms.store(1000, Relaxed);
        assert_eq!(check_at(&s, S, None, 1400), Verdict::Fine(Some(600)));
        assert_eq!(check_at(&s, S, None, 2000), Verdict::HeaderTimeout);
        s.in_flight.store(1, Relaxed);
        assert!(matches!(check_at(&s, S, None, 2000), Verdict::Fine(_)));
    }

    #[test]
    fn idle_after_no_activity() {
        let s = ConnShared::default();
        s.last_activity_ms.store(1000, Relaxed);
        assert_eq!(check_at(&s, None, S, 1200), Verdict::Fine(Some(800)));
        assert_eq!(check_at(&s, None, S, 2000), Verdict::Idle);
        s.in_flight.store(1, Relaxed);
        assert_eq!(check_at(&s, None, S, 2000), Verdict::Fine(Some(1000)));
        assert_eq!(check_at(&s, None, None, 2000), Verdict::Fine(None));
    }
}
