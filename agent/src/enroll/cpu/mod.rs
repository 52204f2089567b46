//! Fair CPU: the proxy's time spent on one pod's connections is bounded.
//! A sidecar spends its pod's CPU; a shared proxy spends its own, so a pod
//! flooding it would take the time its neighbours' requests wait for.
//! Each pod gets a rate of proxy CPU (`weir.dev/max-cpu`, in cores; by
//! default an eighth of the proxy's worker threads, at least 250m), charged with the time every
//! poll of its connections' tasks takes (wall time of the poll: a cheap
//! clock, which also charges the rare preemption during one). A pod over
//! its rate, beyond a short burst, has its connections' tasks held back
//! until its debt is paid: they are not polled, their sockets fill, and
//! TCP slows the pod's clients down, while the other pods' tasks run.
//! The tasks the engine spawns while serving the pod (an upstream
//! connection's driver) are charged to it too (`proxy::cost`). Held tasks
//! run again one at a time, in the order they were held (`turns`), not
//! all at once when the debt is paid.
//!
//! The rate is kept as a theoretical arrival time (GCRA), one atomic per
//! pod: charging `c` of CPU at rate `r` moves it `c / r` on; a task may
//! run while it is at most [`BURST`] ahead of now.

mod charged;
mod relays;
mod turns;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::Counter;
use tokio::time::Instant;

use charged::Account;
pub use charged::Charged;
use relays::Relays;
use turns::Turns;

/// How far ahead of its rate a pod may run (its burst of CPU). Short, so
/// that a pod waking thousands of connections at once (a burst of opaque
/// traffic) holds the workers for at most this long before the others'
/// tasks get their turn.
pub const BURST: Duration = Duration::from_millis(2);

/// One pod's rate of proxy CPU.
#[derive(Debug)]
pub struct CpuShare {
    epoch: Instant,
    /// Nanoseconds since `epoch` at which the pod's CPU so far is paid for.
    paid_until: AtomicU64,
    /// Millicores (1000 = one core).
    millicores: AtomicU64,
    /// Its held-back tasks, in the order they run again.
    turns: Turns,
    /// Its byte relays, run by one task of its own (`relays`).
    relays: Arc<Relays>,
}

/// What a pod's CPU is counted in (`weir_intercept_cpu_*_seconds_total`).
#[derive(Clone)]
pub struct CpuCounters {
    /// Seconds the proxy spent polling the pod's connections.
    pub used: Counter,
    /// Seconds its connections were held back over the rate.
    pub throttled: Counter,
}

impl CpuShare {
    pub fn new(millicores: u32) -> Self {
        Self {
            epoch: Instant::now(),
            paid_until: AtomicU64::new(0),
            millicores: AtomicU64::new(u64::from(millicores.max(1))),
            turns: Turns::default(),
            relays: Arc::default(),
        }
    }

    /// A changed annotation applies from the next charge.
    pub fn set_millicores(&self, millicores: u32) {
        self.millicores
            .store(u64::from(millicores.max(1)), Ordering::Relaxed);
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// When the pod may run again, if it is over its rate at `now`.
    fn held_until(&self, now: Instant) -> Option<Instant> {
        self.ahead_by_more_than(now, BURST).map(|over| now + over)
    }

    /// Whether the pod has spent more than half its burst at `now`: it is
    /// running well above its rate, so its tasks let every other ready
    /// task run first (`Charged`).
    fn is_busy(&self, now: Instant) -> bool {
        self.ahead_by_more_than(now, BURST / 2).is_some()
    }

    /// By how much the pod's paid-for time runs past `now + allowance`, if
    /// it does.
    fn ahead_by_more_than(&self, now: Instant, allowance: Duration) -> Option<Duration> {
        let paid = self.paid_until.load(Ordering::Relaxed);
        let allowed = self
            .nanos_since_epoch(now)
            .saturating_add(u64::try_from(allowance.as_nanos()).unwrap_or(u64::MAX));
        (paid > allowed).then(|| Duration::from_nanos(paid - allowed))
    }

    /// The pod used `used` of CPU, up to `now`.
    pub(super) fn charge(&self, used: Duration, now: Instant) {
        let millicores = self.millicores.load(Ordering::Relaxed);
        let cost = u64::try_from(used.as_nanos().saturating_mul(1000) / u128::from(millicores))
            .unwrap_or(u64::MAX);
        let now = self.nanos_since_epoch(now);
        let _ = self
            .paid_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |paid| {
                Some(paid.max(now).saturating_add(cost))
            });
    }

