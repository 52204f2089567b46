//! Fair shares of the shared proxy: every intercepted connection costs the
//! agent two descriptors (the pod's and weir's onward one) and some memory,
//! and one process serves every pod on the node, so each pod gets a budget
//! of open connections and of new connections per second, per direction,
//! and of HTTP requests in flight (outbound), and the node keeps descriptors for the agent's own work (pod source,
//! API watch, admin, BPF) that no flood can take. Near the node's cap (from
//! [`NODE_HIGH_WATERMARK_PERCENT`] of it) a pod holding more than its even
//! share of the node is refused first, so the pods that hold little still
//! get connections while the heavy one is held back and its idle
//! connections are asked to close (Envoy's overload manager stops
//! accepting for everyone; a shared proxy can tell who the load comes from). A connection over budget is reset at once, counted
//! against its pod and logged at a bounded rate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::pods::ConnectionLimits;
use crate::proxy::tls::failure::LogLimit;

/// Descriptors kept for the agent's own work, whatever the pods do.
pub const RESERVED_DESCRIPTORS: u64 = 512;
/// How often a pod over its node share asks its idle connections to close.
pub const SHED_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// From this share of the node's intercepted connections on, a pod above
/// its even share of the node is refused.
pub const NODE_HIGH_WATERMARK_PERCENT: u32 = 90;

/// Why a connection was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The pod has its `max-connections` open in this direction.
    PodConnections,
    /// The pod opened its `max-connection-rate` this second.
    PodRate,
    /// The node's intercepted connections would eat the reserved descriptors.
    Node,
    /// The node is near its cap and the pod holds more than its even share.
    NodeShare,
    /// The pod has its `max-requests` in flight (a request, answered 503).
    PodRequests,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::PodConnections => "pod_connections",
            Self::PodRate => "pod_rate",
            Self::Node => "node_descriptors",
            Self::NodeShare => "node_share",
            Self::PodRequests => "pod_requests",
        }
    }
}

/// Intercepted connections open on the node, against what the descriptor
/// limit allows after the reserve.
#[derive(Debug)]
pub struct NodeBudget {
    open: AtomicU32,
    max: u32,
    /// Pod budgets (a pod and a direction each) sharing the node.
    budgets: AtomicU32,
    /// Proxy CPU a pod may use without `weir.dev/max-cpu`.
    default_cpu_millicores: u32,
}

impl NodeBudget {
    /// For a process allowed `descriptors` open files: each intercepted
    /// connection costs two, after [`RESERVED_DESCRIPTORS`].
    pub fn for_descriptors(descriptors: u64) -> Self {
        let usable = descriptors.saturating_sub(RESERVED_DESCRIPTORS) / 2;
        Self {
            open: AtomicU32::new(0),
            max: u32::try_from(usable).unwrap_or(u32::MAX),
            budgets: AtomicU32::new(0),
            default_cpu_millicores: 1000,
        }
    }

    /// For a proxy with `workers` worker threads: by default a pod may use
    /// an eighth of them, at least a quarter of a core (250m with 2
    /// workers, 1 core with 8, 2 with 16: Istio's sidecar CPU limit). On
    /// two cores a pod flooding a route weir answers itself at 250m still
    /// gets 22,000 requests a second while its neighbour's p99 stays
    /// within 2x (`bench neighbours`); a pod that needs more is annotated.
    pub fn with_workers(self, workers: usize) -> Self {
        let eighth = u32::try_from(workers.saturating_mul(125)).unwrap_or(u32::MAX);
        Self {
            default_cpu_millicores: eighth.max(250),
            ..self
        }
    }

    /// `weir.dev/max-cpu`, else the node's default, in millicores.
    pub fn cpu_millicores(&self, annotated: Option<u32>) -> u32 {
        annotated.unwrap_or(self.default_cpu_millicores)
    }

    /// Whether a budget holding `held` connections may have the one just
    /// taken: below the high watermark any may; above it only one under its
    /// even share.
    fn may_grow(&self, held: u32) -> bool {
        let open = u64::from(self.open().saturating_sub(1));
        if open * 100 < u64::from(self.max) * u64::from(NODE_HIGH_WATERMARK_PERCENT) {
            return true;
        }
        let budgets = self.budgets.load(Ordering::Relaxed).max(1);
        held < self.max / budgets
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }
}

