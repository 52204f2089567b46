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

mod egress;
mod handoff;
mod intercept;
mod report;
mod source;
pub mod status;

pub use source::PodSource;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use self::handoff::{Event, Handoff};
use crate::datapath::{Datapath, DatapathError, DatapathOptions};
use crate::enroll::{Enroller, RESERVED_DESCRIPTORS};
use crate::intercept::{Interceptor, MeshLinkError, MeshOptions};
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
    /// Enrolled pods' upstream connections from inside their network
    /// namespaces (their addresses, their routes, pools per pod); off:
    /// from the agent's, with pools shared by pods.
    pub pod_egress: bool,
    /// On SIGTERM: the hand-over to a successor and the connections'
    /// drain, together, within this.
    pub drain_time: Duration,
    /// Mesh credentials and the cluster's pod networks: enrolled pods reach
    /// enrolled pods of other nodes through the mutual-TLS tunnel
    /// (`intercept::mesh_link`); none: in plain text, no identity across nodes.
    pub mesh: Option<MeshOptions>,
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
    #[error(transparent)]
    Mesh(#[from] MeshLinkError),
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

/// Tasks a worker polls between two looks at the sockets that became
/// ready (tokio's default is 61). A pod whose connections keep the workers
/// busy would otherwise delay by up to 61 of its polls the moment a
/// neighbour's request is even seen; a look costs one epoll_wait that
/// does not block.
const EVENT_INTERVAL: u32 = 8;

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
        .event_interval(EVENT_INTERVAL)
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
    let interceptor = match &options.mesh {
        Some(mesh) => {
            let interceptor = Interceptor::with_mesh(metrics, mesh)?;
            log::info!(
                "mesh: trust domain {}, pod networks {}: connections to enrolled pods of other nodes go through the tunnel on port {}",
                mesh.config.trust_domain,
                mesh.pod_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::tunnel::TUNNEL_PORT
            );
            interceptor
        }
        None => Interceptor::new(metrics).map_err(ProxyError::from)?,
    };
    let runtime = Arc::clone(interceptor.runtime());
    let mut serving = Serving::start(&options.config, Arc::clone(&runtime)).await?;

    let datapath = Datapath::load_with(&DatapathOptions {
        pin_root: Some(options.pin_root.clone()),
        sk_msg: options.sk_msg,
    })?;
    privilege::drop_after_load()?;
    let _ = runtime.datapath_status.set(datapath.status().to_json());
    // Before enrolling: an agent still serving the node learns of each pod
    // this one takes over.
    let mut handoff = Handoff::start(&options.pin_root);
    let intercept = intercept::for_interceptor(&interceptor, options.pod_egress);
    raise_open_files();
    let mut enroller = Enroller::new(datapath, intercept, cgroup2_root()?);
    // Before any pod is enrolled: its first connect() meets the config's table.
    let mut egress = egress::EgressSync::new(&runtime, options.mesh.as_ref());
    egress.apply(&mut enroller);
    log::info!(
        "descriptors: {RESERVED_DESCRIPTORS} kept for the agent's own work, the rest for at most {} intercepted connections on the node",
        enroller.node_budget().max()
    );
    let mut pods = tokio::select! {
        started = options.pods.start() => started?,
        signal = serving.stop_signal() => {
            log::info!("{signal} before the first list of pods: stopping");
            return Ok(());
        }
    };
    let mut reporter = report::Reporter::default();
    let mut desired = Arc::clone(&pods.pods.borrow_and_update());
    let mut retry = reconcile(&mut enroller, &desired, &mut reporter, &mut handoff);
    let mut retry_after = RETRY_FIRST;
    match enroller.prune() {
        Ok(pruned) if pruned != Default::default() => {
            log::info!("pruned state of pods gone while no agent ran: {pruned:?}")
        }
        Ok(_) => {}
        Err(e) => log::warn!("pruning stale pinned state: {e}"),
    }
    publish(&runtime, &desired, &enroller, &reporter, false);
    // The admin listener (and so `/ready`) comes up once the pods that were
    // there at start are enrolled.
    serving.open_admin().await?;
    log::info!(
        "weir agent running: {} pod(s) enrolled",
        enroller.enrolled().len()
    );

    // While a successor takes the pods over, this agent enrolls nothing:
    // the successor is the one following the pod source.
    let mut successor = false;
    let mut releases = JoinSet::new();
    let mut flows = tokio::time::interval(egress::FLOW_INTERVAL);
    flows.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        publish(&runtime, &desired, &enroller, &reporter, successor);
        tokio::select! {
            changed = pods.pods.changed() => {
                if changed.is_err() {
                    log::error!("the pod source stopped; keeping the current enrollment");
                    break;
                }
                desired = Arc::clone(&pods.pods.borrow_and_update());
                if !successor {
                    retry = reconcile(&mut enroller, &desired, &mut reporter, &mut handoff);
                    retry_after = RETRY_FIRST;
                }
            }
            () = tokio::time::sleep(retry_after), if retry && !successor => {
                retry = reconcile(&mut enroller, &desired, &mut reporter, &mut handoff);
                retry_after = (retry_after * 2).min(RETRY_MAX);
            }
            event = handoff.next() => match event {
                Event::SuccessorArrived => {
                    log::info!("a new agent is starting on this node: handing the pods over");
                    successor = true;
                }
                Event::Taken(uid) => release(&mut enroller, &uid, &mut releases),
                Event::SuccessorGone => {
                    // Pods it took and no longer serves are enrolled again.
                    log::warn!("the new agent went away: serving the node again");
                    successor = false;
                    retry = reconcile(&mut enroller, &desired, &mut reporter, &mut handoff);
                }
            },
            changed = egress.config_applied() => {
                if changed {
                    egress.apply(&mut enroller);
                }
            }
            _ = flows.tick() => {
                if let Err(e) = enroller.collect_flows() {
                    log::warn!("reading the direct and refused connections' counts: {e}");
                }
            }
            signal = serving.stop_signal() => { log::info!("{signal}: stopping"); break; }
        }
    }
    let deadline = tokio::time::Instant::now() + options.drain_time;
    if successor {
        hand_over_rest(&mut enroller, &mut handoff, &mut releases, deadline).await;
    }
    // Listeners of pods nobody took close with the enroller: those pods go
    // direct or are refused; pinned state stays for the next agent.
    drop(enroller);
    // Listeners being handed over finish taking their queues.
    while releases.join_next().await.is_some() {}
    pods.task.abort();
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    serving.shutdown(left.max(MIN_DRAIN)).await;
    Ok(())
}

