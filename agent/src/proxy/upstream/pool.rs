//! Per-endpoint pool of idle HTTP/1.1 keep-alive connections (lock-free
//! queue), and the endpoint's one shared HTTP/2 connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use super::sender::Sender;

/// Idle connections kept per endpoint at most (also bounded by the
/// cluster's `max_connections`). The queue is preallocated (~48 bytes a
/// slot), so this bounds memory on nodes with thousands of endpoints; more
/// concurrent connections to one endpoint still work, the surplus is closed
/// when released instead of pooled.
pub const MAX_IDLE_PER_ENDPOINT: usize = 256;

pub struct Pool {
    idle: ArrayQueue<Idle>,
    /// Notified when a connection comes back (the cluster's "freed" signal).
    freed: Arc<Notify>,
    idle_timeout: Duration,
    /// 0 = unlimited.
    max_requests_per_connection: u32,
    /// HTTP/2 clusters: the multiplexed connection, shared by all requests;
    /// the lock is held while a new one is being opened.
    pub h2: tokio::sync::Mutex<
        Option<hyper::client::conn::http2::SendRequest<crate::proxy::body::request::ReqBody>>,
    >,
}

struct Idle {
    tx: Sender,
    since: Instant,
    used: u32,
}

/// A connection checked out of (or new for) a pool; [`Pooled::release`]
/// puts it back once its response has been read to the end.
pub struct Pooled {
    pub tx: Sender,
    used: u32,
    pool: Arc<Pool>,
}

impl Pool {
    pub fn new(
        idle_timeout: Duration,
        max_requests_per_connection: u32,
        max_idle: usize,
        freed: Arc<Notify>,
    ) -> Self {
        Self {
            freed,
            idle: ArrayQueue::new(max_idle.clamp(1, MAX_IDLE_PER_ENDPOINT)),
            idle_timeout,
            max_requests_per_connection,
            h2: tokio::sync::Mutex::new(None),
        }
    }

    /// An idle connection that is still open and not past its idle timeout.
    pub fn checkout(self: &Arc<Self>) -> Option<Pooled> {
        while let Some(i) = self.idle.pop() {
            let expired = !self.idle_timeout.is_zero() && i.since.elapsed() >= self.idle_timeout;
            if expired || i.tx.is_closed() {
                continue;
            }
            return Some(Pooled {
                tx: i.tx,
                used: i.used,
                pool: self.clone(),
            });
        }
        None
    }

    /// Wrap a freshly connected sender.
    pub fn fresh(self: &Arc<Self>, tx: Sender) -> Pooled {
        Pooled {
            tx,
            used: 0,
            pool: self.clone(),
        }
    }

    /// Close idle connections past the idle timeout. The queue is FIFO, so
    /// the oldest are at the front; the first live one is put back.
    pub fn sweep(&self) {
        if self.idle_timeout.is_zero() {
            return;
        }
        for _ in 0..self.idle.len() {
            let Some(i) = self.idle.pop() else { return };
            if i.tx.is_closed() || i.since.elapsed() >= self.idle_timeout {
                continue;
            }
            let _ = self.idle.push(i);
            return;
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }
}

impl Pooled {
    /// Count one request sent on this connection.
    pub fn mark_used(&mut self) {
        self.used = self.used.saturating_add(1);
    }

    /// Return the connection for reuse (dropped instead when closed, full,
    /// or past `max_requests_per_connection`).
    pub fn release(self) {
        let max = self.pool.max_requests_per_connection;
        // An HTTP/2 sender is a clone of the shared connection's.
        if self.tx.is_h2() || self.tx.is_closed() || (max != 0 && self.used >= max) {
            return;
        }
        let idle = Idle {
            tx: self.tx,
            since: Instant::now(),
            used: self.used,
        };
        if self.pool.idle.push(idle).is_ok() {
            // wake one request waiting at max_connections
            self.pool.freed.notify_one();
        }
    }
}
