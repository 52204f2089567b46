//! `weir run`: the node agent. One process: the L7 proxy, the pinned eBPF data
//! path, and the pod source driving enrollment, until SIGTERM or SIGINT.
//!
//! Stopping leaves the pinned data path in place on purpose: enrolled pods go
//! direct (fail-open) or are refused (fail-closed) while no agent runs, and the
//! next agent adopts their state.

mod intercept;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::datapath::{Datapath, DatapathError, DatapathOptions};
use crate::enroll::Enroller;
use crate::node::cgroup::{CgroupError, cgroup2_root};
use crate::pods::{PodsFileError, watch_pods_file};
use crate::proxy::{self, ProxyError, admin, metrics::Metrics, reload, runtime::Runtime};

/// How often the pods file is checked for changes.
const PODS_POLL: Duration = Duration::from_millis(250);
/// How long in-flight requests get to finish on SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub pods: PathBuf,
    pub pin_root: PathBuf,
    pub workers: Option<usize>,
    /// sk_msg acceleration of the app-to-proxy hop.
    pub sk_msg: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Pods(#[from] PodsFileError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

pub fn run(options: &RunOptions) -> Result<(), RunError> {
    proxy::tokio_runtime(options.workers)?.block_on(serve(options))
}

async fn serve(options: &RunOptions) -> Result<(), RunError> {
    // Before anything can announce readiness: see `ConfigWatch`.
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ProxyError::Signal)?;
    let config_watch = reload::ConfigWatch::start(&options.config);
    let config = crate::config::load_file(&options.config).map_err(ProxyError::from)?;
    let admin_addr = config.admin.map(|a| a.address);
    let runtime = Arc::new(Runtime::new(Arc::new(
        Metrics::new().map_err(ProxyError::from)?,
    )));
    runtime.apply(config).await.map_err(ProxyError::from)?;
    let config_watch = tokio::spawn(config_watch.run(Arc::clone(&runtime)));

    let datapath = Datapath::load_with(&DatapathOptions {
        pin_root: Some(options.pin_root.clone()),
        sk_msg: options.sk_msg,
    })?;
    let _ = runtime.datapath_status.set(datapath.status().to_json());
    let mut enroller = Enroller::new(datapath, intercept::for_runtime(&runtime), cgroup2_root()?);
    let mut pods = watch_pods_file(&options.pods, PODS_POLL)?;
    let initial = Arc::clone(&pods.pods.borrow_and_update());
    report(&enroller.reconcile(&initial));
    match enroller.prune() {
        Ok(pruned) if pruned != Default::default() => {
            log::info!("pruned state of pods gone while no agent ran: {pruned:?}")
        }
        Ok(_) => {}
        Err(e) => log::warn!("pruning stale pinned state: {e}"),
    }
    // The admin listener (and so `/ready`) comes up once the pods that were
    // there at start are enrolled.
    if let Some(addr) = admin_addr {
        let bound = admin::start(addr, Arc::clone(&runtime))
            .await
            .map_err(ProxyError::from)?;
        log::info!("admin listening on {bound}");
    }
    log::info!(
        "weir agent running: {} pod(s) enrolled",
        enroller.enrolled().len()
    );

    loop {
        tokio::select! {
            changed = pods.pods.changed() => {
                if changed.is_err() {
                    log::error!("the pods file watcher stopped; keeping the current enrollment");
                    break;
                }
                let desired = Arc::clone(&pods.pods.borrow_and_update());
                report(&enroller.reconcile(&desired));
            }
            _ = term.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { log::info!("SIGINT: stopping"); break; }
        }
    }
    // Listeners close with the enroller; pinned state stays for the next agent.
    drop(enroller);
    config_watch.abort();
    runtime.drain_all().await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while runtime.active_connections().await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn report(done: &crate::enroll::Reconciled) {
    for pod in &done.enrolled {
        log::info!("pod {pod}: enrolled");
    }
    for pod in &done.updated {
        log::info!("pod {pod}: updated");
    }
    for pod in &done.unenrolled {
        log::info!("pod {pod}: un-enrolled");
    }
    for (pod, why) in &done.failed {
        log::error!("pod {pod}: not enrolled: {why}");
    }
}
