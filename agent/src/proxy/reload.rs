//! Hot reload: on SIGHUP, and when the config file's mtime or content hash
//! changes (polled). A new config that fails to load or build is refused with
//! an error naming the file and field; the old config keeps serving.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};

use super::runtime::Runtime;
use crate::config;

/// How often the config file is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    mtime: Option<SystemTime>,
    hash: u64,
}

/// Off the runtime's threads: a slow filesystem must not stall the proxy.
async fn fingerprint_async(path: &Path) -> Option<Fingerprint> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || fingerprint(&path))
        .await
        .ok()
        .flatten()
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let bytes = std::fs::read(path).ok()?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(Fingerprint {
        mtime,
        hash: h.finish(),
    })
}

/// Load, build and install the file; logs and counts the outcome.
pub async fn reload(rt: &Runtime, path: &Path) -> bool {
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || config::load_file(&owned))
        .await
        .map_err(|e| format!("{}: reading the config: {e}", path.display()));
    let result = match loaded {
        Err(e) => Err(e),
        Ok(loaded) => match loaded {
            Ok(cfg) => rt
                .apply(cfg)
                .await
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => {
            rt.metrics.reload(true);
            log::info!("config reloaded from {}", path.display());
            true
        }
        Err(e) => {
            rt.metrics.reload(false);
            rt.record_refused(&e);
            log::error!("config reload refused, keeping the previous config: {e}");
            false
        }
    }
}

/// Reloads on SIGHUP and on file changes. Set up before the config is first
/// loaded and before the proxy says it is ready, so that nothing after that
/// is missed: a SIGHUP then finds its handler (rather than the default
/// action, which ends the process), and a file written meanwhile differs
/// from the fingerprint taken here.
pub struct ConfigWatch {
    path: PathBuf,
    hup: Option<tokio::signal::unix::Signal>,
    last: Option<Fingerprint>,
}

impl ConfigWatch {
    /// Must run inside the tokio runtime (signal registration).
    pub fn start(path: &Path) -> Self {
        let hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot watch SIGHUP: {e}");
                None
            }
        };
        Self {
            path: path.to_path_buf(),
            hup,
            last: fingerprint(path),
        }
    }

    /// Watches until the task is dropped.
    pub async fn run(mut self, rt: Arc<Runtime>) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let by_signal = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = recv(&mut self.hup) => true,
            };
            let now = fingerprint_async(&self.path).await;
            if by_signal || (now.is_some() && now != self.last) {
                if by_signal {
                    log::info!("SIGHUP: reloading {}", self.path.display());
                }
                self.last = now;
                reload(&rt, &self.path).await;
            }
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
