//! Load balancing over a cluster's healthy endpoints.

mod least_request;
mod random;
mod rr;

use std::sync::Arc;

use crate::proxy::cluster::endpoint::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastRequest,
    Random,
}

pub enum Balancer {
    RoundRobin(rr::RoundRobin),
    LeastRequest,
    Random,
}

impl Balancer {
    pub fn new(p: Policy) -> Self {
        match p {
            Policy::RoundRobin => Self::RoundRobin(rr::RoundRobin::default()),
            Policy::LeastRequest => Self::LeastRequest,
            Policy::Random => Self::Random,
        }
    }

    /// Pick an endpoint for which `healthy` holds, or `None` if there is none.
    pub fn pick<'a>(
        &self,
        eps: &'a [Arc<Endpoint>],
        healthy: impl Fn(&Endpoint) -> bool,
    ) -> Option<&'a Arc<Endpoint>> {
        if eps.is_empty() {
            return None;
        }
        match self {
            Self::RoundRobin(rr) => rr.pick(eps, healthy),
            Self::LeastRequest => least_request::pick(eps, healthy),
            Self::Random => random::pick(eps, healthy),
        }
    }
}

/// First healthy endpoint scanning circularly from `start`.
fn scan_from<'a>(
    eps: &'a [Arc<Endpoint>],
    start: usize,
    healthy: &impl Fn(&Endpoint) -> bool,
) -> Option<&'a Arc<Endpoint>> {
    let n = eps.len();
    (0..n).map(|i| &eps[(start + i) % n]).find(|e| healthy(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::upstream::pool::Pool;
    use std::time::Duration;

    pub(super) fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    ([127, 0, 0, 1], 1000 + i).into(),
                    Pool::new(Duration::from_secs(1), 0, 8, Default::default()),
                ))
            })
            .collect()
    }

    #[test]
    fn round_robin_even_and_skips_unhealthy() {
        let e = eps(3);
        let b = Balancer::new(Policy::RoundRobin);
        let mut counts = [0; 3];
        for _ in 0..300 {
            let p = b.pick(&e, |_| true).unwrap();
            counts[usize::from(p.addr.port() - 1000)] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        for _ in 0..10 {
            assert_ne!(
                b.pick(&e, |x| x.addr.port() != 1001).unwrap().addr.port(),
                1001
            );
        }
        assert!(b.pick(&e, |_| false).is_none());
    }

    #[test]
    fn random_and_least_request_respect_health() {
        let e = eps(4);
        for p in [Policy::Random, Policy::LeastRequest] {
            let b = Balancer::new(p);
            for _ in 0..50 {
                assert_eq!(
                    b.pick(&e, |x| x.addr.port() == 1002).unwrap().addr.port(),
                    1002
                );
            }
            assert!(b.pick(&e, |_| false).is_none());
        }
    }
}