/// One pod's budget in one direction.
pub struct PodBudget {
    node: std::sync::Arc<NodeBudget>,
    open: AtomicU32,
    max_open: AtomicU32,
    rate: Mutex<TokenBucket>,
    requests: AtomicU32,
    max_requests: AtomicU32,
    /// Asks the pod's idle connections to close; bumped at most once a
    /// second while the pod is refused for holding over its node share.
    shed: tokio::sync::watch::Sender<u64>,
    last_shed: Mutex<Option<Instant>>,
    log: LogLimit,
}

impl std::fmt::Debug for PodBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodBudget")
            .field("open", &self.open)
            .field("max_open", &self.max_open)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

/// Held for the life of an admitted connection; gives its place back on drop.
#[derive(Debug)]
pub struct ConnPermit {
    budget: std::sync::Arc<PodBudget>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.budget.open.fetch_sub(1, Ordering::Relaxed);
        self.budget.node.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a request is in flight; gives its place back on drop.
#[derive(Debug)]
pub struct RequestPermit {
    budget: std::sync::Arc<PodBudget>,
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.budget.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PodBudget {
    pub fn new(node: std::sync::Arc<NodeBudget>, limits: ConnectionLimits) -> Self {
        node.budgets.fetch_add(1, Ordering::Relaxed);
        Self {
            node,
            open: AtomicU32::new(0),
            max_open: AtomicU32::new(limits.max_open),
            rate: Mutex::new(TokenBucket::new(limits.per_second)),
            requests: AtomicU32::new(0),
            max_requests: AtomicU32::new(limits.max_requests),
            shed: tokio::sync::watch::channel(0).0,
            last_shed: Mutex::new(None),
            log: LogLimit::default(),
        }
    }

    /// Changed annotations apply to the next connection.
    pub fn set_limits(&self, limits: ConnectionLimits) {
        self.max_open.store(limits.max_open, Ordering::Relaxed);
        self.max_requests
            .store(limits.max_requests, Ordering::Relaxed);
        if let Ok(mut rate) = self.rate.lock() {
            rate.set_rate(limits.per_second);
        }
    }

    /// A place for one more connection, or why not.
    pub fn admit(self: &std::sync::Arc<Self>) -> Result<ConnPermit, Refusal> {
        if !take(&self.open, self.max_open.load(Ordering::Relaxed)) {
            return Err(Refusal::PodConnections);
        }
        let in_rate = self
            .rate
            .lock()
            .map(|mut rate| rate.take(Instant::now()))
            .unwrap_or(true);
        // `open` counts this connection already.
        let held = self.open.load(Ordering::Relaxed).saturating_sub(1);
        let refusal = if !in_rate {
            Some(Refusal::PodRate)
        } else if !take(&self.node.open, self.node.max) {
            Some(Refusal::Node)
        } else if !self.node.may_grow(held) {
            self.node.open.fetch_sub(1, Ordering::Relaxed);
            self.ask_shed(Instant::now());
            Some(Refusal::NodeShare)
        } else {
            None
        };
        match refusal {
            None => Ok(ConnPermit {
                budget: std::sync::Arc::clone(self),
            }),
            Some(refusal) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                Err(refusal)
            }
        }
    }

    /// Fires when the pod's idle connections should close (it holds more
    /// than its share of a node near its cap).
    pub fn shed_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shed.subscribe()
    }

    /// Asks the pod's idle connections to close, at most once a second:
    /// each asked connection looks at its own idleness.
    fn ask_shed(&self, now: Instant) {
        let Ok(mut last) = self.last_shed.lock() else {
            return;
        };
        if last.is_some_and(|at| now.saturating_duration_since(at) < SHED_INTERVAL) {
            return;
        }
        *last = Some(now);
        self.shed.send_modify(|generation| *generation += 1);
    }

    /// A place for one more HTTP request in flight, or why not.
    pub fn admit_request(self: &std::sync::Arc<Self>) -> Result<RequestPermit, Refusal> {
        if take(&self.requests, self.max_requests.load(Ordering::Relaxed)) {
            Ok(RequestPermit {
                budget: std::sync::Arc::clone(self),
            })
        } else {
            Err(Refusal::PodRequests)
        }
    }

