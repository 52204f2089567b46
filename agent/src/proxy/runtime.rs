//! The running proxy: listeners by name, clusters by name, the effective
//! config. `apply` installs a new config atomically per listener (arc-swap
//! of its route table); in-flight requests keep the snapshot they started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use super::build::{self, BuildError, ClusterMap};
use super::drain::{self, DRAIN_GRACE, DrainSignal, DrainWatch};
use super::http::{ListenerContext, ListenerState};
use super::listener::{Listener, ListenerError};
use super::metrics::Metrics;
use super::upstream::connector::{Connector, Tcp};
use super::virtual_listener::{VirtualListener, VirtualListeners};
use crate::config::ProxyConfig;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

struct RunningListener {
    configured: SocketAddr,
    bound: SocketAddr,
    ctx: Arc<ListenerContext>,
    drain: DrainSignal,
}

#[derive(Default)]
struct State {
    config: Option<Arc<ProxyConfig>>,
    clusters: ClusterMap,
    listeners: HashMap<String, RunningListener>,
    /// `bind_to_port: false` listeners, kept by name across reloads.
    virtual_listeners: HashMap<String, Arc<ListenerContext>>,
}

pub struct Runtime {
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Effective config, for `/config_dump` without taking the lock.
    pub effective: ArcSwap<Option<Arc<ProxyConfig>>>,
    /// `bind_to_port: false` listeners by the original destination they claim.
    pub virtual_listeners: ArcSwap<VirtualListeners>,
    /// How clusters open their upstream connections.
    connector: Arc<dyn Connector>,
    /// `protocol_detection_timeout` in ms; 0: no limit.
    detection_timeout_ms: AtomicU64,
    /// `opaque_idle_timeout` in ms; 0: no limit.
    opaque_idle_ms: AtomicU64,
    started: AtomicBool,
    draining: AtomicBool,
    /// Drains connections handed to the engine from outside its listeners
    /// (interception), with the rest in [`Runtime::drain_all`].
    handed_over: DrainSignal,
    /// Open connections handed over (see [`Runtime::hand_over`]).
    handed_over_open: Arc<AtomicI64>,
    /// What the data path detected and loaded, as JSON, for `GET /datapath`;
    /// set once the data path is up (the proxy does not know its types).
    pub datapath_status: std::sync::OnceLock<String>,
    /// The enrolled pods and why others are not, as JSON, for `GET /status`;
    /// published by the agent after each reconciliation (the proxy does
    /// not know pods). `null` under `weir proxy`. Kept as text, not a
    /// `Value` tree: the tree took 1.4 KiB per enrolled pod, the text a
    /// fraction, and it is parsed only when `/status` is asked for.
    pub pods_status: ArcSwap<String>,
    /// Config generations applied and the last refusal, for `GET /status`.
    config_history: std::sync::Mutex<ConfigHistory>,
    /// The generation of each config applied, for whoever mirrors the
    /// config elsewhere (the agent's kernel tables).
    applied: tokio::sync::watch::Sender<u64>,
    started_at: std::time::Instant,
}

/// What happened to the config: how many were applied, the last refused.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigHistory {
    /// 1 for the config loaded at start, one more per reload applied.
    pub generation: u64,
    /// Seconds since the Unix epoch the current generation was applied.
    pub applied_at_unix: u64,
    /// The last reload refused, if one was refused after the current
    /// generation was applied.
    pub last_refused: Option<Refused>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    pub at_unix: u64,
    /// The error as logged: file, field and line.
    pub error: String,
}

/// Seconds since the Unix epoch (0 before it), as the status documents say times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Until a config is installed.
const DEFAULT_DETECTION_TIMEOUT_MS: u64 = 100;
const DEFAULT_OPAQUE_IDLE_MS: u64 = 3_600_000;

