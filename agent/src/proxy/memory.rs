//! Memory comes back after a flood. glibc's malloc keeps freed memory in
//! its arenas for reuse, and with one arena per busy thread and
//! connections' buffers freed in any order, little of it ever reaches the
//! top of a heap where free() gives it back on its own: a flood of 3,000
//! connections left the proxy at 145 MiB resident a minute after it ended
//! (30 MiB before). Every few seconds, when the arenas hold more than a
//! slack of free memory, `malloc_trim` returns their free pages to the
//! kernel (it walks every arena and releases whole free pages inside them,
//! not only the top). Nothing is freed that is in use, so the cost is
//! page faults when the memory is wanted again, once per flood.
//! Tested by `tests/robustness_memory.rs` (a process of its own: resident
//! memory is the whole process's).

use std::time::Duration;

use tokio::task::JoinHandle;

/// How often the arenas' free memory is looked at.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// Free memory the arenas may keep for reuse without a trim: small beside
/// the agent's own 13 MiB (4 MiB was 40 KiB per pod on a node of 100 pods,
/// more than a pod's live state), large beside one trim's cost every few
/// seconds (a trim frees nothing in use; what it returns costs a page
/// fault when wanted again).
pub const TRIM_SLACK_BYTES: usize = 512 << 10;

/// Runs until aborted (or the runtime ends), trimming when due. The look
/// and the trim both run on a blocking thread: each walks every arena
/// under its lock, and the look alone (`mallinfo2`, which counts every
/// free chunk) took 0.9 ms with 8,000 connections open, a worker that
/// served nothing meanwhile.
pub fn spawn_trimmer() -> JoinHandle<()> {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(trim_if_worth_it).await;
        }
    })
}

fn trim_if_worth_it() {
    if free_in_arenas().is_some_and(|free| free > TRIM_SLACK_BYTES) {
        trim();
    }
}

/// Bytes malloc holds free for reuse (`None` where that cannot be known).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn free_in_arenas() -> Option<usize> {
    // SAFETY: mallinfo2 only reads malloc's own statistics.
    Some(unsafe { libc::mallinfo2() }.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn free_in_arenas() -> Option<usize> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    let before = free_in_arenas();
    // SAFETY: malloc_trim only releases memory malloc holds free.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    log::debug!("malloc_trim with {before:?} bytes free in the arenas: released {released}");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
