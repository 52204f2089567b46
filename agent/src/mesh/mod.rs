//! Workload identity for node-to-node mTLS: SPIFFE IDs
//! (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`) in
//! short-lived certificates the agent issues itself, and the rustls configs
//! that present and check them. A library: the HBONE tunnel asks
//! [`Identities`] for configs, the agent fills [`MeshConfig`] from its flags.
//!
//! # Trust model
//!
//! - A mesh root CA is the trust anchor. Its key is never on a node; a node
//!   has only its certificate, the trust bundle (PEM, possibly several roots
//!   while they rotate).
//! - Each node has an intermediate CA, the node CA (certificate and PKCS#8
//!   key PEM files, e.g. a per-node Secret written by cert-manager with
//!   `privateKey.encoding: PKCS8`), signed by the mesh root, with CA basic
//!   constraints.
//! - The agent issues a leaf per (trust domain, namespace, service account)
//!   from the node CA: the SPIFFE ID as the only URI SAN (no DNS SAN), a
//!   fresh ECDSA P-256 key made in memory and never written anywhere, valid
//!   from five minutes ago (clock skew between nodes) for the TTL (one hour by
//!   default) but never past the node CA's own notAfter, key usage
//!   digitalSignature, extended key usages serverAuth and clientAuth. A
//!   handshake presents `[leaf, node CA]`.
//! - Peers are verified with webpki against the trust bundle, then by their
//!   single URI SAN, which must be a SPIFFE ID of our trust domain. The TLS
//!   server name is ignored: SPIFFE certificates carry no DNS names, and
//!   clients pass [`server_name`], a placeholder.
//! - A compromised node can mint any identity of the trust domain, not only
//!   those of its own pods, until its node CA certificate expires: nothing
//!   ties a node CA to the workloads of its node. Keep node CAs short-lived
//!   (hours, renewed by cert-manager) so that a stolen one is soon worthless.
//!   ztunnel avoids this by having istiod check each CSR against the pods of
//!   the requesting node, which needs a cluster-wide service weir does not
//!   run.
//!
//! # Rotation
//!
//! - A leaf is reissued on the first request past half its lifetime: new
//!   handshakes get the new certificate, open connections keep theirs (TLS
//!   never looks at a certificate again after the handshake).
//! - The node CA files are re-read when their (mtime, length) stamp changes,
//!   looked at no more than once a second, on the way to a certificate. A new
//!   node CA takes effect for every identity at once (their leaves are
//!   reissued). An unreadable or invalid new node CA is refused with an error
//!   naming the file, logged as a warning, and the last good one keeps
//!   issuing; it is tried again when the files change again.
//! - The trust bundle is read once, by [`Identities::load`]: adding a root
//!   needs a restart (or a new `Identities`).
//!
//! # Bounds
//!
//! At most [`MAX_IDENTITIES`] identities are held (leaf and configs); past
//! that the least recently used one is dropped and issued anew if it is
//! asked for again.

pub mod baggage;
mod der;
mod error;
mod identities;
mod issuer;
mod node_ca;
pub mod spiffe;
mod store;
pub mod testing;
mod tls;
mod verify;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use error::{MeshError, PeerError};
pub use identities::Identities;
pub use spiffe::{SpiffeError, SpiffeId, TrustDomain};
pub use tls::server_name;
pub use verify::MeshVerifier;

/// Default lifetime of a workload certificate.
pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(3600);

/// How many identities [`Identities`] holds at most; a node runs far fewer
/// service accounts, the bound only stops a flood of names from growing
/// memory.
pub const MAX_IDENTITIES: usize = 4096;

/// Where the mesh identity material is, filled from the agent's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// The trust domain of every identity issued and accepted.
    pub trust_domain: String,
    /// PEM, one or more mesh root certificates.
    pub trust_bundle: PathBuf,
    /// PEM, the node CA certificate (the first certificate in the file).
    pub node_ca_cert: PathBuf,
    /// PEM, the node CA private key (PKCS#8).
    pub node_ca_key: PathBuf,
    /// Lifetime of the workload certificates; [`DEFAULT_WORKLOAD_CERT_TTL`] is a good default.
    pub workload_cert_ttl: Duration,
}
