//! Workload identity for node-to-node mTLS: SPIFFE IDs
//! (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`).

#[expect(dead_code, reason = "read by the identity issuer and verifier that follow")]
mod der;
pub mod spiffe;

pub use spiffe::{SpiffeError, SpiffeId, TrustDomain};
