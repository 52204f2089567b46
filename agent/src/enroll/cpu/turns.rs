//! The order in which a pod's held-back tasks run again.
//!
//! When a pod goes over its rate, every one of its connections that wakes
//! is held. Giving each a timer of its own made them all fire together when
//! the debt was paid (thousands, for a pod holding thousands of opaque
//! connections): each was polled, most only to find the pod over its rate
//! again and re-arm their timer, and the neighbours' tasks queued behind
//! that herd on the same worker. Here one held task keeps the pod's only
//! timer; the others wait in line, each woken in turn by the one before it
//! once that one has run, so a release costs a task at a time and the
//! neighbours' tasks run in between.
//!
//! Bound: one line entry per live held task of the pod (at most its open
//! connections, `weir.dev/max-connections`), plus stale entries that are
//! compacted away when they outnumber the live ones.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Waker;

/// Names a charged task within its pod's line.
pub(super) type TaskId = u64;

/// Ids start at 1: 0 is "no task".
pub(super) fn next_task_id() -> TaskId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How a held task waits.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Wait {
    /// With the pod's timer: it wakes when the debt is paid, and starts the
    /// line moving again.
    Timer,
    /// In line, woken by the task before it.
    InLine,
}

/// Beyond this many stale entries over the live ones, the line is compacted.
const STALE_SLACK: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Turns {
    line: Mutex<Line>,
    /// The task woken to take its turn (0: none). Read on every poll of the
    /// pod's tasks, so kept out of the lock.
    baton: AtomicU64,
}

#[derive(Debug, Default)]
struct Line {
    /// Waiting tasks, first come first served. An id with no waker is stale
    /// (the task ran or ended since), and is skipped.
    order: VecDeque<TaskId>,
    wakers: HashMap<TaskId, Waker>,
    /// The held task whose timer fires when the pod's debt is paid.
    timer: Option<TaskId>,
}

impl Turns {
    /// `task` is held back: it keeps the pod's timer if no task does, or
    /// waits in line to be woken.
    pub(super) fn wait(&self, task: TaskId, waker: &Waker) -> Wait {
        self.take_baton(task);
        let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        if line.timer.is_none_or(|t| t == task) {
            line.timer = Some(task);
            line.wakers.remove(&task);
            return Wait::Timer;
        }
        match line.wakers.get_mut(&task) {
            Some(known) => known.clone_from(waker),
            None => {
                line.wakers.insert(task, waker.clone());
                line.order.push_back(task);
                line.compact_if_stale();
            }
        }
        Wait::InLine
    }

    /// `task` is about to run; whether it holds the turn (woken by the
    /// line, or by the pod's timer), and so must wake the next task after
    /// its poll ([`Turns::pass`]).
    pub(super) fn start(&self, task: TaskId, was_held: bool) -> bool {
        let baton = self.take_baton(task);
        if !was_held {
            return baton;
        }
        let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
        line.forget(task) || baton
    }

    /// After a turn: wakes the first task in line. While the pod is still
    /// over its rate (`held`) and another task keeps the timer, nobody is
    /// woken: the timer restarts the line.
    pub(super) fn pass(&self, held: bool) {
        let next = {
            let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
            if held && line.timer.is_some() {
                return;
            }
            line.pop()
        };
        self.hand_to(next);
    }

    /// `task` ended: it leaves the line (if it `was_held`), and hands on
    /// the turn or the timer if it had either, or the line would stop.
    pub(super) fn leave(&self, task: TaskId, was_held: bool) {
        let had_baton = self.take_baton(task);
        if !(was_held || had_baton) {
            return;
        }
        let next = {
            let mut line = self.line.lock().unwrap_or_else(|p| p.into_inner());
            let had_timer = line.forget(task);
            if !(had_baton || had_timer) {
                return;
            }
            line.pop()
        };
        self.hand_to(next);
    }

    /// Gives the turn to `next`, popped from the line, and wakes it.
    fn hand_to(&self, next: Option<(TaskId, Waker)>) {
        if let Some((task, waker)) = next {
            self.baton.store(task, Ordering::Relaxed);
            waker.wake();
        }
    }

    /// Whether `task` held the turn; it no longer does. A load first: this
    /// runs on every poll of every charged task, and a failed
    /// compare-exchange would still take the cache line from other workers.
    fn take_baton(&self, task: TaskId) -> bool {
        self.baton.load(Ordering::Relaxed) == task
            && self
                .baton
                .compare_exchange(task, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.line.lock().unwrap().wakers.len()
    }
}

impl Line {
    /// `task` leaves the line; whether it kept the timer (now nobody's).
    fn forget(&mut self, task: TaskId) -> bool {
        self.wakers.remove(&task);
        let had_timer = self.timer == Some(task);
        if had_timer {
            self.timer = None;
        }
        had_timer
    }

