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

/// A pod's line of held tasks. Everything in it moves under one lock: a
/// turn handed on outside it could land on a task that ran and ended in
/// between (woken by its own socket, on another worker), and the line would
/// stop with nobody to wake the next task.
#[derive(Debug, Default)]
pub(super) struct Turns {
    line: Mutex<Line>,
}

#[derive(Debug, Default)]
struct Line {
    /// Waiting tasks, first come first served. An id with no waker is stale
    /// (the task ran or ended since), and is skipped.
    order: VecDeque<TaskId>,
    wakers: HashMap<TaskId, Waker>,
    /// The held task whose timer fires when the pod's debt is paid.
    timer: Option<TaskId>,
    /// The task woken to take its turn.
    turn: Option<TaskId>,
}

impl Turns {
    /// `task` is held back: it keeps the pod's timer if no task does, or
    /// waits in line to be woken.
    pub(super) fn wait(&self, task: TaskId, waker: &Waker) -> Wait {
        let mut line = self.lock();
        let had_turn = line.take_turn(task);
        if line.timer.is_none_or(|t| t == task) {
            line.timer = Some(task);
            line.wakers.remove(&task);
            return Wait::Timer;
        }
        match line.wakers.get_mut(&task) {
            Some(known) => known.clone_from(waker),
            None => {
                line.wakers.insert(task, waker.clone());
                if had_turn {
                    // Woken for its turn, but the pod was over its rate
                    // again by the time it ran: it keeps its place.
                    line.order.push_front(task);
                } else {
                    line.order.push_back(task);
                }
                line.compact_if_stale();
            }
        }
        Wait::InLine
    }

    /// `task` is about to run; whether it holds the turn (woken by the
    /// line, or by the pod's timer), and so must wake the next task after
    /// its poll ([`Turns::pass`]).
    ///
    /// A task that was not held cannot hold either: only a task in line is
    /// handed the turn, and it stays held until it runs or waits again.
    /// So the pod's unheld polls, nearly all of them, take no lock.
    pub(super) fn start(&self, task: TaskId, was_held: bool) -> bool {
        if !was_held {
            return false;
        }
        let mut line = self.lock();
        let turn = line.take_turn(task);
        line.forget(task) || turn
    }

    /// After a turn: wakes the first task in line. While the pod is still
    /// over its rate (`held`) and another task keeps the timer, nobody is
    /// woken: the timer restarts the line.
    pub(super) fn pass(&self, held: bool) {
        let next = {
            let mut line = self.lock();
            if held && line.timer.is_some() {
                return;
            }
            line.hand_on()
        };
        wake(next);
    }

    /// `task` ended: it leaves the line (if it `was_held`), and hands on
    /// the turn or the timer if it had either, or the line would stop.
    pub(super) fn leave(&self, task: TaskId, was_held: bool) {
        if !was_held {
            return;
        }
        let next = {
            let mut line = self.lock();
            let had_turn = line.take_turn(task);
            let had_timer = line.forget(task);
            if !(had_turn || had_timer) {
                return;
            }
            line.hand_on()
        };
        wake(next);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.lock().wakers.len()
    }
}

/// Wakes the task handed the turn, once the line's lock is released.
fn wake(next: Option<Waker>) {
    if let Some(waker) = next {
        waker.wake();
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

    /// Whether `task` held the turn; it no longer does.
    fn take_turn(&mut self, task: TaskId) -> bool {
        if self.turn == Some(task) {
            self.turn = None;
            return true;
        }
        false
    }

    /// The first live task in line leaves it holding the turn; its waker,
    /// to wake once the lock is released.
    fn hand_on(&mut self) -> Option<Waker> {
        while let Some(task) = self.order.pop_front() {
            if let Some(waker) = self.wakers.remove(&task) {
                self.turn = Some(task);
                return Some(waker);
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
    fn a_task_held_again_on_its_turn_keeps_its_place() {
        let turns = Turns::default();
        let [(_, w1), (c2, w2), (c3, _)] = three_held(&turns);
        assert!(turns.start(1, true));
        turns.pass(false);
        assert_eq!(woken(&c2), 1, "task 2's turn");
        // Before task 2 runs, another task is held and keeps the timer;
        // then task 2 finds the pod over its rate again.
        assert_eq!(turns.wait(4, &w1), Wait::Timer);
        assert_eq!(turns.wait(2, &w2), Wait::InLine);
        // The timer fires: task 2 is next, not task 3, which came after it.
        assert!(turns.start(4, true));
        turns.pass(false);
        assert_eq!((woken(&c2), woken(&c3)), (2, 0));
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

    /// What a pod's tasks do, in random order: run (over the pod's rate or
    /// not), get their timer's wake, end, and new ones start. After every
    /// step, a task waiting in line has someone to wake it: the timer's
    /// keeper, or the holder of the turn with its wake still pending.
    #[test]
    fn the_line_never_stops_while_tasks_wait_in_it() {
        const TASKS: usize = 6;
        for seed in 1..=64u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut random = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let turns = Turns::default();
            let mut tasks: Vec<Task> = (0..TASKS).map(|i| Task::new(i as TaskId + 1)).collect();
            for step in 0..3000 {
                let i = random(TASKS as u64) as usize;
                match random(8) {
                    // Its socket woke it, or its wake from the line came.
                    0..=4 => tasks[i].poll(&turns, random(2) == 0, random(2) == 0),
                    // The pod's timer fired.
                    5 => {
                        let keeper = turns.lock().timer;
                        if let Some(t) = tasks.iter_mut().find(|t| Some(t.id) == keeper) {
                            t.poll(&turns, random(3) == 0, random(2) == 0);
                        }
                    }
                    6 if random(4) == 0 => {
                        turns.leave(tasks[i].id, tasks[i].held);
                        tasks[i] = Task::new(tasks[i].id + TASKS as TaskId);
                    }
                    _ => {}
                }
                let line = turns.lock();
                let waiting: Vec<TaskId> = tasks
                    .iter()
                    .filter(|t| t.held && line.timer != Some(t.id) && !t.wake_pending())
                    .map(|t| t.id)
                    .collect();
                if waiting.is_empty() {
                    continue;
                }
                let keeper = tasks.iter().any(|t| Some(t.id) == line.timer && t.held);
                let turn = tasks
                    .iter()
                    .any(|t| Some(t.id) == line.turn && t.wake_pending());
                assert!(
                    keeper || turn,
                    "seed {seed} step {step}: {waiting:?} wait and nobody will wake them: {line:?}"
                );
            }
        }
    }

    /// A task as `Charged` drives the line.
    struct Task {
        id: TaskId,
        held: bool,
        wakes: Arc<Counting>,
        waker: Waker,
        seen: usize,
    }

    impl Task {
        fn new(id: TaskId) -> Self {
            let (wakes, waker) = counting();
            Task {
                id,
                held: false,
                wakes,
                waker,
                seen: 0,
            }
        }

        fn wake_pending(&self) -> bool {
            woken(&self.wakes) > self.seen
        }

        /// `over`: the pod is over its rate as the poll starts; `over_after`:
        /// as it ends.
        fn poll(&mut self, turns: &Turns, over: bool, over_after: bool) {
            self.seen = woken(&self.wakes);
            if over {
                self.held = true;
                turns.wait(self.id, &self.waker);
                return;
            }
            let turn = turns.start(self.id, std::mem::take(&mut self.held));
            if turn {
                turns.pass(over_after);
            }
        }
    }
}
