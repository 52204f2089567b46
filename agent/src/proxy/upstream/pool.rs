//! Pools of idle HTTP/1.1 keep-alive connections (lock-free queue), each
//! with its one shared HTTP/2 connection: one per endpoint for the engine's
//! own connections, and one per endpoint and source ([`SourcePools`]) for
//! the connections a source makes (`egress`), so that a pooled connection
//! never carries another source's request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use super::egress::{Clear, Egress, EgressId};
use super::sender::Sender;

/// Idle connections kept per endpoint at most (also bounded by the
/// cluster's `max_connections`). The queue is preallocated (~48 bytes a
/// slot), so this bounds memory on nodes with thousands of endpoints; more
/// concurrent connections to one endpoint still work, the surplus is closed
/// when released instead of pooled.
pub const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Idle connections kept per endpoint and source at most: a source's pool
/// is made for each endpoint the source uses, so its preallocated queue is
/// kept smaller (64 slots, about 3 KiB, in the order of one connection's
/// own memory). One pod rarely holds more idle connections to one endpoint
/// than that; the surplus is closed when released, as above.
pub const MAX_IDLE_PER_SOURCE: usize = 64;

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
    /// Whose connections these are (`None`: the engine's own).
    egress: Option<Egress>,
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
            egress: None,
        }
    }

    /// An empty pool with this one's settings for `egress`'s connections
    /// (at most [`MAX_IDLE_PER_SOURCE`] idle).
    fn for_source(&self, egress: Egress) -> Self {
        Self {
            freed: Arc::clone(&self.freed),
            idle: ArrayQueue::new(self.idle.capacity().min(MAX_IDLE_PER_SOURCE)),
            idle_timeout: self.idle_timeout,
            max_requests_per_connection: self.max_requests_per_connection,
            h2: tokio::sync::Mutex::new(None),
            egress: Some(egress),
        }
    }

    /// Whether its source is gone ([`Egress::close`]): it pools nothing more.
    pub fn is_closed(&self) -> bool {
        self.egress.as_ref().is_some_and(Egress::is_closed)
    }

    /// Close one idle connection, if it has one (its `max_connections`
    /// place is free once its task ends, which notifies `freed`).
    pub fn evict_one(&self) -> bool {
        self.idle.pop().is_some()
    }

    /// Nothing idle, no shared HTTP/2 connection.
    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.h2.try_lock().is_ok_and(|h2| h2.is_none())
    }

    /// An idle connection that is still open and not past its idle timeout.
    pub fn checkout(self: &Arc<Self>) -> Option<Pooled> {
        if self.is_closed() {
            return None;
        }
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

impl Clear for Pool {
    /// Close every idle connection now (and drop the shared HTTP/2
    /// connection, which closes once its streams end).
    fn clear(&self) {
        while self.idle.pop().is_some() {}
        if let Ok(mut h2) = self.h2.try_lock() {
            h2.take();
        }
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
        if self.tx.is_h2()
            || self.tx.is_closed()
            || (max != 0 && self.used >= max)
            || self.pool.is_closed()
        {
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

/// An endpoint's pools of sources other than the engine ([`Egress`]), by
/// source. A source's pool is made when it first sends to the endpoint and
/// dropped by the cluster's sweep once it holds nothing and nothing holds
/// it, or once its source is closed; so their number is bounded by the
/// (source, endpoint) pairs in use. Reading is lock-free (a request looks
/// its pool up); a new pair copies the map.
#[derive(Default)]
pub struct SourcePools(ArcSwap<HashMap<EgressId, Arc<Pool>>>);

impl SourcePools {
    /// `egress`'s pool, made like `template` (the endpoint's own) if it has none.
    pub fn get(&self, egress: &Egress, template: &Pool) -> Arc<Pool> {
        let id = egress.id();
        if let Some(p) = self.0.load().get(&id) {
            return Arc::clone(p);
        }
        let fresh = Arc::new(template.for_source(egress.clone()));
        let previous = self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(id).or_insert_with(|| Arc::clone(&fresh));
            m
        });
        // Another request of the same source may have made one first.
        match previous.get(&id) {
            Some(p) => Arc::clone(p),
            None => {
                egress.adopt(&fresh);
                fresh
            }
        }
    }

    /// Close idle connections past their idle timeout, and drop the pools
    /// of closed sources and those that hold nothing and are in no one's
    /// hands (a request holds its pool while it runs, a connection in use
    /// holds it until released).
    pub fn sweep(&self) {
        let pools = self.0.load();
        for p in pools.values() {
            p.sweep();
        }
        let dead = |p: &Arc<Pool>| p.is_closed() || (Arc::strong_count(p) == 1 && p.is_empty());
        if !pools.values().any(dead) {
            return;
        }
        drop(pools);
        self.0.rcu(|m| {
            m.iter()
                .filter(|(_, p)| !dead(p))
                .map(|(k, p)| (*k, Arc::clone(p)))
                .collect::<HashMap<_, _>>()
        });
    }

    /// Close one idle connection of any source but `except`'s pool.
    pub fn evict_one(&self, except: &Arc<Pool>) -> bool {
        self.0
            .load()
            .values()
            .filter(|p| !Arc::ptr_eq(p, except))
            .any(|p| p.evict_one())
    }

    /// Idle connections of all sources.
    pub fn idle_count(&self) -> usize {
        self.0.load().values().map(|p| p.idle_count()).sum()
    }

    /// Sources with a pool.
    pub fn len(&self) -> usize {
        self.0.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.load().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use hyper_util::rt::TokioIo;
    use tokio::io::DuplexStream;

    use super::*;
    use crate::proxy::upstream::egress::tests::Counting;

    /// An open HTTP/1.1 sender (its peer end kept by the caller).
    async fn sender() -> (Sender, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .unwrap();
        tokio::spawn(conn);
        (Sender::H1(tx), theirs)
    }

    fn node_pool() -> Pool {
        Pool::new(Duration::from_secs(3600), 0, 1024, Arc::default())
    }

    fn pod(name: &str) -> Egress {
        Egress::new(name, Counting::default())
    }

    #[tokio::test]
    async fn a_source_has_one_pool_per_endpoint_of_its_own() {
        let node = Arc::new(node_pool());
        let sources = SourcePools::default();
        let (a, b) = (pod("ns/a"), pod("ns/b"));
        let pa = sources.get(&a, &node);
        assert!(Arc::ptr_eq(&pa, &sources.get(&a.clone(), &node)));
        let pb = sources.get(&b, &node);
        assert!(!Arc::ptr_eq(&pa, &pb));
        assert!(!Arc::ptr_eq(&pa, &node));
        assert_eq!(sources.len(), 2);
        // Smaller than the endpoint's own, with its settings.
        assert_eq!(pa.idle.capacity(), MAX_IDLE_PER_SOURCE);
        assert_eq!(node.idle.capacity(), MAX_IDLE_PER_ENDPOINT);
        assert_eq!(pa.idle_timeout, node.idle_timeout);
    }

    #[tokio::test]
    async fn a_connection_released_by_one_pod_is_never_another_pods() {
        let node = Arc::new(node_pool());
        let sources = SourcePools::default();
        let (a, b) = (pod("ns/a"), pod("ns/b"));
        let (tx, _peer) = sender().await;
        sources.get(&a, &node).fresh(tx).release();
        assert_eq!(sources.idle_count(), 1);
        assert!(sources.get(&b, &node).checkout().is_none(), "b took a's");
        assert!(node.checkout().is_none(), "the node took a's");
        assert!(sources.get(&a, &node).checkout().is_some());
    }

    #[tokio::test]
    async fn closing_a_source_closes_its_idle_connections_and_pools_nothing_more() {
        let node = Arc::new(node_pool());
        let sources = SourcePools::default();
        let (a, b) = (pod("ns/a"), pod("ns/b"));
        let (idle, _p1) = sender().await;
        let (busy, _p2) = sender().await;
        let (other, _p3) = sender().await;
        let pool_a = sources.get(&a, &node);
        pool_a.fresh(idle).release();
        let in_use = pool_a.fresh(busy);
        sources.get(&b, &node).fresh(other).release();
        drop(pool_a);
        a.close();
        assert_eq!(sources.idle_count(), 1, "only b's is left");
        // The request in flight finishes; its connection is not pooled.
        in_use.release();
        assert_eq!(sources.idle_count(), 1);
        assert!(sources.get(&a, &node).checkout().is_none());
        // The sweep drops the closed source's pool, keeps b's.
        sources.sweep();
        assert_eq!(sources.len(), 1);
        assert!(sources.get(&b, &node).checkout().is_some());
    }

    #[tokio::test]
    async fn the_sweep_drops_pools_that_hold_nothing_and_are_unused() {
        let node = Arc::new(node_pool());
        let sources = SourcePools::default();
        let (a, b, c) = (pod("ns/a"), pod("ns/b"), pod("ns/c"));
        let (tx, _peer) = sender().await;
        sources.get(&a, &node).fresh(tx).release();
        let held = sources.get(&b, &node);
        drop(sources.get(&c, &node));
        sources.sweep();
        // a keeps an idle connection, b's is in a request's hands, c's goes.
        assert_eq!(sources.len(), 2);
        drop(held);
        sources.sweep();
        assert_eq!(sources.len(), 1);
    }

    #[tokio::test]
    async fn eviction_takes_another_sources_idle_connection() {
        let node = Arc::new(node_pool());
        let sources = SourcePools::default();
        let (a, b) = (pod("ns/a"), pod("ns/b"));
        let (tx, _peer) = sender().await;
        let pool_a = sources.get(&a, &node);
        pool_a.fresh(tx).release();
        assert!(!sources.evict_one(&pool_a), "never its own");
        let pool_b = sources.get(&b, &node);
        assert!(sources.evict_one(&pool_b));
        assert_eq!(sources.idle_count(), 0);
    }
}