    /// `task`, charged to this pod and held back while it is over its rate;
    /// so are the tasks the engine spawns for it (`proxy::cost`).
    pub fn run<F: Future>(self: &Arc<Self>, task: F, counters: Option<CpuCounters>) -> Charged<F> {
        let account = Arc::new(Account {
            share: Arc::clone(self),
            counters,
        });
        Charged::new(task, account)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};

    use super::*;
    use crate::proxy::cost::Payer;

    #[test]
    fn a_pod_runs_ahead_only_by_its_burst() {
        let share = CpuShare::new(500);
        let now = Instant::now();
        assert_eq!(share.held_until(now), None);
        // 1 ms of CPU at half a core is 2 ms of its time: the whole burst.
        share.charge(Duration::from_millis(1), now);
        assert_eq!(share.held_until(now), None);
        share.charge(Duration::from_millis(2), now);
        let until = share.held_until(now).expect("over its burst");
        assert_eq!(until - now, Duration::from_millis(4));
        assert_eq!(share.held_until(until), None, "paid by then");
    }

    #[test]
    fn idle_time_is_not_saved_up() {
        let share = CpuShare::new(1000);
        let later = Instant::now() + Duration::from_secs(10);
        share.charge(Duration::from_millis(15), later);
        assert_eq!(
            share.held_until(later).map(|t| t - later),
            Some(Duration::from_millis(13)),
            "ten idle seconds do not buy a 10 s burst"
        );
    }

    #[test]
    fn a_raised_rate_costs_less() {
        let share = CpuShare::new(1000);
        share.set_millicores(4000);
        let now = Instant::now();
        share.charge(Duration::from_millis(8), now);
        assert_eq!(share.held_until(now), None, "8 ms at four cores is 2 ms");
    }

    /// A task that burns `work` of CPU per poll, `polls` times.
    struct Busy {
        work: Duration,
        polls: u32,
    }

    impl Future for Busy {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let start = std::time::Instant::now();
            while start.elapsed() < self.work {
                std::hint::spin_loop();
            }
            self.polls -= 1;
            if self.polls == 0 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_task_spawned_for_a_pod_is_charged_but_never_held() {
        let share = Arc::new(CpuShare::new(1));
        let account = Arc::new(Account {
            share: Arc::clone(&share),
            counters: None,
        });
        share.charge(Duration::from_secs(1), Instant::now());
        assert!(share.held_until(Instant::now()).is_some(), "deep in debt");
        let started = Instant::now();
        let spawned = account.charge(Box::pin(async {
            std::thread::sleep(Duration::from_millis(2));
        }));
        spawned.await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "it was held back"
        );
        let debt = share.held_until(Instant::now()).unwrap() - Instant::now();
        assert!(
            debt > Duration::from_secs(1000),
            "its 2 ms were charged: {debt:?}"
        );
    }

