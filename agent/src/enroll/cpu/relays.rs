//! A pod's byte relays (opaque TCP and TLS passthrough splices), all run by
//! one task of the pod's, a few a turn.
//!
//! Each intercepted connection is a tokio task of its own, and tokio runs
//! ready tasks first come, first served. A pod holding thousands of opaque
//! connections that all talk at once (a burst of lines every second) puts
//! thousands of tasks in the workers' queues in one look at the sockets; a
//! neighbour's request woken in the same look waits behind as many of them
//! as came first. The pod's CPU share bounds how long those polls may do
//! real work (its burst), but each held one is still a poll, and the
//! neighbour waited the burst plus the herd's polls.
//!
//! Here a relay, once its connection is known to be one, moves into its
//! pod's relay task, which polls at most [`RELAYS_PER_TURN`] of them each
//! time it runs and then goes to the back of the queue: whatever wakes, the
//! pod's relays are one task among the others', served in turn, and the
//! pod's CPU share holds that one task back as it would a connection's.
//! The relay task exists only while the pod has relays.
//!
//! Bound: one entry per live relay, and a relay is an admitted connection
//! (`weir.dev/max-connections`); relays waiting to be taken in are moved in
//! at the relay task's next poll.
//!
//! Cost: all of a pod's relays run on one worker at a time, so one pod's
//! opaque traffic moves at most one core's worth of bytes; its default
//! share of the proxy's CPU is far less than that.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::proxy::cost::Task;

/// Relays polled at most in one turn of a pod's relay task. A relay's poll
/// is a read and a write (about 10 µs with their wake-ups), so a neighbour
/// woken behind the pod's turn waits well under a millisecond.
pub const RELAYS_PER_TURN: u32 = 8;

thread_local! {
    /// Polls left in the turn of the relay task being polled on this thread.
    static TURN_LEFT: Cell<u32> = const { Cell::new(0) };
}

/// The relays of one pod not yet taken in by its relay task.
#[derive(Default)]
pub(super) struct Relays {
    inbox: Mutex<Inbox>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Relays")
            .field("waiting", &inbox.new.len())
            .field("running", &inbox.running)
            .finish()
    }
}

#[derive(Default)]
struct Inbox {
    new: Vec<Task>,
    /// The relay task's, while it waits.
    waker: Option<Waker>,
    /// A relay task runs (it ends, under this lock, once it has nothing).
    running: bool,
}

impl Relays {
    /// Hands `relay` to the pod's relay task; when none runs, returns the
    /// new one, for the caller to spawn as the pod's work.
    pub(super) fn add(self: &Arc<Self>, relay: Task) -> Option<RelayTask> {
        let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.new.push(relay);
        if inbox.running {
            let waker = inbox.waker.take();
            drop(inbox);
            if let Some(w) = waker {
                w.wake();
            }
            return None;
        }
        inbox.running = true;
        Some(RelayTask {
            relays: Arc::clone(self),
            running: FuturesUnordered::new(),
            ended: false,
        })
    }
}

/// The task that runs a pod's relays.
pub(super) struct RelayTask {
    relays: Arc<Relays>,
    running: FuturesUnordered<Turn>,
    /// It ended with nothing left (and a new one may run already).
    ended: bool,
}

impl Future for RelayTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            {
                let mut inbox = this.relays.inbox.lock().unwrap_or_else(|p| p.into_inner());
                if this.running.is_empty() && inbox.new.is_empty() {
                    inbox.running = false;
                    inbox.waker = None;
                    this.ended = true;
                    return Poll::Ready(());
                }
                for task in inbox.new.drain(..) {
                    this.running.push(Turn(task));
                }
                if !inbox
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inbox.waker = Some(cx.waker().clone());
                }
            }
            let _turn = TurnGuard::start();
            // FuturesUnordered polls the relays that woke; one denied its
            // poll (the turn is used up) wakes itself, and after two such it
            // wakes this task and gives way: the back of the queue.
            loop {
                match this.running.poll_next_unpin(cx) {
                    Poll::Ready(Some(())) => {}
                    Poll::Ready(None) => break,
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
    }
}

impl Drop for RelayTask {
    /// Dropped before it ended (the runtime shutting down, or a bug that
    /// panicked outside a relay): the next relay starts a new task, and relays
    /// handed in meanwhile are dropped, so their connections close rather
    /// than wait for a task that will not come.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut inbox = self.relays.inbox.lock().unwrap_or_else(|p| p.into_inner());
        inbox.running = false;
        inbox.waker = None;
        inbox.new.clear();
    }
}

/// Sets the turn's polls while the relays are polled, and clears it after.
struct TurnGuard;

impl TurnGuard {
    fn start() -> Self {
        TURN_LEFT.with(|t| t.set(RELAYS_PER_TURN));
        Self
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        TURN_LEFT.with(|t| t.set(0));
    }
}