/// Every intercepted connection costs descriptors, so the agent takes all
/// the kernel lets it (the hard limit: no privilege needed) and states it;
/// the node budget (`enroll::budget`) is cut from what this leaves.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => log::info!("open-file limit raised from {soft} to {hard} (the hard limit)"),
            Err(e) => log::warn!("open-file limit stays {soft}: raising it to {hard}: {e}"),
        },
        Ok((soft, _)) => log::info!("open-file limit {soft} (the hard limit)"),
        Err(e) => log::warn!("reading the open-file limit: {e}"),
    }
}

/// Connections get at least this to finish, however long the hand-over took.
const MIN_DRAIN: Duration = Duration::from_secs(1);

fn reconcile(
    enroller: &mut Enroller,
    desired: &[crate::pods::PodSpec],
    reporter: &mut report::Reporter,
    handoff: &mut Handoff,
) -> bool {
    let done = enroller.reconcile(desired);
    for uid in &done.enrolled_uids {
        handoff.took(uid);
    }
    reporter.report(&done)
}

/// The pods' states for `GET /status`, after whatever changed them.
fn publish(
    runtime: &crate::proxy::runtime::Runtime,
    desired: &[crate::pods::PodSpec],
    enroller: &Enroller,
    reporter: &report::Reporter,
    handing_over: bool,
) {
    let pods = status::pods(desired, enroller, reporter.failing(), handing_over);
    let json = serde_json::to_string(&pods).unwrap_or_else(|_| "null".to_owned());
    runtime.pods_status.store(Arc::new(json));
}

fn release(enroller: &mut Enroller, uid: &str, releases: &mut JoinSet<()>) {
    if let Some(finish) = enroller.release(uid) {
        releases.spawn(finish);
    }
}

/// SIGTERM with a successor starting: wait until it has taken every pod
/// (or went away, or `deadline`), so no pod is left without a listener.
async fn hand_over_rest(
    enroller: &mut Enroller,
    handoff: &mut Handoff,
    releases: &mut JoinSet<()>,
    deadline: tokio::time::Instant,
) {
    if !enroller.is_empty() {
        log::info!(
            "waiting for the new agent to take {} pod(s) over",
            enroller.len()
        );
    }
    while !enroller.is_empty() {
        tokio::select! {
            event = handoff.next() => match event {
                Event::Taken(uid) => release(enroller, &uid, releases),
                Event::SuccessorGone => {
                    log::warn!("the new agent went away before taking every pod over");
                    return;
                }
                Event::SuccessorArrived => {}
            },
            () = tokio::time::sleep_until(deadline) => {
                log::warn!(
                    "the new agent did not take {} pod(s) over within the drain time",
                    enroller.len()
                );
                return;
            }
        }
    }
    log::info!("every pod is served by the new agent");
}
