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
            log::error!("config reload refused, keeping the previous config: {e}");
            false
        }
    }
}

/// Watch for SIGHUP and file changes until the task is dropped.
pub async fn watch(rt: Arc<Runtime>, path: PathBuf) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("cannot watch SIGHUP: {e}");
            None
        }
    };
    let mut last = fingerprint_async(&path).await;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = recv(&mut hup) => true,
        };
        let now = fingerprint_async(&path).await;
        if by_signal || (now.is_some() && now != last) {
            if by_signal {
                log::info!("SIGHUP: reloading {}", path.display());
            }
            last = now;
            reload(&rt, &path).await;
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
