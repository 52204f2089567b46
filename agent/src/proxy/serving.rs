//! Start-up and shutdown, one path for `weir proxy` and `weir run`: the
//! signal handlers and the config watch come first (before anything can
//! announce readiness, see `reload::ConfigWatch`), then the config is loaded
//! and installed; the admin endpoints open when the caller says it is ready;
//! SIGTERM/SIGINT drain everything and wait for open connections a while.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use super::runtime::Runtime;
use super::{admin, metrics, reload, runtime};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Apply(#[from] runtime::ApplyError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("starting the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("installing signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// `weir proxy`'s default for how long SIGTERM/SIGINT lets open
/// connections finish (`--drain-time`); `weir run` has its own, sized to the
/// DaemonSet's grace period.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A runtime serving its config file until stopped.
pub struct Serving {
    term: Signal,
    interrupt: Signal,
    runtime: Arc<Runtime>,
    watcher: JoinHandle<()>,
    trimmer: JoinHandle<()>,
    admin: Option<SocketAddr>,
    stats: Option<SocketAddr>,
}

impl Serving {
    /// Watch the signals and `path`, load the config and install it in `runtime`.
    pub async fn start(path: &Path, runtime: Arc<Runtime>) -> Result<Self, ProxyError> {
        let term = signal(SignalKind::terminate()).map_err(ProxyError::Signal)?;
        let interrupt = signal(SignalKind::interrupt()).map_err(ProxyError::Signal)?;
        let config_watch = reload::ConfigWatch::start(path);
        let cfg = crate::config::load_file(path)?;
        log::info!(
            "effective config from {}: {}",
            path.display(),
            serde_json::to_string(&cfg).unwrap_or_default()
        );
        let (admin, stats) = (cfg.admin.map(|a| a.address), cfg.stats.map(|a| a.address));
        runtime.apply(cfg).await?;
        let watcher = tokio::spawn(config_watch.run(Arc::clone(&runtime)));
        Ok(Self {
            term,
            interrupt,
            runtime,
            watcher,
            trimmer: super::memory::spawn_trimmer(),
            admin,
            stats,
        })
    }

    /// Open the admin and stats listeners (`/ready` with them).
    pub async fn open_admin(&self) -> Result<(), ProxyError> {
        admin::start_endpoints(self.admin, self.stats, &self.runtime).await?;
        Ok(())
    }

    /// Resolves with the signal's name on SIGTERM or SIGINT (cancel-safe).
    pub async fn stop_signal(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    /// Stop watching the config, drain every connection (listeners'
    /// and handed-over ones) and let them finish within `drain_time`:
    /// HTTP/1 connections close after their next response, HTTP/2 get a
    /// GOAWAY, spliced TCP runs on; what is open after `drain_time` is closed.
    pub async fn shutdown(self, drain_time: Duration) {
        self.watcher.abort();
        self.trimmer.abort();
        self.runtime.drain_all(drain_time).await;
        let open = self.runtime.active_connections().await;
        if open > 0 {
            log::info!("draining {open} connection(s) for up to {drain_time:?}");
        }
        // A connection's own drain deadline closes it at `drain_time`; the
        // margin lets those closes happen before the process goes.
        let deadline = tokio::time::Instant::now() + drain_time + Duration::from_millis(100);
        while self.runtime.active_connections().await > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
