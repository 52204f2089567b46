//! A future polled only when its own waker fired. A connection's task is
//! woken several times a request (the request head, the upstream answer,
//! the body), and `drive` polls every branch of its `select!` each time:
//! the drain watch's future, which seldom fires, took its `Notify`'s mutex
//! on every one of those polls. Wrapped in [`Woken`], it is polled once to
//! register and then only when the drain wakes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pub(crate) struct Woken<F> {
    fut: F,
    flag: Arc<Flag>,
}

/// Set by the inner future's waker; the task's own waker is passed on to.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> Woken<F> {
    pub(crate) fn new(fut: F) -> Self {
        let flag = Flag {
            // The first poll registers the inner future's interest.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        };
        Self {
            fut,
            flag: Arc::new(flag),
        }
    }
}

impl<F: Future + Unpin> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&this.flag));
        Pin::new(&mut this.fut).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn polls_the_inner_future_once_and_again_when_it_is_woken() {
        let (tx, mut rx) = tokio::sync::watch::channel(0u32);
        let polls = std::cell::Cell::new(0u32);
        let changed = std::pin::pin!(async {
            loop {
                polls.set(polls.get() + 1);
                rx.changed().await.unwrap();
                if *rx.borrow() == 2 {
                    return;
                }
            }
        });
        let mut woken = std::pin::pin!(Woken::new(changed));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            assert!(woken.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1, "polled only to register");
        tx.send(1).unwrap();
        assert!(woken.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 2, "woken, polled again");
        tx.send(2).unwrap();
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("the inner future completes once woken");
    }
}