    fn pop(&mut self) -> Option<(TaskId, Waker)> {
        while let Some(task) = self.order.pop_front() {
            if let Some(waker) = self.wakers.remove(&task) {
                return Some((task, waker));
            }
        }
        None
    }

    /// Drops stale entries and repeats (a task that ran and was held again
    /// is in line twice; its first place counts).
    fn compact_if_stale(&mut self) {
        if self.order.len() <= self.wakers.len() * 2 + STALE_SLACK {
            return;
        }
        let mut seen = HashSet::with_capacity(self.wakers.len());
        let wakers = &self.wakers;
        self.order
            .retain(|task| wakers.contains_key(task) && seen.insert(*task));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let c = Arc::new(Counting(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// Tasks 1 (keeping the timer), 2 and 3 (in line), held in that order.
    fn three_held(turns: &Turns) -> [(Arc<Counting>, Waker); 3] {
        let tasks = [counting(), counting(), counting()];
        for (id, (_, waker)) in (1..).zip(&tasks) {
            turns.wait(id, waker);
        }
        tasks
    }

    fn woken(c: &Counting) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn one_task_keeps_the_timer_and_the_others_are_woken_one_by_one() {
        let turns = Turns::default();
        let (_, w1) = counting();
        let (c2, w2) = counting();
        let (c3, w3) = counting();
        assert_eq!(turns.wait(1, &w1), Wait::Timer);
        assert_eq!(turns.wait(2, &w2), Wait::InLine);
        assert_eq!(turns.wait(3, &w3), Wait::InLine);
        assert_eq!(turns.wait(1, &w1), Wait::Timer, "still its timer");
        // The timer fired: task 1 runs and holds the turn.
        assert!(turns.start(1, true));
        turns.pass(false);
        assert_eq!((woken(&c2), woken(&c3)), (1, 0), "only the next in line");
        assert!(turns.start(2, true));
        assert!(!turns.start(2, false), "a turn is taken once");
        turns.pass(false);
        assert_eq!(woken(&c3), 1);
        assert!(turns.start(3, true));
        turns.pass(false);
        assert_eq!(turns.waiting(), 0);
    }

    #[test]
    fn while_the_pod_is_over_its_rate_the_timer_restarts_the_line() {
        let turns = Turns::default();
        let (_, w1) = counting();
        let (c2, w2) = counting();
        assert_eq!(turns.wait(1, &w1), Wait::Timer);
        assert_eq!(turns.wait(2, &w2), Wait::InLine);
        // Another of the pod's tasks ran (woken by its socket) and left the
        // pod over its rate: the line waits for the timer.
        turns.pass(true);
        assert_eq!(woken(&c2), 0);
        // With no timer, the first in line is woken to keep it.
        assert!(turns.start(1, true));
        turns.pass(true);
        assert_eq!(woken(&c2), 1);
        assert_eq!(turns.wait(2, &w2), Wait::Timer);
    }

    #[test]
    fn a_task_that_ends_hands_on_its_turn_or_the_timer() {
        let turns = Turns::default();
        let [_, (c2, _), (c3, w3)] = three_held(&turns);
        turns.leave(1, true);
        assert_eq!(woken(&c2), 1, "the timer's keeper ended");
        turns.leave(2, true);
        assert_eq!(woken(&c3), 1, "the turn's holder ended before running");
        let (c4, w4) = counting();
        turns.wait(3, &w3);
        turns.wait(4, &w4);
        turns.leave(5, true);
        assert_eq!(woken(&c4), 0, "an unrelated end wakes nobody");
    }

    #[test]
    fn a_task_that_ran_out_of_turn_is_not_woken_for_its_old_place() {
        let turns = Turns::default();
        let [_, (c2, _), (c3, _)] = three_held(&turns);
        // Task 2's socket woke it and the pod had paid: it ran.
        assert!(!turns.start(2, true));
        assert!(turns.start(1, true));
        turns.pass(false);
        assert_eq!((woken(&c2), woken(&c3)), (0, 1));
    }

    #[test]
    fn stale_places_are_bounded() {
        let turns = Turns::default();
        let (_, w1) = counting();
        let (_, w2) = counting();
        turns.wait(1, &w1);
        for _ in 0..10_000 {
            turns.wait(2, &w2);
            turns.start(2, true);
        }
        let line = turns.line.lock().unwrap();
        assert!(
            line.order.len() <= 2 + STALE_SLACK + 1,
            "{}",
            line.order.len()
        );
    }
}
