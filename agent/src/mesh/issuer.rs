//! Issuing a workload leaf from the node CA.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::MeshError;
use super::node_ca::NodeCa;
use super::spiffe::SpiffeId;

/// How far back a leaf's validity starts, for peers whose clocks run behind.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A leaf and when to replace it.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub key: Arc<CertifiedKey>,
    /// Half-way between issuance and notAfter.
    pub renew_at: SystemTime,
}

/// A leaf valid from `now - CLOCK_SKEW` to `now + ttl`, cut at the node CA's notAfter.
pub(crate) fn issue(
    ca: &NodeCa,
    id: &SpiffeId,
    ttl: Duration,
    now: SystemTime,
) -> Result<Issued, MeshError> {
    let not_after = (now + ttl).min(ca.not_after);
    if not_after <= now {
        return Err(MeshError::Issue {
            id: id.to_string(),
            reason: "the node CA has expired".into(),
        });
    }
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    let mut issued = issue_with_validity(ca, id, not_before, not_after)?;
    issued.renew_at = now + (not_after.duration_since(now).unwrap_or_default() / 2);
    Ok(issued)
}

/// A leaf with exactly this validity, checked by nothing: `issue` keeps it
/// sane, tests use it for expired certificates.
pub(crate) fn issue_with_validity(
    ca: &NodeCa,
    id: &SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<Issued, MeshError> {
    let fail = |reason: String| MeshError::Issue {
        id: id.to_string(),
        reason,
    };
    let uri = id
        .to_string()
        .try_into()
        .map_err(|e| fail(format!("{e}")))?;
    let mut params = CertificateParams::default();
    // RFC 5280 wants a subject or a critical SAN; rcgen writes the SAN
    // non-critical, so a fixed organisation says only who issued it.
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "weir");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = ca.has_key_id;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    // No serial set: rcgen derives it from the new public key, so it is as
    // unpredictable and unique as the key.

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| fail(format!("generating a key: {e}")))?;
    let cert = params
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(|e| fail(format!("signing: {e}")))?;
    let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(&der_key)
        .map_err(|e| fail(format!("loading the new key: {e}")))?;
    let chain = vec![cert.der().clone(), ca.cert.clone()];
    Ok(Issued {
        key: Arc::new(CertifiedKey::new(chain, signer)),
        renew_at: not_after,
    })
}