    /// `Some(n)` when a refusal may be logged now (`n` not logged since).
    pub fn log_due(&self) -> Option<u64> {
        self.log.admit()
    }

    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for PodBudget {
    fn drop(&mut self) {
        self.node.budgets.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One more of at most `max`, atomically.
fn take(counter: &AtomicU32, max: u32) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// New connections per second, with a burst of one second's worth.
#[derive(Debug)]
struct TokenBucket {
    per_second: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_second: u32) -> Self {
        Self {
            per_second,
            tokens: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn set_rate(&mut self, per_second: u32) {
        self.per_second = per_second;
        self.tokens = self.tokens.min(f64::from(per_second));
    }

    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.per_second);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn limits(max_open: u32, per_second: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_open,
            per_second,
            max_requests: 2,
        }
    }

    #[test]
    fn requests_in_flight_are_capped_and_given_back() {
        let node = Arc::new(NodeBudget::for_descriptors(1_000_000));
        let pod = Arc::new(PodBudget::new(Arc::clone(&node), limits(1, 1)));
        let first = pod.admit_request().unwrap();
        let _second = pod.admit_request().unwrap();
        assert_eq!(pod.admit_request().unwrap_err(), Refusal::PodRequests);
        drop(first);
        let _third = pod.admit_request().unwrap();
        pod.set_limits(ConnectionLimits {
            max_requests: 3,
            ..limits(1, 1)
        });
        assert!(
            pod.admit_request().is_ok(),
            "a raised limit applies at once"
        );
        assert_eq!(node.open(), 0, "requests take no connection places");
    }

    #[test]
    fn open_connections_are_capped_and_given_back() {
        let node = Arc::new(NodeBudget::for_descriptors(1_000_000));
        let pod = Arc::new(PodBudget::new(Arc::clone(&node), limits(2, 1000)));
        let a = pod.admit().unwrap();
        let _b = pod.admit().unwrap();
        assert_eq!(pod.admit().unwrap_err(), Refusal::PodConnections);
        assert_eq!(node.open(), 2);
        drop(a);
        assert!(pod.admit().is_ok());
        assert_eq!(pod.open(), 1, "the permit above was dropped at once");
    }

    #[test]
    fn the_rate_refills_over_a_second() {
        let mut bucket = TokenBucket::new(10);
        let start = bucket.last;
        let taken = (0..20).filter(|_| bucket.take(start)).count();
        assert_eq!(taken, 10, "a burst of one second's worth");
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
    }

    #[test]
    fn a_rate_refusal_gives_the_place_back() {
        let node = Arc::new(NodeBudget::for_descriptors(1_000_000));
        let pod = Arc::new(PodBudget::new(Arc::clone(&node), limits(100, 1)));
        let _first = pod.admit().unwrap();
        assert_eq!(pod.admit().unwrap_err(), Refusal::PodRate);
        assert_eq!((pod.open(), node.open()), (1, 1));
    }

    #[test]
    fn near_the_cap_the_pod_over_its_even_share_is_refused_first() {
        // Room for 20 connections; the high watermark is at 18.
        let node = Arc::new(NodeBudget::for_descriptors(RESERVED_DESCRIPTORS + 40));
        let heavy = Arc::new(PodBudget::new(Arc::clone(&node), limits(100, 1000)));
        let light = Arc::new(PodBudget::new(Arc::clone(&node), limits(100, 1000)));
        let mut held: Vec<ConnPermit> = (0..18).map(|_| heavy.admit().unwrap()).collect();
        let mut shed = heavy.shed_watch();
        assert_eq!(heavy.admit().unwrap_err(), Refusal::NodeShare);
        assert_eq!(heavy.open(), 18, "the refused place is given back");
        assert!(
            shed.has_changed().unwrap(),
            "its idle connections are asked to close"
        );
        shed.mark_unchanged();
        assert_eq!(heavy.admit().unwrap_err(), Refusal::NodeShare);
        assert!(!shed.has_changed().unwrap(), "at most once a second");
        assert!(!light.shed_watch().has_changed().unwrap());
        held.push(light.admit().unwrap());
        held.push(light.admit().unwrap());
        assert_eq!(
            light.admit().unwrap_err(),
            Refusal::Node,
            "the node is full"
        );
        drop(held.drain(..10));
        assert!(heavy.admit().is_ok(), "below the watermark again");
        drop(held);
        drop(light);
        assert_eq!(node.budgets.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_node_keeps_its_reserve_whatever_each_pod_may_have() {
        // 516 descriptors: 512 reserved, room for 2 connections.
        let node = Arc::new(NodeBudget::for_descriptors(RESERVED_DESCRIPTORS + 4));
        assert_eq!(node.max(), 2);
        let a = Arc::new(PodBudget::new(Arc::clone(&node), limits(100, 1000)));
        let b = Arc::new(PodBudget::new(Arc::clone(&node), limits(100, 1000)));
        let _a1 = a.admit().unwrap();
        let _b1 = b.admit().unwrap();
        assert_eq!(b.admit().unwrap_err(), Refusal::Node);
        assert_eq!((b.open(), node.open()), (1, 2));
    }
}
