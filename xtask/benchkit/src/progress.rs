//! Where a benchmark is and how long it has left, printed before each
//! measured step: `[3/12] opaque, weir: about 1 min 40 s left`.
//!
//! The estimate starts from the plan (how long each step should take: a
//! run's duration and what surrounds it) and, once steps have run, scales
//! what is left of the plan by how long the done ones really took against
//! theirs: set-up, warm-ups and a busy machine make a step slower than its
//! load's duration, and after a step or two the estimate knows by how much.

use std::time::{Duration, Instant};

/// The plan of a benchmark's measured steps and how far it has come.
#[derive(Debug, Clone)]
pub struct Progress {
    planned: Vec<Duration>,
    done: usize,
    /// When the first step began: what the steps done took is the time since.
    started: Option<Instant>,
}

impl Progress {
    /// Steps that should take `planned[i]` each, in the order they run.
    pub fn new(planned: Vec<Duration>) -> Self {
        Progress {
            planned,
            done: 0,
            started: None,
        }
    }

    /// `steps` steps of `each`.
    pub fn uniform(steps: usize, each: Duration) -> Self {
        Progress::new(vec![each; steps])
    }

    /// Prints the line for the next step, `what` (e.g. `opaque, weir`),
    /// before it runs.
    pub fn begin(&mut self, what: &str) {
        println!("{}", self.next_line(what, Instant::now()));
    }

    /// The next step's line at `now`; counts the step as begun.
    fn next_line(&mut self, what: &str, now: Instant) -> String {
        let started = *self.started.get_or_insert(now);
        let left = estimate_left(&self.planned, self.done, now - started);
        self.done += 1;
        format!(
            "[{}/{}] {what}: about {} left",
            self.done,
            self.planned.len().max(self.done),
            human(left)
        )
    }
}

/// What is left of `planned` (the step about to begin included) once its
/// first `done` steps have taken `took`: the rest of the plan, scaled by
/// how the steps done ran against theirs.
pub fn estimate_left(planned: &[Duration], done: usize, took: Duration) -> Duration {
    let done = done.min(planned.len());
    let rest: Duration = planned[done..].iter().sum();
    let past: Duration = planned[..done].iter().sum();
    if past.is_zero() {
        return rest;
    }
    rest.mul_f64(took.as_secs_f64() / past.as_secs_f64())
}

/// A duration as people say it: `40 s`, `1 min 40 s`, `12 min`, `1 h 5 min`,
/// rounded to what an estimate can promise.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs_f64().round() as u64;
    match secs {
        0..60 => format!("{} s", secs.max(1)),
        // Under ten minutes, to 10 s.
        60..600 => {
            let secs = (secs + 5) / 10 * 10;
            match (secs / 60, secs % 60) {
                (m, 0) => format!("{m} min"),
                (m, s) => format!("{m} min {s} s"),
            }
        }
        600..3600 => format!("{} min", (secs + 30) / 60),
        _ => {
            let mins = (secs + 30) / 60;
            match (mins / 60, mins % 60) {
                (h, 0) => format!("{h} h"),
                (h, m) => format!("{h} h {m} min"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn before_any_step_the_plan_is_the_estimate() {
        let planned = [4 * S, 4 * S, 10 * S];
        assert_eq!(estimate_left(&planned, 0, Duration::ZERO), 18 * S);
    }

    #[test]
    fn steps_done_scale_what_is_left() {
        let planned = [4 * S, 4 * S, 10 * S];
        // Two 4 s steps took 12 s, half as long again: the 10 s left is 15 s.
        assert_eq!(estimate_left(&planned, 2, 12 * S), 15 * S);
        // Faster than planned shortens it just as well.
        assert_eq!(estimate_left(&planned, 2, 4 * S), 5 * S);
        // All done, or more steps than planned: nothing left.
        assert_eq!(estimate_left(&planned, 3, 30 * S), Duration::ZERO);
        assert_eq!(estimate_left(&planned, 5, 30 * S), Duration::ZERO);
    }

    #[test]
    fn a_plan_of_zero_steps_does_not_divide_by_zero() {
        assert_eq!(estimate_left(&[Duration::ZERO, 6 * S], 1, 3 * S), 6 * S);
        assert_eq!(estimate_left(&[], 0, 3 * S), Duration::ZERO);
    }

    #[test]
    fn lines_count_steps_and_refine_by_the_time_taken() {
        // 12 steps of 10 s; the first took 15 s.
        let mut p = Progress::uniform(12, 10 * S);
        let t0 = Instant::now();
        assert_eq!(
            p.next_line("keep-alive, weir", t0),
            "[1/12] keep-alive, weir: about 2 min left"
        );
        assert_eq!(
            p.next_line("keep-alive, envoy", t0 + 15 * S),
            "[2/12] keep-alive, envoy: about 2 min 50 s left"
        );
        // A step beyond the plan is counted, with next to nothing left.
        let mut p = Progress::uniform(1, S);
        p.next_line("a", t0);
        assert_eq!(p.next_line("b", t0 + S), "[2/2] b: about 1 s left");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::ZERO), "1 s");
        assert_eq!(human(40 * S), "40 s");
        assert_eq!(human(Duration::from_millis(59_600)), "1 min");
        assert_eq!(human(100 * S), "1 min 40 s");
        assert_eq!(human(104 * S), "1 min 40 s");
        assert_eq!(human(596 * S), "10 min");
        assert_eq!(human(12 * 60 * S + 20 * S), "12 min");
        assert_eq!(human(3600 * S), "1 h");
        assert_eq!(human(3900 * S), "1 h 5 min");
    }
}
