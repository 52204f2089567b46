//! Drain handles: a signal to stop accepting and finish gracefully, then a
//! grace period after which remaining connections are closed.

use std::time::Duration;

use tokio::sync::watch;

/// How long draining connections (a removed listener's, or every one at
/// shutdown) may finish their requests before they are closed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Held by whoever may start a drain.
pub struct DrainSignal {
    tx: watch::Sender<bool>,
    grace: Duration,
}

/// Held by listeners and connections.
#[derive(Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<bool>,
    pub grace: Duration,
}

pub fn channel(grace: Duration) -> (DrainSignal, DrainWatch) {
    let (tx, rx) = watch::channel(false);
    (DrainSignal { tx, grace }, DrainWatch { rx, grace })
}

impl DrainSignal {
    pub fn drain(&self) {
        // Stored even with no watcher yet: a later `watch()` sees it.
        self.tx.send_replace(true);
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
            grace: self.grace,
        }
    }
}

impl DrainWatch {
    /// Resolves once draining has started (or the signal is gone).
    pub async fn signaled(&mut self) {
        let _ = self.rx.wait_for(|d| *d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_taken_after_the_drain_sees_it() {
        // No watcher while draining starts (the runtime's hand-over signal
        // before any intercepted connection): the drain must still stick.
        let (signal, first) = channel(DRAIN_GRACE);
        drop(first);
        signal.drain();
        let mut late = signal.watch();
        tokio::time::timeout(Duration::from_secs(5), late.signaled())
            .await
            .expect("a watch made after the drain is signaled at once");
    }
}
