//! The L7 proxy engine. Modules follow the life of a request:
//! `listener` (accept, drain) -> `http` (connection, request) -> `route`
//! (virtual host, route) -> `split` (weighted clusters) -> `cluster` +
//! `balance` (endpoint) -> `upstream` (pool, connect) -> `retry`.
//! `runtime` holds the installed state, `build` turns config into it,
//! `reload` swaps it, `admin` and `metrics` expose it, `serving` starts and
//! stops it, `memory` gives freed memory back after a flood. `tls`
//! terminates (listeners) and originates (clusters) TLS.

pub(crate) mod accept_errors;
pub mod access_log;
pub mod admin;
pub(crate) mod balance;
pub(crate) mod body;
pub mod build;
pub(crate) mod clients;
pub(crate) mod cluster;
pub(crate) mod copy;
pub mod cost;
pub(crate) mod drain;
pub(crate) mod first_read;
pub(crate) mod http;
pub(crate) mod io;
pub(crate) mod listener;
pub(crate) mod memory;
pub mod metrics;
pub(crate) mod reload;
pub(crate) mod retry;
pub(crate) mod route;
pub mod runtime;
mod serving;
pub(crate) mod split;
pub(crate) mod tls;
pub(crate) mod upstream;
pub(crate) mod virtual_listener;
mod write_through;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use self::runtime::Runtime;
pub use self::serving::{ProxyError, SHUTDOWN_GRACE, Serving};
pub use self::upstream::egress::{Egress, EgressError, MakingSocket, SocketMaker};

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

/// `weir proxy`: serve `config` until SIGTERM/SIGINT, then drain for up to
/// `drain_time`.
pub fn run(config: &Path, workers: Option<usize>, drain_time: Duration) -> Result<(), ProxyError> {
    tokio_runtime(workers)?.block_on(serve(config, drain_time))
}

async fn serve(path: &Path, drain_time: Duration) -> Result<(), ProxyError> {
    let rt = Arc::new(Runtime::new(Arc::new(metrics::Metrics::new()?)));
    let mut serving = Serving::start(path, rt).await?;
    serving.open_admin().await?;
    let signal = serving.stop_signal().await;
    log::info!("{signal}: draining");
    serving.shutdown(drain_time).await;
    Ok(())
}