/// A relay within its pod's relay task: polled while the turn lasts.
struct Turn(Task);

impl Future for Turn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let left = TURN_LEFT.with(Cell::get);
        if left == 0 {
            // Its wake-up is kept: it is polled in the next turn.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        TURN_LEFT.with(|t| t.set(left - 1));
        // A relay that panics ends alone (its connection closes), as it
        // did as a task of its own: not the pod's other relays with it.
        let relay = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| relay.as_mut().poll(cx))) {
            Ok(polled) => polled,
            Err(_) => {
                log::error!("a connection's byte relay panicked; its connection is closed");
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A relay that is ready `polls` times (waking itself, as a socket
    /// with more bytes would) before it ends, counting its polls.
    fn talker(polls: usize, count: Arc<AtomicUsize>) -> Task {
        let mut left = polls;
        Box::pin(std::future::poll_fn(move |cx| {
            count.fetch_add(1, Ordering::SeqCst);
            left -= 1;
            if left == 0 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }))
    }

    /// The pod's relays, all woken at once (a burst of lines on its
    /// opaque connections), take turns of a few with a neighbour's task
    /// woken after them: the neighbour waits behind one turn, not behind
    /// all of them (as it did when each relay was a task of its own).
    #[tokio::test]
    async fn a_pods_relays_woken_at_once_take_turns_with_a_neighbour() {
        let relays = Arc::new(Relays::default());
        let (go, ready) = tokio::sync::watch::channel(false);
        let ran = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut task = None;
        for _ in 0..200 {
            let (mut ready, ran, waiting) = (ready.clone(), Arc::clone(&ran), Arc::clone(&waiting));
            let relay = relays.add(Box::pin(async move {
                waiting.fetch_add(1, Ordering::SeqCst);
                let _ = ready.wait_for(|go| *go).await;
                ran.fetch_add(1, Ordering::SeqCst);
            }));
            task = task.or(relay);
        }
        let task = tokio::spawn(task.expect("the first relay starts the relay task"));
        // Every relay polled once and waiting (25 turns of 8).
        for _ in 0..10_000 {
            if waiting.load(Ordering::SeqCst) == 200 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(waiting.load(Ordering::SeqCst), 200);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        go.send_replace(true);
        let neighbour = {
            let ran = Arc::clone(&ran);
            tokio::spawn(async move { ran.load(Ordering::SeqCst) })
        };
        let seen = neighbour.await.unwrap();
        task.await.unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            200,
            "every relay ran to its end"
        );
        assert!(
            seen <= RELAYS_PER_TURN as usize,
            "the neighbour waited behind {seen} relays"
        );
    }

    /// A relay that panics closes its own connection only: the pod's other
    /// relays run on, and so do relays handed in later.
    #[tokio::test]
    async fn a_relay_that_panics_ends_alone() {
        let relays = Arc::new(Relays::default());
        let polled = Arc::new(AtomicUsize::new(0));
        let task = relays
            .add(Box::pin(async {
                panic!("a relay's bug (expected by this test)");
            }))
            .unwrap();
        assert!(relays.add(talker(3, Arc::clone(&polled))).is_none());
        tokio::spawn(task).await.expect("the relay task survived");
        assert_eq!(polled.load(Ordering::SeqCst), 3);
        let again = relays.add(talker(1, Arc::clone(&polled)));
        tokio::spawn(again.expect("a new relay task"))
            .await
            .unwrap();
        assert_eq!(polled.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn the_relay_task_ends_with_its_relays_and_a_new_one_starts_after() {
        let relays = Arc::new(Relays::default());
        let polled = Arc::new(AtomicUsize::new(0));
        let task = relays.add(talker(2, Arc::clone(&polled))).unwrap();
        assert!(
            relays.add(talker(2, Arc::clone(&polled))).is_none(),
            "one runs"
        );
        tokio::spawn(task).await.unwrap();
        assert_eq!(polled.load(Ordering::SeqCst), 4);
        let again = relays.add(talker(1, Arc::clone(&polled)));
        tokio::spawn(again.expect("none runs any more"))
            .await
            .unwrap();
        assert_eq!(polled.load(Ordering::SeqCst), 5);
    }

    /// A relay added while the relay task waits wakes it.
    #[tokio::test]
    async fn a_relay_added_later_wakes_the_relay_task() {
        let relays = Arc::new(Relays::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = relays
            .add(Box::pin(async move {
                let _ = rx.await;
            }))
            .unwrap();
        let task = tokio::spawn(task);
        tokio::task::yield_now().await;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        assert!(
            relays
                .add(Box::pin(async move {
                    let _ = done_tx.send(());
                }))
                .is_none()
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), done_rx)
            .await
            .expect("the later relay never ran")
            .unwrap();
        drop(tx);
        task.await.unwrap();
    }
}
