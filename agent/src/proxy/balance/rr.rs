//! Round robin: a shared atomic cursor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::proxy::cluster::endpoint::Endpoint;

#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick<'a>(
        &self,
        eps: &'a [Arc<Endpoint>],
        healthy: impl Fn(&Endpoint) -> bool,
    ) -> Option<&'a Arc<Endpoint>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        let picked = super::scan_from(eps, start, &healthy)?;
        Some(picked)
    }
}
