//! Tunnel connections pooled per caller-chosen key (weir: the source
//! identity and the peer agent's address): one live TLS + HTTP/2
//! connection per key, shared by every stream opened for that key.
//!
//! Bound: at most [`PoolConfig::max_keys`] keys (1024 by default), so at
//! most that many pooled connections. A new key at the bound evicts one
//! entry first: a closed one if any, else the least recently used idle one
//! (no stream open on it), else the least recently used. Evicting only
//! forgets the connection: streams already open on it go on to their end
//! (they keep the HTTP/2 connection alive), and it closes after them.
//! Streams per connection are bounded by the peer's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (the server's
//! [`ServerLimits::max_concurrent_streams`](super::ServerLimits)): an
//! open beyond it waits for a stream to end, within the caller's timeout.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::client::OpenError;
use super::{ClientSettings, Spawner, TunnelConnection, TunnelError, TunnelStream};

/// How a [`TunnelPool`] behaves.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The most keys (so pooled connections) kept at once.
    pub max_keys: usize,
    /// HTTP/2 settings of the connections it opens.
    pub client: ClientSettings,
    /// Where the connections' tasks run.
    pub spawner: Spawner,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            max_keys: 1024,
            client: ClientSettings::default(),
            spawner: Spawner::default(),
        }
    }
}

/// How to reach the peer when the key has no live connection. Used only
/// then: a pooled connection keeps the TLS config it was made with.
pub struct Dial<D> {
    /// Opens the TCP connection to the peer agent (the caller's socket,
    /// in the caller's network namespace).
    pub connect: D,
    /// Must offer ALPN `h2`; its verifier decides whether the peer is who
    /// the caller wants.
    pub tls: Arc<ClientConfig>,
    /// Sent as SNI; the caller's verifier is expected to ignore it.
    pub server_name: ServerName<'static>,
}

/// Whether a tunnel rode a connection opened for it, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// This call opened a new TLS connection.
    New,
    /// This call used the key's pooled connection.
    Reused,
}

/// A tunnelled stream and what the caller may want to know of it.
#[derive(Debug)]
pub struct Tunnel {
    pub stream: TunnelStream,
    pub reuse: Reuse,
    /// The peer agent's certificate chain, leaf first.
    pub peer_certs: Arc<Vec<CertificateDer<'static>>>,
}

