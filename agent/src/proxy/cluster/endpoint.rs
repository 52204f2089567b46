//! One upstream endpoint: address, in-flight count, health and idle pools
//! (the engine's own, and one per source that sends to it).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::outlier::OutlierState;
use crate::proxy::upstream::egress::Egress;
use crate::proxy::upstream::pool::{Pool, SourcePools};

pub struct Endpoint {
    pub addr: SocketAddr,
    pub active_requests: AtomicU32,
    pub outlier: OutlierState,
    /// Connections from the engine's own network namespace.
    pub pool: Arc<Pool>,
    /// Connections of each [`Egress`] (an enrolled pod's).
    pub sources: SourcePools,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, pool: Pool) -> Self {
        Self {
            addr,
            active_requests: AtomicU32::new(0),
            outlier: OutlierState::default(),
            pool: Arc::new(pool),
            sources: SourcePools::default(),
        }
    }

    /// The pool of requests from `egress` (the engine's own without one).
    pub fn pool_for(&self, egress: Option<&Egress>) -> Cow<'_, Arc<Pool>> {
        match egress {
            None => Cow::Borrowed(&self.pool),
            Some(e) => Cow::Owned(self.sources.get(e, &self.pool)),
        }
    }

    /// Close pooled connections past their idle timeout; drop the pools of
    /// sources gone or unused.
    pub fn sweep(&self) {
        self.pool.sweep();
        self.sources.sweep();
    }

    /// Idle connections, every source's.
    pub fn idle_count(&self) -> usize {
        self.pool.idle_count() + self.sources.idle_count()
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
