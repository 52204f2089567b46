//! A downstream connection's activity: bytes counted and the last activity
//! time recorded (for the idle and header-read timeouts), as a [`Meter`]
//! layered on the one stream wrapper.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use prometheus::IntCounter;

use crate::proxy::cluster::outlier::now_ms;
use crate::proxy::io::Meter;

/// State shared by a connection's IO wrapper, its service and its idle timer.
#[derive(Default)]
pub struct ConnShared {
    pub last_activity_ms: AtomicU64,
    /// When the first byte of a not yet parsed request head arrived (0: none).
    pub head_started_ms: AtomicU64,
    pub in_flight: AtomicU32,
}

impl ConnShared {
    /// A connection just accepted: its first request head is due from now,
    /// so one that stays silent is closed at the header-read deadline (as
    /// nginx's `client_header_timeout` does; Envoy starts the clock at the
    /// first byte, which lets a silent connection hold its descriptors for
    /// the idle timeout). Later heads are timed from their first byte.
    pub fn opened() -> Self {
        let shared = Self::default();
        shared.touch();
        shared.head_started_ms.store(now_ms(), Ordering::Relaxed);
        shared
    }

    pub fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// The listener's meter of a downstream connection ([`crate::proxy::io::Io`]):
/// bytes counted into the listener's counters, and the activity the
/// watchdog reads (the last byte either way, the start of a request head).
pub struct Activity {
    shared: Arc<ConnShared>,
    rx: IntCounter,
    tx: IntCounter,
}

impl Activity {
    pub fn new(shared: Arc<ConnShared>, rx: IntCounter, tx: IntCounter) -> Self {
        shared.touch();
        Self { shared, rx, tx }
    }
}

impl Meter for Activity {
    fn read(&self, n: usize) {
        self.rx.inc_by(n as u64);
        let now = now_ms().max(1);
        let sh = &self.shared;
        sh.last_activity_ms.store(now, Ordering::Relaxed);
        if sh.in_flight.load(Ordering::Relaxed) == 0
            && sh.head_started_ms.load(Ordering::Relaxed) == 0
        {
            sh.head_started_ms.store(now, Ordering::Relaxed);
        }
    }

    fn wrote(&self, n: usize) {
        self.tx.inc_by(n as u64);
        self.shared.touch();
    }
}
