//! Drain handles: a signal to stop accepting and finish gracefully, then a
//! grace period after which remaining connections are closed. The grace
//! travels with the signal: a listener removed by a reload drains for
//! [`DRAIN_GRACE`], a shutdown for the operator's `--drain-time`.

use std::time::Duration;

use tokio::sync::watch;

/// How long a removed listener's connections may finish their requests
/// before they are closed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Held by whoever may start a drain.
pub struct DrainSignal {
    /// `Some(grace)` once draining.
    tx: watch::Sender<Option<Duration>>,
    grace: Duration,
}

/// Held by listeners and connections.
#[derive(Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<Option<Duration>>,
}

pub fn channel(grace: Duration) -> (DrainSignal, DrainWatch) {
    let (tx, rx) = watch::channel(None);
    (DrainSignal { tx, grace }, DrainWatch { rx })
}

impl DrainSignal {
    /// Drain with the grace this signal was made with.
    pub fn drain(&self) {
        self.drain_within(self.grace);
    }

    /// Drain, closing what is still open after `grace`. A second call
    /// changes nothing: connections already draining keep their deadline.
    pub fn drain_within(&self, grace: Duration) {
        // Stored even with no watcher yet: a later `watch()` sees it.
        self.tx.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(grace);
            true
        });
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }
}

impl DrainWatch {
    /// Resolves once draining has started, with the grace the connection
    /// has left to finish; pends for good if the signal is dropped unsent
    /// (nobody can start a drain any more).
    pub async fn signaled(&mut self) -> Duration {
        let grace = match self.rx.wait_for(Option::is_some).await {
            Ok(grace) => Some(grace.unwrap_or(DRAIN_GRACE)),
            Err(_) => None,
        };
        match grace {
            Some(grace) => grace,
            None => std::future::pending().await,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// HTTP/1: once draining, a keep-alive connection closes after its next
    /// response, which says so (`connection: close`, RFC 9112 9.6), rather
    /// than being closed while idle, where a request the client is already
    /// sending would be lost. The client opens its next connection to
    /// whoever listens then (the successor, or the destination itself).
    /// A `101 Switching Protocols` keeps its `connection: upgrade`: the
    /// connection becomes the upgraded protocol's, which ends on its own.
    pub fn close_after<B>(&self, resp: &mut http::Response<B>) {
        if self.is_draining() && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }

    /// Resolves when the grace of a started drain has run out.
    pub async fn expired(&mut self) {
        let grace = self.signaled().await;
        tokio::time::sleep(grace).await;
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
        signal.drain_within(Duration::from_secs(7));
        let mut late = signal.watch();
        let grace = tokio::time::timeout(Duration::from_secs(5), late.signaled())
            .await
            .expect("a watch made after the drain is signaled at once");
        assert_eq!(grace, Duration::from_secs(7));
    }

    #[test]
    fn draining_closes_after_a_response_but_not_an_upgrade() {
        let (signal, watch) = channel(DRAIN_GRACE);
        let mut plain = http::Response::new(());
        watch.close_after(&mut plain);
        assert!(plain.headers().get(http::header::CONNECTION).is_none());
        signal.drain();
        watch.close_after(&mut plain);
        assert_eq!(plain.headers()[http::header::CONNECTION], "close");
        let mut upgrade = http::Response::builder()
            .status(http::StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .body(())
            .unwrap();
        watch.close_after(&mut upgrade);
        assert_eq!(upgrade.headers()[http::header::CONNECTION], "upgrade");
    }

    #[tokio::test]
    async fn the_first_drain_sets_the_deadline() {
        let (signal, mut watch) = channel(DRAIN_GRACE);
        signal.drain_within(Duration::from_secs(3));
        signal.drain();
        assert_eq!(watch.signaled().await, Duration::from_secs(3));
    }
}
