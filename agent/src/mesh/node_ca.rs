//! The trust bundle and the node CA: reading them, checking the node CA
//! against the bundle, and turning it into an rcgen issuer.

use std::path::Path;
use std::time::SystemTime;

use rcgen::{DistinguishedName, DnType, DnValue, KeyIdMethod, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor};

use super::der::{self, CertFields};
use super::error::MeshError;
use super::issuer;
use super::spiffe::{SpiffeId, TrustDomain};
use super::verify;

/// The node CA, ready to issue.
pub(crate) struct NodeCa {
    pub cert: CertificateDer<'static>,
    pub key: KeyPair,
    /// Not a certificate anyone sees: rcgen 0.13 takes the issuer's name and
    /// key identifier from a `Certificate`, so this one carries the node CA's
    /// subject and subject key identifier (read from the real certificate).
    pub issuer: rcgen::Certificate,
    /// Whether the node CA has a subject key identifier to repeat as the
    /// leaves' authority key identifier (OpenSSL refuses a mismatched pair).
    pub has_key_id: bool,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for NodeCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCa")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(file: &Path) -> Result<Vec<u8>, MeshError> {
    std::fs::read(file).map_err(|source| MeshError::Read {
        file: file.to_owned(),
        source,
    })
}

/// Every root of the bundle; at least one.
pub(crate) fn load_bundle(file: &Path) -> Result<Vec<TrustAnchor<'static>>, MeshError> {
    let fail = |reason: String| MeshError::Bundle {
        file: file.to_owned(),
        reason,
    };
    let bytes = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE block found".into()));
    }
    certs
        .iter()
        .map(|c| {
            webpki::anchor_from_trusted_cert(c)
                .map(|a| a.to_owned())
                .map_err(|e| fail(format!("unusable root certificate: {e}")))
        })
        .collect()
}

/// Reads and checks the node CA: it parses, it is a CA, the key is its key,
/// it is valid at `now`, and a leaf it issues verifies against `roots`.
pub(crate) fn load(
    cert_file: &Path,
    key_file: &Path,
    roots: &[TrustAnchor<'static>],
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<NodeCa, MeshError> {
    let cert_err = |reason: String| MeshError::NodeCa {
        file: cert_file.to_owned(),
        reason,
    };
    let key_err = |reason: String| MeshError::NodeCa {
        file: key_file.to_owned(),
        reason,
    };

    let bytes = read(cert_file)?;
    let cert = CertificateDer::pem_slice_iter(&bytes)
        .next()
        .ok_or_else(|| cert_err("no CERTIFICATE block found".into()))?
        .map_err(|e| cert_err(format!("invalid PEM: {e}")))?;
    let fields = CertFields::parse(&cert).map_err(|e| cert_err(e.to_string()))?;
    if !fields.is_ca().map_err(|e| cert_err(e.to_string()))? {
        return Err(cert_err("not a CA (basicConstraints cA is not set)".into()));
    }
    if now < fields.not_before {
        return Err(cert_err("not valid yet".into()));
    }
    if now >= fields.not_after {
        return Err(cert_err("expired".into()));
    }

    let bytes = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| key_err(format!("no usable private key: {e}")))?;
    if !matches!(key, PrivateKeyDer::Pkcs8(_)) {
        return Err(key_err(
            "not a PKCS#8 key (\"BEGIN PRIVATE KEY\"; cert-manager: privateKey.encoding: PKCS8)"
                .into(),
        ));
    }
    let key =
        KeyPair::try_from(&key).map_err(|e| key_err(format!("unsupported private key: {e}")))?;
    if public_key_bits(fields.spki) != Some(key.public_key_raw()) {
        return Err(key_err(format!(
            "not the key of the certificate in {}",
            cert_file.display()
        )));
    }

    let key_id = fields
        .subject_key_id()
        .map_err(|e| cert_err(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name =
        distinguished_name(fields.subject).map_err(|e| cert_err(format!("subject: {e}")))?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    if let Some(id) = key_id {
        params.key_identifier_method = KeyIdMethod::PreSpecified(id.to_vec());
    }
    let issuer = params
        .self_signed(&key)
        .map_err(|e| key_err(format!("cannot sign with this key: {e}")))?;
    let ca = NodeCa {
        cert: cert.clone(),
        key,
        issuer,
        has_key_id: key_id.is_some(),
        not_after: fields.not_after,
    };
    probe(&ca, &fields, roots, trust_domain, now).map_err(cert_err)?;
    Ok(ca)
}

/// Issues a throwaway leaf and verifies it as a peer would: proves the node
/// CA chains to the bundle and that the leaves' issuer name matches the
/// node CA's subject byte for byte (webpki compares names as bytes, and the
/// subject is re-encoded by rcgen).
fn probe(
    ca: &NodeCa,
    fields: &CertFields<'_>,
    roots: &[TrustAnchor<'static>],
    trust_domain: &TrustDomain,
    now: SystemTime,
) -> Result<(), String> {
    let id = SpiffeId::new(trust_domain.clone(), "weir-probe", "weir-probe")
        .map_err(|e| e.to_string())?;
    let leaf =
        issuer::issue(ca, &id, super::DEFAULT_WORKLOAD_CERT_TTL, now).map_err(|e| e.to_string())?;
    let leaf_der = &leaf.key.cert[0];
    let issuer_name = der::issuer_name(leaf_der).map_err(|e| e.to_string())?;
    if issuer_name != fields.subject {
        return Err("its subject name cannot be re-encoded byte for byte \
                    (unusual string types or repeated attributes)"
            .into());
    }
    verify::verify_chain(
        roots,
        leaf_der,
        std::slice::from_ref(&ca.cert),
        now,
        webpki::KeyUsage::server_auth(),
    )
    .map_err(|e| format!("does not chain to the trust bundle: {e}"))
}

/// The subjectPublicKey bits of a SubjectPublicKeyInfo (without the
/// unused-bits byte): what rcgen calls the raw public key.
fn public_key_bits(spki: &[u8]) -> Option<&[u8]> {
    let mut input = spki;
    let mut body = der::next(&mut input).ok()?.body;
    der::next(&mut body).ok()?; // algorithm
    let bits = der::next(&mut body).ok()?;
    (bits.tag == 0x03).then_some(())?;
    bits.body
        .split_first()
        .filter(|(u, _)| **u == 0)
        .map(|(_, k)| k)
}

/// The subject as rcgen will write it again: same attributes, same order,
/// same string types.
fn distinguished_name(subject: &[u8]) -> Result<DistinguishedName, String> {
    const PRINTABLE: u8 = 0x13;
    const UTF8: u8 = 0x0c;
    const IA5: u8 = 0x16;
    let mut dn = DistinguishedName::new();
    for attr in der::name_attributes(subject).map_err(|e| e.to_string())? {
        let ty = DnType::from_oid(&der::oid_arcs(attr.oid).map_err(|e| e.to_string())?);
        let text = std::str::from_utf8(attr.value)
            .map_err(|_| "attribute value is not text".to_owned())?
            .to_owned();
        let value = match attr.tag {
            PRINTABLE => DnValue::PrintableString(text.try_into().map_err(|e| format!("{e}"))?),
            IA5 => DnValue::Ia5String(text.try_into().map_err(|e| format!("{e}"))?),
            UTF8 => DnValue::Utf8String(text),
            other => return Err(format!("unsupported string type 0x{other:02x}")),
        };
        if dn.get(&ty).is_some() {
            return Err("an attribute type appears twice".into());
        }
        dn.push(ty, value);
    }
    Ok(dn)
}
