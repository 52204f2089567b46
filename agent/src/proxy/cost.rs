//! Who pays for a task's CPU. What embeds the engine may charge a
//! connection's task to someone (interception: the pod it serves,
//! `enroll::cpu`); the tasks the engine spawns on behalf of that task
//! (an upstream connection's driver) are then charged to the same payer,
//! or the work a pod causes would escape its share whenever it is done
//! in a task of its own. The payer of the task being polled is kept in a
//! thread-local while it runs, as a tracing span is.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A spawned task, boxed.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Someone a task's CPU is charged to.
pub trait Payer: Send + Sync + 'static {
    /// `task`, spawned on behalf of a task this payer pays for, made to
    /// be charged to it too.
    fn charge(self: Arc<Self>, task: Task) -> Task;

    /// Takes `relay` to run where this payer runs its byte relays
    /// ([`relay`]), or gives it back when it has no such place.
    fn relay(self: Arc<Self>, relay: Task) -> Result<(), Task> {
        Err(relay)
    }
}

thread_local! {
    static PAYER: RefCell<Option<Arc<dyn Payer>>> = const { RefCell::new(None) };
}

/// Runs `poll` (one poll of a task) with `payer` as the payer of what it
/// spawns; the previous payer is back afterwards, also when nested, and
/// also when `poll` panics (tokio catches a task's panic and the worker
/// goes on: it must not go on charging the next tasks' spawns to this
/// payer).
pub fn paying<R>(payer: &Arc<dyn Payer>, poll: impl FnOnce() -> R) -> R {
    let _restore = Restore(PAYER.with(|p| p.replace(Some(Arc::clone(payer)))));
    poll()
}

/// Puts the payer it holds back as the thread's payer when dropped.
struct Restore(Option<Arc<dyn Payer>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        PAYER.with(|p| *p.borrow_mut() = previous);
    }
}

/// Spawns `task`, charged to the payer of the task spawning it, if any.
pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    match PAYER.with(|p| p.borrow().clone()) {
        Some(payer) => drop(tokio::spawn(payer.charge(Box::pin(task)))),
        None => drop(tokio::spawn(task)),
    }
}

/// Runs `relay`, a connection's byte relay (long-lived, woken by its
/// sockets), where the payer of the calling task runs its relays: an
/// enrolled pod runs all of its own in one task that polls a few a turn,
/// so a pod whose thousands of connections talk at once puts one task in
/// the workers' queues ahead of its neighbours', not thousands
/// (`enroll::cpu`). Without such a payer it runs here. The relay keeps the
/// caller's span and ends when the caller stops waiting for it; `None`:
/// it was dropped unfinished (its payer's relay task ended: a bug, or the
/// runtime shutting down).
pub async fn relay<R: Send + 'static>(
    relay: impl Future<Output = R> + Send + 'static,
) -> Option<R> {
    let relay = tracing::Instrument::in_current_span(relay);
    let Some(payer) = PAYER.with(|p| p.borrow().clone()) else {
        return Some(relay.await);
    };
    let (mut tx, rx) = tokio::sync::oneshot::channel();
    let task: Task = Box::pin(async move {
        tokio::select! {
            biased;
            () = tx.closed() => {}
            r = relay => drop(tx.send(r)),
        }
    });
    match payer.relay(task) {
        Ok(()) => rx.await.ok(),
        Err(task) => {
            task.await;
            rx.await.ok()
        }
    }
}

/// hyper's executor for what a served connection spawns (its HTTP/2
/// streams, each a task of its own): charged as [`spawn`] charges, so a
/// pod's HTTP/2 requests are its cost, not the node's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Charging;

impl<F> hyper::rt::Executor<F> for Charging
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        spawn(async move {
            task.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the tasks it was asked to charge.
    struct Counting(AtomicUsize);

    impl Payer for Counting {
        fn charge(self: Arc<Self>, task: Task) -> Task {
            self.0.fetch_add(1, Ordering::SeqCst);
            task
        }
    }

    #[tokio::test]
    async fn what_hyper_spawns_while_paying_is_charged_to_the_payer() {
        use hyper::rt::Executor;
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let payer: Arc<dyn Payer> = counting.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        paying(&payer, || {
            Charging.execute(async move { tx.send(()).unwrap() })
        });
        rx.await.unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn tasks_spawned_while_paying_are_charged_to_the_payer() {
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let payer: Arc<dyn Payer> = counting.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        paying(&payer, || spawn(async move { tx.send(()).unwrap() }));
        rx.await.unwrap();
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        spawn(async {});
        assert_eq!(counting.0.load(Ordering::SeqCst), 1, "not paying any more");
        let inner: Arc<dyn Payer> = Arc::new(Counting(AtomicUsize::new(0)));
        paying(&payer, || {
            paying(&inner, || {});
            spawn(async {});
        });
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            2,
            "the outer payer is back"
        );
    }

    #[tokio::test]
    async fn a_poll_that_panics_leaves_no_payer_behind() {
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let payer: Arc<dyn Payer> = counting.clone();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            paying(&payer, || panic!("a task's bug (expected by this test)"))
        }));
        assert!(panicked.is_err());
        spawn(async {});
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            0,
            "the worker's next spawns are not charged to the task that panicked"
        );
    }
}
