//! A pod's connection task, charged for the CPU its polls take and held
//! back while the pod is over its rate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use super::turns::{TaskId, Wait, next_task_id};
use super::{CpuCounters, CpuShare};
use crate::proxy::cost::{self, Payer};

/// A pod's share with where its use is counted: what its tasks pay with.
pub(super) struct Account {
    pub(super) share: Arc<CpuShare>,
    pub(super) counters: Option<CpuCounters>,
}

impl Payer for Account {
    /// Charged, never held back: a spawned task (a pooled upstream
    /// connection's driver) may later carry other pods' requests, which
    /// must not wait for this pod's debt. Its cost holds back this pod's
    /// own connections instead.
    fn charge(self: Arc<Self>, task: cost::Task) -> cost::Task {
        let mut charged = Charged::new(task, self);
        charged.holds = false;
        Box::pin(charged)
    }

    /// Into the pod's relay task, started (as the pod's own work, held
    /// back with its connections) when none runs.
    fn relay(self: Arc<Self>, relay: cost::Task) -> Result<(), cost::Task> {
        if let Some(task) = self.share.relays.add(relay) {
            drop(tokio::spawn(Charged::new(task, self)));
        }
        Ok(())
    }
}

/// A task whose polls are charged to a pod's [`CpuShare`].
pub struct Charged<F> {
    task: Pin<Box<F>>,
    account: Arc<Account>,
    /// The same account, as what the tasks it spawns are charged to.
    payer: Arc<dyn Payer>,
    /// Whether the pod's debt holds this task back (its own connections)
    /// or is only added to (tasks spawned for it).
    holds: bool,
    /// Its place in the pod's line of held tasks.
    id: TaskId,
    /// Held back since then (and waiting in the pod's line, or keeping its
    /// timer).
    held_since: Option<Instant>,
    /// The pod's timer, while this task keeps it.
    timer: Option<Pin<Box<Sleep>>>,
    /// It let the other ready tasks go first, and runs at its next poll.
    yielded: bool,
    /// It took the line's turn (or the timer) for the poll under way and
    /// must hand it on after: kept here, not in a local, so that a poll
    /// that panics (tokio drops the task) still hands it on in `drop`.
    owes_pass: bool,
}

impl<F> Charged<F> {
    pub(super) fn new(task: F, account: Arc<Account>) -> Self {
        Self {
            task: Box::pin(task),
            payer: account.clone(),
            account,
            holds: true,
            id: next_task_id(),
            held_since: None,
            timer: None,
            yielded: false,
            owes_pass: false,
        }
    }
}

impl<F: Future> Future for Charged<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let share = &this.account.share;
        let start = Instant::now();
        if this.holds {
            if let Some(until) = share.held_until(start) {
                this.held_since.get_or_insert(start);
                if share.turns.wait(this.id, cx.waker()) == Wait::Timer {
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                    timer.as_mut().reset(until);
                    if timer.as_mut().poll(cx).is_ready() {
                        // Due already: the clock moved on since `start`.
                        cx.waker().wake_by_ref();
                    }
                }
                return Poll::Pending;
            }
            if share.is_busy(start) && !std::mem::take(&mut this.yielded) {
                // Within its burst but well above its rate: its tasks run
                // after every other ready one (tokio runs a yielded task
                // once its worker has looked at the sockets and has nothing
                // else to do), so a neighbour's request, even one whose
                // socket is not yet seen ready, does not queue behind a
                // busy pod's work. A held task keeps its place (and its
                // turn or timer) until it runs.
                this.yielded = true;
                let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                return Poll::Pending;
            }
            let was_held = this.held_since.take();
            if let (Some(since), Some(c)) = (was_held, &this.account.counters) {
                c.throttled.inc_by((start - since).as_secs_f64());
            }
            this.timer = None;
            this.yielded = false;
            this.owes_pass = share.turns.start(this.id, was_held.is_some());
        }
        let task = &mut this.task;
        let polled = cost::paying(&this.payer, || task.as_mut().poll(cx));
        let end = Instant::now();
        let used = end - start;
        share.charge(used, end);
        if let Some(c) = &this.account.counters {
            c.used.inc_by(used.as_secs_f64());
        }
        if std::mem::take(&mut this.owes_pass) {
            share.turns.pass(share.held_until(end).is_some());
        }
        polled
    }
}

impl<F> Drop for Charged<F> {
    fn drop(&mut self) {
        if self.holds {
            let turns = &self.account.share.turns;
            turns.leave(self.id, self.held_since.is_some());
            if self.owes_pass {
                // Its poll panicked between taking the turn and passing it.
                turns.pass(false);
            }
        }
    }
}
