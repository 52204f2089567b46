//! Passive outlier detection: consecutive errors eject an endpoint for
//! `base_ejection_time * times ejected` (capped at 300 s, as Envoy's
//! default `max_ejection_time`). Un-ejection is lazy: an endpoint is healthy
//! again as soon as its ejection deadline has passed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

const MAX_EJECTION: Duration = Duration::from_secs(300);

/// Milliseconds on the kernel's coarse monotonic clock
/// (`CLOCK_MONOTONIC_COARSE`: the time of the last scheduler tick, a few ms
/// fine, read from the vDSO without the TSC). The request path reads it
/// several times a request (every read and write of a downstream connection
/// records its activity, every endpoint pick checks ejections), where
/// `Instant::now` and a u128 division cost more than the ms-grained
/// deadlines it serves need. Never 0 on a running system.
pub fn now_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(t) => (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000,
        // Not on Linux: the precise clock, from the first call.
        Err(_) => {
            static START: OnceLock<Instant> = OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutlierPolicy {
    /// 0 disables this detector.
    pub consecutive_5xx: u32,
    /// 502/503/504 and connect failures; 0 disables.
    pub consecutive_gateway_failure: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

/// What one try produced, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// Connect failure, timeout or reset: locally originated gateway errors.
    LocalFailure,
}

#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejected_until_ms: AtomicU64,
    times_ejected: AtomicU32,
}

impl OutlierState {
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Count an outcome; returns true when the detector asks for ejection
    /// (the cluster then applies `max_ejection_percent` and calls [`Self::eject`]).
    pub fn record(&self, policy: &OutlierPolicy, outcome: Outcome) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::LocalFailure => (true, true),
        };
        if !is_5xx {
            // Fast path for success: avoid writes when the counters are already zero.
            if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                self.consecutive_5xx.store(0, Ordering::Relaxed);
            }
            if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                self.consecutive_gateway.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let n5 = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let ngw = if is_gateway {
            self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        (policy.consecutive_5xx != 0 && n5 >= policy.consecutive_5xx)
            || (policy.consecutive_gateway_failure != 0
                && ngw >= policy.consecutive_gateway_failure)
    }

    /// Eject now; returns false if it was already ejected.
    pub fn eject(&self, policy: &OutlierPolicy, now_ms: u64) -> bool {
        if self.is_ejected(now_ms) {
            return false;
        }
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let dur = policy
            .base_ejection_time
            .saturating_mul(times)
            .min(MAX_EJECTION);
        self.ejected_until_ms
            .store(now_ms + dur.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 0,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 100,
        }
    }

    #[test]
    fn consecutive_5xx_ejects_and_success_resets() {
        let p = policy();
        let s = OutlierState::default();
        assert!(!s.record(&p, Outcome::Status(500)));
        assert!(!s.record(&p, Outcome::Status(500)));
        assert!(!s.record(&p, Outcome::Status(200)));
        assert!(!s.record(&p, Outcome::Status(500)));
        assert!(!s.record(&p, Outcome::LocalFailure));
        assert!(s.record(&p, Outcome::Status(503)));
        assert!(s.eject(&p, 1000));
        assert!(s.is_ejected(1000 + 9_999));
        assert!(!s.is_ejected(1000 + 10_000));
        // second ejection lasts twice as long
        assert!(s.eject(&p, 20_000));
        assert!(s.is_ejected(20_000 + 19_999));
    }
}
