//! Watching the pods file: poll it, and publish each new valid list.
//!
//! Polling the content (not the mtime) sees every way the file can change:
//! edited in place, replaced by rename, a ConfigMap's symlink swap. inotify
//! on its directory makes the poll happen as soon as a change is complete
//! (`dir_changes`); the interval stays, for changes inotify does not see
//! (another mount namespace's writes to a shared volume, an unsupported
//! filesystem). An invalid or unreadable file is reported and the last good
//! list stays published: a typo never looks like "no pods".

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::dir_changes::DirChanges;
use super::file::{PodsFileError, parse_pods_str};
use super::spec::PodSpec;

/// A running watch on a pods file.
#[derive(Debug)]
pub struct PodsWatch {
    /// The last valid list of pods; changes only when the file's pods change.
    pub pods: watch::Receiver<Arc<Vec<PodSpec>>>,
    /// Why the file on disk is not what `pods` shows (unreadable or invalid);
    /// `None` while they agree.
    pub problem: watch::Receiver<Option<Arc<PodsFileError>>>,
    /// The polling task; it ends by itself once every `pods` receiver is dropped.
    pub task: JoinHandle<()>,
}

/// Loads `path` (an error here is returned: the agent should not start on a
/// bad file), then reads it again on a tokio task whenever a change in its
/// directory completes, and every `interval` (at least 1ms).
/// Must be called inside a tokio runtime.
pub fn watch_pods_file(path: &Path, interval: Duration) -> Result<PodsWatch, PodsFileError> {
    // Watched before the first read, so no change after it goes unseen.
    let changes = match DirChanges::watch(path) {
        Ok(changes) => Some(changes),
        Err(e) => {
            log::info!(
                "{}: no inotify ({e}); changes are seen within {interval:?}",
                path.display()
            );
            None
        }
    };
    let text = std::fs::read(path).map_err(|source| PodsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let initial = parse(path, &text)?;
    let (pods_tx, pods) = watch::channel(Arc::new(initial));
    let (problem_tx, problem) = watch::channel(None);
    let poller = Poller {
        path: path.to_owned(),
        last_seen: Some(hash(&text)),
        pods: pods_tx,
        problem: problem_tx,
    };
    let task = tokio::spawn(poller.run(changes, interval.max(Duration::from_millis(1))));
    Ok(PodsWatch {
        pods,
        problem,
        task,
    })
}

struct Poller {
    path: PathBuf,
    /// Hash of the content last looked at, good or bad; `None` after a read error.
    last_seen: Option<u64>,
    pods: watch::Sender<Arc<Vec<PodSpec>>>,
    problem: watch::Sender<Option<Arc<PodsFileError>>>,
}

impl Poller {
    async fn run(mut self, mut changes: Option<DirChanges>, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                changed = next_change(&mut changes) => {
                    if let Err(e) = changed {
                        log::warn!(
                            "{}: inotify failed ({e}); changes are seen within {interval:?}",
                            self.path.display()
                        );
                        changes = None;
                    }
                }
            }
            if self.pods.is_closed() {
                return;
            }
            self.poll().await;
        }
    }

    async fn poll(&mut self) {
        let text = match tokio::fs::read(&self.path).await {
            Ok(text) => text,
            Err(source) => {
                if self.last_seen.take().is_some() {
                    let err = PodsFileError::Read {
                        path: self.path.clone(),
                        source,
                    };
                    self.report(err);
                }
                return;
            }
        };
        let digest = hash(&text);
        if self.last_seen == Some(digest) {
            return;
        }
        self.last_seen = Some(digest);
        match parse(&self.path, &text) {
            Ok(pods) => {
                log::info!("{}: {} pods", self.path.display(), pods.len());
                // Cleared first, so whoever sees the new list sees no stale problem.
                self.problem.send_replace(None);
                self.pods.send_if_modified(|current| {
                    let changed = **current != pods;
                    if changed {
                        *current = Arc::new(pods);
                    }
                    changed
                });
            }
            Err(err) => self.report(err),
        }
    }

    fn report(&self, err: PodsFileError) {
        log::error!(
            "{err}\n{}: keeping the last good list of {} pods",
            self.path.display(),
            self.pods.borrow().len()
        );
        self.problem.send_replace(Some(Arc::new(err)));
    }
}

/// The next change `changes` sees; never, without it.
async fn next_change(changes: &mut Option<DirChanges>) -> std::io::Result<()> {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

fn parse(path: &Path, text: &[u8]) -> Result<Vec<PodSpec>, PodsFileError> {
    let origin = path.display().to_string();
    match std::str::from_utf8(text) {
        Ok(text) => parse_pods_str(text, &origin),
        Err(e) => Err(PodsFileError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
    }
}

fn hash(text: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
