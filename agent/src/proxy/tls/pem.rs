//! PEM files: certificate chains, private keys, CA bundles. Errors name the
//! config field and the file.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

fn read(field: &str, file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        field: field.to_owned(),
        file: file.to_owned(),
        source,
    })
}

fn pem_error(field: &str, file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem {
        field: field.to_owned(),
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// Every certificate in `file`; at least one.
pub fn certs(field: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(field, file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(field, file, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(field, file, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The first private key in `file` (PKCS#8, PKCS#1 or SEC1).
pub fn key(field: &str, file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(field, file)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| pem_error(field, file, format!("no usable private key: {e}")))
}

/// A root store from a CA bundle file.
pub fn roots(field: &str, file: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(field, file)? {
        store
            .add(c)
            .map_err(|e| pem_error(field, file, format!("unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// (modified time, length) of `file`, to notice changes.
pub fn stamp(file: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}
