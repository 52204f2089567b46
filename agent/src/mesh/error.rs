//! The mesh's errors: each names the file, the identity or the peer.

use std::path::PathBuf;

use super::spiffe::{SpiffeError, SpiffeId, TrustDomain};

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("mesh trust domain: {0}")]
    TrustDomain(SpiffeError),
    #[error("workload certificate TTL must be at least one second")]
    Ttl,
    #[error("reading {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("trust bundle {}: {reason}", file.display())]
    Bundle { file: PathBuf, reason: String },
    #[error("node CA {}: {reason}", file.display())]
    NodeCa { file: PathBuf, reason: String },
    #[error("issuing a certificate for {id}: {reason}")]
    Issue { id: String, reason: String },
    #[error("building the TLS config for {id}: {source}")]
    Config {
        id: String,
        source: Box<rustls::Error>,
    },
    #[error("peer: {0}")]
    Peer(#[from] PeerError),
    /// A pod's namespace and service account make no SPIFFE ID.
    #[error("workload identity: {0}")]
    Workload(#[from] SpiffeError),
}

/// Why a verified peer certificate does not name a workload of this mesh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no certificate")]
    NoCertificate,
    #[error("{0}")]
    Malformed(#[from] super::der::DerError),
    #[error("{0} URI SANs; a mesh certificate has exactly one")]
    UriSanCount(usize),
    #[error("URI SAN is not a mesh SPIFFE ID: {0}")]
    NotSpiffe(SpiffeError),
    #[error("{id} is not of trust domain {expected}")]
    WrongTrustDomain {
        id: Box<SpiffeId>,
        expected: TrustDomain,
    },
}
