//! [`Identities`]: the node CA, the leaves it issued and the TLS configs,
//! behind one cheap handle.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::error::{MeshError, PeerError};
use super::issuer::{self, Issued};
use super::node_ca::{self, NodeCa};
use super::spiffe::{SpiffeId, TrustDomain};
use super::store::Lru;
use super::verify::{self, MeshVerifier};
use super::{MAX_IDENTITIES, MeshConfig, tls};

/// How often, at most, the node CA files are looked at for a change.
const NODE_CA_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// (modified time, length) of a file, to notice it changed.
type Stamp = Option<(SystemTime, u64)>;

/// Workload identities of one trust domain, issued from this node's CA.
/// Clones share everything.
#[derive(Clone)]
pub struct Identities {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("trust_domain", &self.inner.trust_domain)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    config: MeshConfig,
    trust_domain: TrustDomain,
    roots: Arc<[TrustAnchor<'static>]>,
    pub(crate) verifier: Arc<MeshVerifier>,
    /// The node CA in use and its generation, bumped on every change.
    ca: RwLock<(Arc<NodeCa>, u64)>,
    watch: Mutex<Watch>,
    pub(crate) cache: Mutex<Lru>,
}

struct Watch {
    last_check: Instant,
    /// The stamps of the files last read, good or not: a bad pair is not
    /// read (nor warned about) again until one of the files changes.
    seen: (Stamp, Stamp),
}

fn stamp(file: &Path) -> Stamp {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-updated by a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Identities {
    /// Reads and checks the trust bundle and the node CA: errors name the
    /// file and the problem.
    pub fn load(config: MeshConfig) -> Result<Self, MeshError> {
        Self::load_with_capacity(config, MAX_IDENTITIES)
    }

    pub(crate) fn load_with_capacity(
        config: MeshConfig,
        capacity: usize,
    ) -> Result<Self, MeshError> {
        let trust_domain =
            TrustDomain::new(&config.trust_domain).map_err(MeshError::TrustDomain)?;
        if config.workload_cert_ttl < Duration::from_secs(1) {
            return Err(MeshError::Ttl);
        }
        let roots: Arc<[TrustAnchor<'static>]> = node_ca::load_bundle(&config.trust_bundle)?.into();
        let seen = (stamp(&config.node_ca_cert), stamp(&config.node_ca_key));
        let ca = node_ca::load(
            &config.node_ca_cert,
            &config.node_ca_key,
            &roots,
            &trust_domain,
            SystemTime::now(),
        )?;
        let verifier = Arc::new(MeshVerifier::new(roots.clone(), trust_domain.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                trust_domain,
                roots,
                verifier,
                ca: RwLock::new((Arc::new(ca), 0)),
                watch: Mutex::new(Watch {
                    last_check: Instant::now(),
                    seen,
                }),
                cache: Mutex::new(Lru::new(capacity)),
            }),
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.inner.trust_domain
    }

    /// The verifier both sides of a mesh handshake use.
    pub fn verifier(&self) -> Arc<MeshVerifier> {
        self.inner.verifier.clone()
    }

    /// `id`'s current certificate and key, issued or reissued as needed.
    pub fn certified_key(&self, id: &SpiffeId) -> Result<Arc<CertifiedKey>, MeshError> {
        self.inner.certified_key_at(id, SystemTime::now())
    }

    /// A client config presenting `id` (its current certificate at each
    /// handshake) and accepting mesh servers; pass [`super::server_name`].
    pub fn client_config(&self, id: &SpiffeId) -> Result<Arc<rustls::ClientConfig>, MeshError> {
        self.certified_key(id)?;
        if let Some(config) = lock(&self.inner.cache).entry(id).client.clone() {
            return Ok(config);
        }
        let config = tls::client_config(&self.inner, id)?;
        lock(&self.inner.cache).entry(id).client = Some(config.clone());
        Ok(config)
    }

    /// A server config presenting `id` and requiring a mesh client certificate.
    pub fn server_config(&self, id: &SpiffeId) -> Result<Arc<rustls::ServerConfig>, MeshError> {
        self.certified_key(id)?;
        if let Some(config) = lock(&self.inner.cache).entry(id).server.clone() {
            return Ok(config);
        }
        let config = tls::server_config(&self.inner, id)?;
        lock(&self.inner.cache).entry(id).server = Some(config.clone());
        Ok(config)
    }

    /// The identity in a peer's chain (its first certificate), as rustls
    /// hands it out after a handshake with these configs
    /// (`peer_certificates()`). The chain must have been verified: this only
    /// reads the name.
    pub fn peer_identity(&self, certs: &[CertificateDer<'_>]) -> Result<SpiffeId, MeshError> {
        let leaf = certs.first().ok_or(PeerError::NoCertificate)?;
        Ok(verify::spiffe_id(leaf, &self.inner.trust_domain)?)
    }
}

impl Inner {
    pub(crate) fn certified_key_at(
        &self,
        id: &SpiffeId,
        now: SystemTime,
    ) -> Result<Arc<CertifiedKey>, MeshError> {
        self.watch_node_ca(now);
        let (ca, generation) = self.current_ca();
        if let Some((issued, g)) = &lock(&self.cache).entry(id).issued
            && *g == generation
            && now < issued.renew_at
        {
            return Ok(issued.key.clone());
        }
        // Issued outside the lock: key generation and signing take a
        // millisecond or so, other identities need not wait. Two callers may
        // both issue; the last one stays, both certificates are good.
        let issued: Issued = issuer::issue(&ca, id, self.config.workload_cert_ttl, now)?;
        let key = issued.key.clone();
        lock(&self.cache).entry(id).issued = Some((issued, generation));
        Ok(key)
    }

    pub(crate) fn current_ca(&self) -> (Arc<NodeCa>, u64) {
        let guard = self.ca.read().unwrap_or_else(PoisonError::into_inner);
        (guard.0.clone(), guard.1)
    }

    /// Re-reads the node CA if the files changed, at most once per
    /// [`NODE_CA_CHECK_INTERVAL`]; a bad new one is logged and ignored.
    fn watch_node_ca(&self, now: SystemTime) {
        {
            let mut watch = lock(&self.watch);
            if watch.last_check.elapsed() < NODE_CA_CHECK_INTERVAL {
                return;
            }
            watch.last_check = Instant::now();
        }
        if let Err(e) = self.reload_node_ca(now) {
            tracing::warn!(error = %e, "mesh: new node CA refused, the previous one keeps issuing");
        }
    }

    /// Reads the node CA files if their stamps changed since last read;
    /// `Ok(true)` when a new node CA is in use.
    pub(crate) fn reload_node_ca(&self, now: SystemTime) -> Result<bool, MeshError> {
        let stamps = (
            stamp(&self.config.node_ca_cert),
            stamp(&self.config.node_ca_key),
        );
        {
            let mut watch = lock(&self.watch);
            if watch.seen == stamps {
                return Ok(false);
            }
            watch.seen = stamps;
        }
        let ca = node_ca::load(
            &self.config.node_ca_cert,
            &self.config.node_ca_key,
            &self.roots,
            &self.trust_domain,
            now,
        )?;
        let mut guard = self.ca.write().unwrap_or_else(PoisonError::into_inner);
        *guard = (Arc::new(ca), guard.1 + 1);
        tracing::info!(
            file = %self.config.node_ca_cert.display(),
            "mesh: new node CA in use"
        );
        Ok(true)
    }
}