impl Runtime {
    /// Clusters connect over plain TCP.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_connector(metrics, Arc::new(Tcp))
    }

    /// Clusters open their upstream connections through `connector`.
    pub fn with_connector(metrics: Arc<Metrics>, connector: Arc<dyn Connector>) -> Self {
        Self {
            metrics,
            connector,
            state: Mutex::new(State::default()),
            effective: ArcSwap::from_pointee(None),
            virtual_listeners: ArcSwap::from_pointee(VirtualListeners::default()),
            detection_timeout_ms: AtomicU64::new(DEFAULT_DETECTION_TIMEOUT_MS),
            opaque_idle_ms: AtomicU64::new(DEFAULT_OPAQUE_IDLE_MS),
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            handed_over: drain::channel(DRAIN_GRACE).0,
            handed_over_open: Arc::new(AtomicI64::new(0)),
            datapath_status: std::sync::OnceLock::new(),
            pods_status: ArcSwap::from_pointee("null".to_owned()),
            config_history: std::sync::Mutex::new(ConfigHistory::default()),
            applied: tokio::sync::watch::Sender::new(0),
            started_at: std::time::Instant::now(),
        }
    }

    /// Build and install `cfg`. On error nothing changes: the old config
    /// keeps serving.
    pub async fn apply(&self, cfg: ProxyConfig) -> Result<(), ApplyError> {
        let mut st = self.state.lock().await;
        // A new say on who may reach which pod must not ride connections
        // pooled under the old one (whoever embeds the engine may enforce it
        // when it connects, not per request): every cluster is new then, so
        // no pooled connection outlives the policies it was opened under.
        let policies_changed = st
            .config
            .as_ref()
            .is_some_and(|old| old.authorization_policies != cfg.authorization_policies);
        let reusable = if policies_changed {
            build::ClusterMap::new()
        } else {
            std::mem::take(&mut st.clusters)
        };
        let built = build::clusters(&cfg, &reusable, &self.metrics, &self.connector);
        if !policies_changed {
            // Refused or not, the installed state keeps its clusters.
            st.clusters = reusable;
        }
        let clusters = built?;
        let mut states = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let path = format!("listeners[{i}] ({})", l.name);
            states.push(build::listener_state(l, &path, &clusters, &self.metrics)?);
        }
        // Bind new (or moved) listeners before changing anything.
        let fresh = self.bind_fresh(&st, &cfg, &mut states).await?;
        // Commit: swap route tables of kept listeners, start fresh ones, drain removed ones.
        let claims = self.swap_states(&mut st, &cfg, states);
        start(&mut st, fresh);
        drain_removed(&mut st, &cfg);
        self.virtual_listeners.store(Arc::new(VirtualListeners::new(
            claims,
            cfg.outbound_traffic_policy,
        )));
        store_millis(&self.detection_timeout_ms, &cfg.protocol_detection_timeout);
        store_millis(&self.opaque_idle_ms, &cfg.opaque_idle_timeout);
        st.clusters = clusters;
        let cfg = Arc::new(cfg);
        st.config = Some(cfg.clone());
        self.effective.store(Arc::new(Some(cfg)));
        self.started.store(true, Ordering::Release);
        let mut history = self.history();
        history.generation += 1;
        history.applied_at_unix = unix_now();
        history.last_refused = None;
        self.applied.send_replace(history.generation);
        Ok(())
    }

    /// Changes with every config applied (its generation); the config is
    /// then in [`Runtime::effective`].
    pub fn config_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn history(&self) -> std::sync::MutexGuard<'_, ConfigHistory> {
        // Plain data, consistent after any panic mid-update.
        self.config_history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A reload was refused with `error`; the current generation keeps serving.
    pub fn record_refused(&self, error: &str) {
        self.history().last_refused = Some(Refused {
            at_unix: unix_now(),
            error: error.to_owned(),
        });
    }

    pub fn config_history(&self) -> ConfigHistory {
        self.history().clone()
    }

    /// How long since this runtime was made (the process's start, near enough).
    pub fn uptime(&self) -> std::time::Duration {
        self.started_at.elapsed()
    }

    /// Bind the listeners that are new or moved (their state is taken out
    /// of `states`); nothing starts yet.
    async fn bind_fresh(
        &self,
        st: &State,
        cfg: &ProxyConfig,
        states: &mut [ListenerState],
    ) -> Result<Vec<Fresh>, ApplyError> {
        let mut fresh = Vec::new();
        for (l, s) in cfg.listeners.iter().zip(states) {
            let kept = st
                .listeners
                .get(&l.name)
                .is_some_and(|r| r.configured == l.address);
            if !l.bind_to_port || kept {
                continue;
            }
            let s = std::mem::replace(s, empty_state());
            let ctx = Arc::new(ListenerContext::new(&l.name, s, &self.metrics));
            let (drain, watch) = drain::channel(DRAIN_GRACE);
            let listener = Listener::bind(l.address, ctx.clone(), watch).await?;
            let bound = listener.local_addr().unwrap_or(l.address);
            fresh.push(Fresh {
                name: l.name.clone(),
                running: RunningListener {
                    configured: l.address,
                    bound,
                    ctx,
                    drain,
                },
                listener,
            });
        }
        Ok(fresh)
    }

    /// Give kept listeners and virtual listeners their new state; returns
    /// the virtual listeners by the address they claim.
    fn swap_states(
        &self,
        st: &mut State,
        cfg: &ProxyConfig,
        states: Vec<ListenerState>,
    ) -> Vec<(SocketAddr, Arc<VirtualListener>)> {
        let mut virtuals = HashMap::new();
        let mut claims = Vec::new();
        for (l, s) in cfg.listeners.iter().zip(states) {
            if l.bind_to_port {
                if let Some(r) = st.listeners.get(&l.name)
                    && r.configured == l.address
                {
                    r.ctx.state.store(Arc::new(s));
                }
                continue;
            }
            let ctx = match st.virtual_listeners.remove(&l.name) {
                Some(ctx) => {
                    ctx.state.store(Arc::new(s));
                    ctx
                }
                None => Arc::new(ListenerContext::new(&l.name, s, &self.metrics)),
            };
            let vl = VirtualListener {
                name: ctx.name.clone(),
                ctx: ctx.clone(),
                server_names: l.server_names.iter().map(String::as_str).collect(),
            };
            claims.push((l.address, Arc::new(vl)));
            virtuals.insert(l.name.clone(), ctx);
        }
        st.virtual_listeners = virtuals;
        claims
    }

    /// Ready once a config is installed and every cluster finished its first
    /// resolution; not ready again once draining.
    pub async fn is_ready(&self) -> bool {
        if !self.started.load(Ordering::Acquire) || self.draining.load(Ordering::Acquire) {
            return false;
        }
        let st = self.state.lock().await;
        st.clusters.values().all(|(_, c)| c.is_initialized())
    }

    /// (name, bound address) of every listener.
    pub async fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let st = self.state.lock().await;
        let mut v: Vec<_> = st
            .listeners
            .iter()
            .map(|(n, r)| (n.clone(), r.bound))
            .collect();
        v.sort();
        v
    }

    /// Every cluster, sorted by name.
    pub async fn clusters(&self) -> Vec<Arc<super::cluster::Cluster>> {
        let st = self.state.lock().await;
        let mut v: Vec<_> = st.clusters.values().map(|(_, c)| c.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Open downstream connections over all current listeners, and those
    /// handed over from outside them.
    pub async fn active_connections(&self) -> i64 {
        let st = self.state.lock().await;
        let listeners: i64 = st
            .listeners
            .values()
            .map(|r| r.ctx.metrics.cx_active.get())
            .sum();
        listeners + self.handed_over_open.load(Ordering::Acquire)
    }

    /// How long protocol detection waits for an intercepted client's first
    /// bytes (`None`: without limit).
    pub fn detection_timeout(&self) -> Option<Duration> {
        load_millis(&self.detection_timeout_ms)
    }

    /// How long a spliced (TLS or opaque) intercepted connection may pass
    /// nothing either way (`None`: without limit).
    pub fn opaque_idle_timeout(&self) -> Option<Duration> {
        load_millis(&self.opaque_idle_ms)
    }

    /// The drain handle of a connection handed to the engine from outside
    /// its listeners.
    pub fn drain_watch(&self) -> DrainWatch {
        self.handed_over.watch()
    }

    /// A connection handed to the engine from outside its listeners
    /// (interception): counted among the open connections a shutdown waits
    /// for until the returned guard drops.
    pub fn hand_over(&self) -> HandedOver {
        self.handed_over_open.fetch_add(1, Ordering::AcqRel);
        HandedOver(Arc::clone(&self.handed_over_open))
    }

    /// Stop accepting everywhere and let connections finish; what is still
    /// open after `grace` is closed.
    pub async fn drain_all(&self, grace: Duration) {
        self.draining.store(true, Ordering::Release);
        self.handed_over.drain_within(grace);
        let st = self.state.lock().await;
        for r in st.listeners.values() {
            r.drain.drain_within(grace);
        }
    }
}

/// One open handed-over connection (see [`Runtime::hand_over`]).
pub struct HandedOver(Arc<AtomicI64>);

impl Drop for HandedOver {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A listener bound by `apply`, not started yet.
struct Fresh {
    name: String,
    running: RunningListener,
    listener: Listener,
}

/// Start the fresh listeners, draining any older one of the same name.
fn start(st: &mut State, fresh: Vec<Fresh>) {
    for f in fresh {
        if let Some(old) = st.listeners.remove(&f.name) {
            old.drain.drain();
        }
        let (name, bound) = (f.name, f.running.bound);
        log::info!("listener {name}: listening on {bound}");
        // Machine-readable line for tests and benchmarks.
        super::listener::announce(format_args!("weir: listener {name} listening on {bound}"));
        tokio::spawn(f.listener.run());
        st.listeners.insert(name, f.running);
    }
}

/// Drain the running listeners `cfg` no longer has.
fn drain_removed(st: &mut State, cfg: &ProxyConfig) {
    let gone: Vec<String> = st
        .listeners
        .keys()
        .filter(|n| {
            !cfg.listeners
                .iter()
                .any(|l| l.bind_to_port && &&l.name == n)
        })
        .cloned()
        .collect();
    for n in gone {
        if let Some(old) = st.listeners.remove(&n) {
            log::info!("listener {n}: removed, draining");
            old.drain.drain();
        }
    }
}

fn empty_state() -> ListenerState {
    ListenerState {
        routes: Default::default(),
        settings: super::http::ConnSettings {
            idle_timeout: None,
            header_read_timeout: None,
            request_timeout: None,
            max_header_bytes: 8192,
            max_headers: 100,
            codec: Default::default(),
            server: http::HeaderValue::from_static("envoy"),
            upgrade_types: Vec::new(),
            max_connections_per_client: u32::MAX,
            access_log: None,
        },
        tls: None,
    }
}

/// A duration setting kept as milliseconds, 0 meaning none, so connections
/// read the current value without a lock.
fn store_millis(slot: &AtomicU64, value: &crate::config::ConfigDuration) {
    let ms = u64::try_from(value.as_millis()).unwrap_or(u64::MAX);
    slot.store(ms, Ordering::Relaxed);
}

fn load_millis(slot: &AtomicU64) -> Option<Duration> {
    match slot.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "listeners:\n  - name: l\n    address: 127.0.0.1:0\n    virtual_hosts:\n      - name: v\n        domains: [\"*\"]\n        routes:\n          - match: {prefix: /}\n            route: {cluster: c}\nclusters:\n  - name: c\n    endpoints: [{address: 127.0.0.1, port: 9}]\n";
    const POLICY: &str = "authorization_policies:\n  - name: p\n    namespace: shop\n";

    async fn cluster_after(rt: &Runtime, yaml: &str) -> Arc<super::super::cluster::Cluster> {
        rt.apply(crate::config::parse_str(yaml, "t.yaml").unwrap())
            .await
            .unwrap();
        rt.clusters().await.remove(0)
    }

    #[tokio::test]
    async fn a_change_of_authorization_policies_renews_every_cluster() {
        let rt = Runtime::new(Arc::new(Metrics::new().unwrap()));
        let first = cluster_after(&rt, CONFIG).await;
        let same = cluster_after(&rt, CONFIG).await;
        assert!(Arc::ptr_eq(&first, &same), "an unchanged cluster is kept");
        let with_policy = format!("{CONFIG}{POLICY}");
        let renewed = cluster_after(&rt, &with_policy).await;
        assert!(!Arc::ptr_eq(&same, &renewed), "new policies, new pools");
        let kept = cluster_after(&rt, &with_policy).await;
        assert!(Arc::ptr_eq(&renewed, &kept));
    }
}
