//! The L7 proxy engine. Modules follow the life of a request:
//! `listener` (accept, drain) -> `http` (connection, request) -> `route`
//! (virtual host, route) -> `split` (weighted clusters) -> `cluster` +
//! `balance` (endpoint) -> `upstream` (pool, connect) -> `retry`.
//! `runtime` holds the installed state, `build` turns config into it,
//! `reload` swaps it, `admin` and `metrics` expose it. `tls` terminates
//! (listeners) and originates (clusters) TLS.

pub mod addr;
pub mod admin;
pub mod balance;
pub mod body;
pub mod build;
pub mod cluster;
pub mod drain;
pub mod http;
pub mod intercept;
pub mod listener;
pub mod metrics;
pub mod reload;
pub mod retry;
pub mod route;
pub mod runtime;
pub mod split;
pub mod tls;
pub mod upstream;
mod write_through;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use self::runtime::Runtime;

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

/// Print a machine-readable line on stdout (bound addresses, for tests and
/// benchmarks); a closed stdout is ignored rather than fatal.
pub fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// How long SIGTERM/SIGINT waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Build the tokio runtime: `Some(1)` is a current-thread runtime (one
/// thread does all the work), `Some(n)` n worker threads, `None` one per CPU.
pub fn tokio_runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ProxyError> {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build().map_err(ProxyError::Runtime)
}

/// `weir proxy`: serve `config` until SIGTERM/SIGINT.
pub fn run(config: &Path, workers: Option<usize>) -> Result<(), ProxyError> {
    tokio_runtime(workers)?.block_on(serve(config))
}

async fn serve(path: &Path) -> Result<(), ProxyError> {
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ProxyError::Signal)?;
    let config_watch = reload::ConfigWatch::start(path);
    let cfg = crate::config::load_file(path)?;
    log::info!(
        "effective config from {}: {}",
        path.display(),
        serde_json::to_string(&cfg).unwrap_or_default()
    );
    let admin_addr = cfg.admin.map(|a| a.address);
    let stats_addr = cfg.stats.map(|a| a.address);
    let rt = Arc::new(Runtime::new(Arc::new(metrics::Metrics::new()?)));
    rt.apply(cfg).await?;
    admin::start_endpoints(admin_addr, stats_addr, &rt).await?;
    let watcher = tokio::spawn(config_watch.run(rt.clone()));
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: draining"),
        _ = interrupt.recv() => log::info!("SIGINT: draining"),
    }
    watcher.abort();
    rt.drain_all().await;
    // Let in-flight requests finish (idle keep-alive connections close at once).
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while rt.active_connections().await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
