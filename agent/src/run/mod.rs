//! `weir run`: the node agent. One process: the L7 proxy, the pinned eBPF data
//! path, and the pod source driving enrollment, until SIGTERM or SIGINT.
//!
//! Stopping leaves the pinned data path in place on purpose: enrolled pods go
//! direct (fail-open) or are refused (fail-closed) while no agent runs, and the
//! next agent adopts their state. `weir uninstall` removes it for good.
//!
//! Privilege (see [`crate::privilege`]): the checks run before anything
//! starts; the data path loads and pods are enrolled on the main thread (the
//! future `block_on` drives), which keeps only what enrolment needs once the
//! data path is loaded; the proxy's worker threads hold nothing.

mod intercept;
mod report;
mod source;

pub use source::PodSource;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::datapath::{Datapath, DatapathError, DatapathOptions};
use crate::enroll::Enroller;
use crate::intercept::Interceptor;
use crate::node::cgroup::{CgroupError, cgroup2_root};
use crate::pods::{KubernetesError, PodsFileError};
use crate::privilege::{self, PrivilegeError};
use crate::proxy::{ProxyError, Serving, metrics::Metrics};

/// How soon a pod that could not be enrolled is tried again (a pod whose
/// sandbox the kubelet is still making appears within a few of these), and
/// the longest wait the back-off reaches while failures persist (a bad
/// annotation does not heal by itself; the next change of the pods does).
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub pods: PodSource,
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
    Kubernetes(#[from] KubernetesError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
}

pub fn run(options: &RunOptions) -> Result<(), RunError> {
    privilege::check_and_raise()?;
    let workers_keep_bpf = privilege::workers_need_bpf()?;
    log::info!(
        "capabilities: main thread {:?} until the data path is loaded, then {:?}; proxy workers {}",
        privilege::REQUIRED
            .iter()
            .map(|r| r.capability)
            .collect::<Vec<_>>(),
        privilege::ENROLMENT,
        if workers_keep_bpf {
            "CAP_BPF only (this kernel checks it on every bpf(2) call)"
        } else {
            "none"
        }
    );
    agent_runtime(options.workers, workers_keep_bpf)?.block_on(serve(options))
}

/// Always multi-threaded, unlike `weir proxy --workers 1`: the main thread
/// keeps enrolment's capabilities, so proxy work must happen elsewhere.
fn agent_runtime(
    workers: Option<usize>,
    keep_bpf: bool,
) -> Result<tokio::runtime::Runtime, ProxyError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder
        .thread_name("weir-worker")
        .on_thread_start(move || {
            if let Err(e) = privilege::confine_worker(keep_bpf) {
                // A worker that kept privilege would parse pods' traffic with it.
                eprintln!("weir: {e}; refusing to run a privileged worker thread");
                std::process::abort();
            }
        })
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)
}

async fn serve(options: &RunOptions) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new().map_err(ProxyError::from)?);
    let interceptor = Interceptor::new(metrics).map_err(ProxyError::from)?;
    let runtime = Arc::clone(interceptor.runtime());
    let mut serving = Serving::start(&options.config, Arc::clone(&runtime)).await?;

    let datapath = Datapath::load_with(&DatapathOptions {
        pin_root: Some(options.pin_root.clone()),
        sk_msg: options.sk_msg,
    })?;
    privilege::drop_after_load()?;
    let _ = runtime.datapath_status.set(datapath.status().to_json());
    let intercept = intercept::for_interceptor(&interceptor);
    let mut enroller = Enroller::new(datapath, intercept, cgroup2_root()?);
    let mut pods = tokio::select! {
        started = options.pods.start() => started?,
        signal = serving.stop_signal() => {
            log::info!("{signal} before the first list of pods: stopping");
            return Ok(());
        }
    };
    let mut reporter = report::Reporter::default();
    let mut desired = Arc::clone(&pods.pods.borrow_and_update());
    let mut retry = reporter.report(&enroller.reconcile(&desired));
    let mut retry_after = RETRY_FIRST;
    match enroller.prune() {
        Ok(pruned) if pruned != Default::default() => {
            log::info!("pruned state of pods gone while no agent ran: {pruned:?}")
        }
        Ok(_) => {}
        Err(e) => log::warn!("pruning stale pinned state: {e}"),
    }
    // The admin listener (and so `/ready`) comes up once the pods that were
    // there at start are enrolled.
    serving.open_admin().await?;
    log::info!(
        "weir agent running: {} pod(s) enrolled",
        enroller.enrolled().len()
    );

    loop {
        tokio::select! {
            changed = pods.pods.changed() => {
                if changed.is_err() {
                    log::error!("the pod source stopped; keeping the current enrollment");
                    break;
                }
                desired = Arc::clone(&pods.pods.borrow_and_update());
                retry = reporter.report(&enroller.reconcile(&desired));
                retry_after = RETRY_FIRST;
            }
            () = tokio::time::sleep(retry_after), if retry => {
                retry = reporter.report(&enroller.reconcile(&desired));
                retry_after = (retry_after * 2).min(RETRY_MAX);
            }
            signal = serving.stop_signal() => { log::info!("{signal}: stopping"); break; }
        }
    }
    // Listeners close with the enroller; pinned state stays for the next agent.
    drop(enroller);
    pods.task.abort();
    serving.shutdown().await;
    Ok(())
}
