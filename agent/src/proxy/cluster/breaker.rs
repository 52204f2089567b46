//! Circuit breaker limits (Envoy's per-cluster thresholds), enforced with atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections = 0,
    Pending = 1,
    Requests = 2,
    Retries = 3,
}

#[derive(Debug)]
pub struct Breaker {
    max: [u32; 4],
    open: [AtomicU32; 4],
}

/// Holds one unit of a limit; released on drop.
pub struct Permit {
    breaker: Arc<Breaker>,
    limit: Limit,
}

impl Breaker {
    pub fn new(
        max_connections: u32,
        max_pending: u32,
        max_requests: u32,
        max_retries: u32,
    ) -> Self {
        Self {
            max: [max_connections, max_pending, max_requests, max_retries],
            open: Default::default(),
        }
    }

    /// Take one unit of `limit`, or `None` when it is at its maximum (overflow).
    pub fn try_acquire(self: &Arc<Self>, limit: Limit) -> Option<Permit> {
        let i = limit as usize;
        let max = self.max[i];
        self.open[i]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit {
                breaker: self.clone(),
                limit,
            })
    }

    pub fn open(&self, limit: Limit) -> u32 {
        self.open[limit as usize].load(Ordering::Relaxed)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.open[self.limit as usize].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_releases() {
        let b = Arc::new(Breaker::new(1, 1, 2, 0));
        let p = b.try_acquire(Limit::Connections).unwrap();
        assert!(b.try_acquire(Limit::Connections).is_none());
        drop(p);
        assert!(b.try_acquire(Limit::Connections).is_some());
        assert!(b.try_acquire(Limit::Retries).is_none());
        let _a = b.try_acquire(Limit::Requests).unwrap();
        let _b = b.try_acquire(Limit::Requests).unwrap();
        assert!(b.try_acquire(Limit::Requests).is_none());
        assert_eq!(b.open(Limit::Requests), 2);
    }
}