    #[tokio::test]
    async fn a_task_over_its_rate_is_held_back_and_counted() {
        let share = Arc::new(CpuShare::new(250));
        let counters = CpuCounters {
            used: Counter::new("u", "u").unwrap(),
            throttled: Counter::new("t", "t").unwrap(),
        };
        let started = Instant::now();
        // 40 ms of CPU at a quarter of a core: 160 ms, less the 2 ms burst.
        let busy = Busy {
            work: Duration::from_millis(2),
            polls: 20,
        };
        share.run(busy, Some(counters.clone())).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(150), "ran in {took:?}");
        assert!(counters.used.get() >= 0.040);
        assert!(counters.throttled.get() >= 0.100);
    }

    /// Counts the polls of the task it wraps.
    struct Polls<F> {
        task: Pin<Box<F>>,
        polls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl<F: Future> Future for Polls<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.task.as_mut().poll(cx)
        }
    }

    type Count = Arc<std::sync::atomic::AtomicUsize>;
    type BusyTask = Polls<Charged<Polls<Busy>>>;

    /// `tasks` busy tasks of one pod at a quarter of a core, each counted
    /// twice: polls of the held task (outer) and polls it ran (inner).
    fn pod_of_busy_tasks(tasks: usize, polls: u32) -> (Vec<BusyTask>, Count, Count) {
        let share = Arc::new(CpuShare::new(250));
        let outer = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let inner = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let busy = Polls {
                    task: Box::pin(Busy {
                        work: Duration::from_micros(100),
                        polls,
                    }),
                    polls: Arc::clone(&inner),
                };
                Polls {
                    task: Box::pin(share.run(busy, None)),
                    polls: Arc::clone(&outer),
                }
            })
            .collect();
        (tasks, outer, inner)
    }

    /// When the pod's debt is paid, its held tasks are not all polled at
    /// once (only to find it over its rate again): a held task is polled
    /// once to be held, and again for its turn.
    #[tokio::test]
    async fn held_tasks_are_not_all_woken_when_the_debt_is_paid() {
        // 50 tasks of 4 polls of 100 µs: 20 ms of CPU, 80 ms at 250m.
        let (tasks, outer, inner) = pod_of_busy_tasks(50, 4);
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        for handle in handles {
            handle.await.unwrap();
        }
        let (outer, inner) = (outer.load(Ordering::Relaxed), inner.load(Ordering::Relaxed));
        assert_eq!(inner, 200);
        assert!(
            outer <= 3 * inner + 50,
            "{outer} polls of held tasks for {inner} that ran (the herd: 2020)"
        );
    }

    /// Held tasks that end (their connection closed) while keeping the
    /// pod's timer or holding their turn hand it on: the others still run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_tasks_that_end_do_not_stop_the_others() {
        let (tasks, _, inner) = pod_of_busy_tasks(40, 4);
        let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        // Let the pod go over its rate, then end every other task.
        while inner.load(Ordering::Relaxed) < 60 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut kept = Vec::new();
        for (i, handle) in handles.into_iter().enumerate() {
            if i % 2 == 0 {
                handle.abort();
            } else {
                kept.push(handle);
            }
        }
        let all = async {
            for handle in kept {
                handle.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(20), all)
            .await
            .expect("the pod's other tasks stopped running");
    }

    /// A pod well above its rate (more than half its burst spent) lets a
    /// neighbour's task that is ready run first, though it was woken first.
    #[tokio::test(start_paused = true)]
    async fn a_busy_pod_lets_its_neighbours_go_first() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let record = |who: &'static str| {
            let order = Arc::clone(&order);
            async move { order.lock().unwrap().push(who) }
        };
        let share = Arc::new(CpuShare::new(250));
        // 375 µs at a quarter of a core: 1.5 ms ahead, within its 2 ms burst.
        share.charge(Duration::from_micros(375), Instant::now());
        assert!(share.held_until(Instant::now()).is_none());
        let busy = tokio::spawn(share.run(record("busy pod"), None));
        let neighbour = tokio::spawn(record("neighbour"));
        busy.await.unwrap();
        neighbour.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["neighbour", "busy pod"]);
        // Within the first half of its burst, it keeps its place.
        let share = Arc::new(CpuShare::new(250));
        share.charge(Duration::from_micros(100), Instant::now());
        order.lock().unwrap().clear();
        let quiet = tokio::spawn(share.run(record("quiet pod"), None));
        let neighbour = tokio::spawn(record("neighbour"));
        quiet.await.unwrap();
        neighbour.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["quiet pod", "neighbour"]);
    }

    /// A task whose poll panics on its turn (tokio catches the panic and
    /// drops the task) still hands the turn on: the pod's other held tasks
    /// run, though the pod never goes over its rate again to restart them.
    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_on_its_turn_hands_it_on() {
        let share = Arc::new(CpuShare::new(250));
        // 3 ms at a quarter of a core: held for 10 ms past its burst.
        share.charge(Duration::from_millis(3), Instant::now());
        assert!(share.held_until(Instant::now()).is_some());
        // First polled, it keeps the timer; the other waits in line.
        let panics = tokio::spawn(share.run(
            async { panic!("a connection handler's bug (expected by this test)") },
            None,
        ));
        let waits = tokio::spawn(share.run(async {}, None));
        assert!(panics.await.unwrap_err().is_panic());
        tokio::time::timeout(Duration::from_secs(5), waits)
            .await
            .expect("the task in line was never woken")
            .unwrap();
    }
}