/// One live tunnel connection per key; see the module doc for the bound.
pub struct TunnelPool<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for TunnelPool<K> {
    fn clone(&self) -> Self {
        TunnelPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K> {
    config: PoolConfig,
    /// At most `config.max_keys` entries.
    slots: Mutex<HashMap<K, Arc<Slot>>>,
    next_id: AtomicU64,
}

/// A key's entry.
struct Slot {
    /// Held while a connection is being made, so concurrent first opens
    /// for a key wait for one connection instead of each making their own.
    connecting: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

struct SlotState {
    pooled: Option<Pooled>,
    last_used: Instant,
}

#[derive(Clone)]
struct Pooled {
    id: u64,
    conn: TunnelConnection,
    /// Cloned into each stream: more than one strong count means busy.
    lease: Arc<()>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            connecting: tokio::sync::Mutex::new(()),
            state: Mutex::new(SlotState {
                pooled: None,
                last_used: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pooled connection if it is still open; a closed one is dropped.
    fn live(&self) -> Option<Pooled> {
        let mut state = self.state();
        state.last_used = Instant::now();
        if state.pooled.as_ref().is_some_and(|p| p.conn.is_closed()) {
            state.pooled = None;
        }
        state.pooled.clone()
    }

    fn forget(&self, id: u64) {
        let mut state = self.state();
        if state.pooled.as_ref().is_some_and(|p| p.id == id) {
            state.pooled = None;
        }
    }
}

impl<K> TunnelPool<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub fn new(config: PoolConfig) -> TunnelPool<K> {
        TunnelPool {
            inner: Arc::new(Inner {
                config,
                slots: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// How many keys the pool holds now (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.inner.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A tunnelled stream to `target` through the peer agent of `key`: on
    /// the key's pooled connection if it is open, else on a new one made
    /// with `dial` (and then pooled). Everything, waiting for another call
    /// that is connecting the same key included, must finish within
    /// `timeout`. A failed connection leaves no entry behind.
    pub async fn connect<D, F>(
        &self,
        key: &K,
        target: SocketAddr,
        dial: Dial<D>,
        timeout: Duration,
    ) -> Result<Tunnel, TunnelError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        self.connect_with(key, (target, None), dial, timeout).await
    }

    /// [`TunnelPool::connect`], the stream's `CONNECT` carrying `baggage`
    /// (what the caller says of the stream's source).
    pub async fn connect_with<D, F>(
        &self,
        key: &K,
        (target, baggage): (SocketAddr, Option<&HeaderValue>),
        dial: Dial<D>,
        timeout: Duration,
    ) -> Result<Tunnel, TunnelError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        let connect = self.connect_now(key, target, baggage, dial);
        match tokio::time::timeout(timeout, connect).await {
            Ok(done) => done,
            Err(_) => {
                // The deadline may have cut a connection short while it was
                // being made: leave no empty entry behind for it.
                self.inner.remove_if_unused(key);
                Err(TunnelError::TimedOut)
            }
        }
    }

    async fn connect_now<D, F>(
        &self,
        key: &K,
        target: SocketAddr,
        baggage: Option<&HeaderValue>,
        dial: Dial<D>,
    ) -> Result<Tunnel, TunnelError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        let mut dial = Some(dial);
        loop {
            let slot = self.inner.slot(key);
            let (pooled, reuse) = match slot.live() {
                Some(pooled) => (pooled, Reuse::Reused),
                None => {
                    let _connecting = slot.connecting.lock().await;
                    match slot.live() {
                        Some(pooled) => (pooled, Reuse::Reused),
                        None => {
                            // Only a call that has not dialed yet gets here:
                            // the loop goes round again only while `dial` is
                            // unused.
                            let Some(dial) = dial.take() else {
                                return Err(TunnelError::TimedOut);
                            };
                            match self.establish(key, &slot, dial).await {
                                Ok(pooled) => (pooled, Reuse::New),
                                Err(e) => {
                                    self.inner.remove(key, &slot);
                                    return Err(e);
                                }
                            }
                        }
                    }
                }
            };
            let lease = Some(Arc::clone(&pooled.lease));
            match pooled.conn.open_leased(target, baggage, lease).await {
                Ok(stream) => {
                    return Ok(Tunnel {
                        stream,
                        reuse,
                        peer_certs: Arc::clone(pooled.conn.peer_certs()),
                    });
                }
                // The pooled connection closed before the request left (the
                // peer went away and we had not noticed yet): nothing reached
                // the peer, so a new connection may carry it. Once only: the
                // dial is used up after one new connection.
                Err(OpenError::Unsent(e)) => {
                    slot.forget(pooled.id);
                    if reuse == Reuse::New || dial.is_none() {
                        return Err(TunnelError::Request(e));
                    }
                }
                Err(OpenError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Dials, handshakes and pools a connection into `slot`; the caller
    /// holds the slot's `connecting` lock.
    async fn establish<D, F>(
        &self,
        key: &K,
        slot: &Arc<Slot>,
        dial: Dial<D>,
    ) -> Result<Pooled, TunnelError>
    where
        D: FnOnce() -> F,
        F: Future<Output = io::Result<TcpStream>>,
    {
        let tcp = (dial.connect)().await.map_err(TunnelError::Dial)?;
        // Many streams' small writes share this connection; HTTP/2 frames
        // them itself, Nagle would only delay them. Failing to set it costs
        // latency, not correctness.
        let _ = tcp.set_nodelay(true);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let on_close = {
            let pool = Arc::downgrade(&self.inner);
            let slot = Arc::downgrade(slot);
            let key = key.clone();
            move || forget_closed(&pool, &key, &slot, id)
        };
        let config = &self.inner.config;
        let conn = TunnelConnection::establish_then(
            tcp,
            dial.tls,
            dial.server_name,
            &config.client,
            &config.spawner,
            on_close,
        )
        .await?;
        let pooled = Pooled {
            id,
            conn,
            lease: Arc::new(()),
        };
        slot.state().pooled = Some(pooled.clone());
        Ok(pooled)
    }
}

/// A pooled connection ended: its key's entry goes, unless the entry has
/// moved on to another connection meanwhile.
fn forget_closed<K: Hash + Eq + Clone>(pool: &Weak<Inner<K>>, key: &K, slot: &Weak<Slot>, id: u64) {
    let (Some(pool), Some(slot)) = (pool.upgrade(), slot.upgrade()) else {
        return;
    };
    slot.forget(id);
    if slot.state().pooled.is_none() {
        pool.remove(key, &slot);
    }
}

impl<K: Hash + Eq + Clone> Inner<K> {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<K, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key's entry, made if missing (evicting one at the bound).
    fn slot(&self, key: &K) -> Arc<Slot> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(key) {
            return Arc::clone(slot);
        }
        if slots.len() >= self.config.max_keys.max(1)
            && let Some(victim) = victim(&slots)
        {
            slots.remove(&victim);
        }
        let slot = Arc::new(Slot::new());
        slots.insert(key.clone(), Arc::clone(&slot));
        slot
    }

    /// Removes `key`'s entry if it holds no connection and nobody is
    /// making one.
    fn remove_if_unused(&self, key: &K) {
        let mut slots = self.slots();
        let unused = slots.get(key).is_some_and(|slot| {
            slot.connecting.try_lock().is_ok() && slot.state().pooled.is_none()
        });
        if unused {
            slots.remove(key);
        }
    }

    /// Removes `key`'s entry if it is still `slot` (not a newer one).
    fn remove(&self, key: &K, slot: &Arc<Slot>) {
        let mut slots = self.slots();
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }
}

/// The entry to evict: closed (or never connected, and nobody connecting)
/// first, then idle, then any; the least recently used within each.
fn victim<K: Clone>(slots: &HashMap<K, Arc<Slot>>) -> Option<K> {
    slots
        .iter()
        .map(|(key, slot)| {
            let connecting = slot.connecting.try_lock().is_err();
            let state = slot.state();
            let rank = match &state.pooled {
                _ if connecting => 2,
                None => 0,
                Some(p) if p.conn.is_closed() => 0,
                Some(p) if Arc::strong_count(&p.lease) == 1 => 1,
                Some(_) => 2,
            };
            (rank, state.last_used, key)
        })
        .min_by_key(|(rank, last_used, _)| (*rank, *last_used))
        .map(|(_, _, key)| key.clone())
}
