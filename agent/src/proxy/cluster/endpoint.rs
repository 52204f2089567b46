//! One upstream endpoint: address, in-flight count, health and idle pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::outlier::OutlierState;
use crate::proxy::upstream::pool::Pool;

pub struct Endpoint {
    pub addr: SocketAddr,
    pub active_requests: AtomicU32,
    pub outlier: OutlierState,
    pub pool: Arc<Pool>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, pool: Pool) -> Self {
        Self {
            addr,
            active_requests: AtomicU32::new(0),
            outlier: OutlierState::default(),
            pool: Arc::new(pool),
        }
    }

    pub fn active(&self) -> u32 {
        self.active_requests.load(Ordering::Relaxed)
    }
}

/// Counts one in-flight request on an endpoint (least-request balancing).
pub struct ActiveRequest(Arc<Endpoint>);

impl ActiveRequest {
    pub fn new(ep: Arc<Endpoint>) -> Self {
        ep.active_requests.fetch_add(1, Ordering::Relaxed);
        Self(ep)
    }

    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}
