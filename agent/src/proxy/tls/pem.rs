//! PEM, from files or inline in the config: certificate chains, private
//! keys, CA bundles. Errors name the config field and the file (or say
//! "inline PEM"); the same checks apply either way.

use std::borrow::Cow;
use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{PemOrigin, TlsError};
use crate::config::{PemField, PemSource};

/// The PEM text of a field, with what errors about it name.
struct Read<'a> {
    field: String,
    origin: PemOrigin,
    bytes: Cow<'a, [u8]>,
}

impl Read<'_> {
    fn error(&self, reason: impl Into<String>) -> TlsError {
        TlsError::Pem {
            field: self.field.clone(),
            origin: self.origin.clone(),
            reason: reason.into(),
        }
    }
}

/// The full name of `field` under `path`, in the spelling given.
pub fn field_name(path: &str, field: &PemField<'_>) -> String {
    format!("{path}.{}", field.key())
}

fn read<'a>(path: &str, field: &PemField<'a>) -> Result<Read<'a>, TlsError> {
    let name = field_name(path, field);
    match field.source() {
        Some(PemSource::File(file)) => match std::fs::read(file) {
            Ok(bytes) => Ok(Read {
                field: name,
                origin: PemOrigin::File(file.to_owned()),
                bytes: Cow::Owned(bytes),
            }),
            Err(source) => Err(TlsError::Read {
                field: name,
                file: file.to_owned(),
                source,
            }),
        },
        Some(PemSource::Inline(text)) => Ok(Read {
            field: name,
            origin: PemOrigin::Inline,
            bytes: Cow::Borrowed(text.as_bytes()),
        }),
        // Validation refuses this first; kept as an error for callers
        // that skip it.
        None => Err(TlsError::Invalid {
            field: name,
            reason: format!("{} or {} is required", field.file_key(), field.inline_key()),
        }),
    }
}

/// Every certificate in `field`; at least one.
pub fn certs(path: &str, field: PemField<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(&read(path, &field)?)
}

fn parse_certs(read: &Read<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read.error(format!("invalid PEM: {}", summary(&e))))?;
    if certs.is_empty() {
        return Err(read.error("no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The first private key in `field` (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &str, field: PemField<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read = read(path, &field)?;
    PrivateKeyDer::from_pem_slice(&read.bytes)
        .map_err(|e| read.error(format!("no usable private key: {}", summary(&e))))
}

/// What went wrong, without the parser's own text: that quotes the input
/// (a BEGIN line, decoded bytes), and a key whose line breaks YAML folded
/// away is all one BEGIN line.
fn summary(error: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { .. } => "a section has no END line",
        Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        Error::Base64Decode(_) => "a section is not valid base64",
        Error::NoItemsFound => "none found",
        Error::SectionTooLarge => "a section is too large",
        Error::Io(_) => "unreadable",
        _ => "unparsable",
    }
}

/// A root store from the CA bundle in `field`.
pub fn roots(path: &str, field: PemField<'_>) -> Result<RootCertStore, TlsError> {
    let read = read(path, &field)?;
    let mut store = RootCertStore::empty();
    for c in parse_certs(&read)? {
        store
            .add(c)
            .map_err(|e| read.error(format!("unusable CA certificate: {e}")))?;
    }
    Ok(store)
}

/// (modified time, length) of `file`, to notice changes.
pub fn stamp(file: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsCertificateConfig;

    fn certificate(yaml: &str) -> TlsCertificateConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// Inline PEM gets the file's checks; errors say "inline PEM" where a
    /// file would be named, and never quote the text.
    #[test]
    fn inline_pem_is_checked_as_files_are() {
        let pair = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let good = certificate(&format!(
            "{{cert_chain: {:?}, private_key: {:?}}}",
            pair.cert.pem(),
            pair.key_pair.serialize_pem()
        ));
        assert_eq!(certs("c", good.cert_chain_pem()).unwrap().len(), 1);
        assert!(key("c", good.private_key_pem()).is_ok());
        assert_eq!(roots("c", good.cert_chain_pem()).unwrap().len(), 1);

        let bad = certificate(
            "{cert_chain: not PEM, private_key: \"-----BEGIN PRIVATE KEY-----\\nSECRET\\n\"}",
        );
        let err = |e: TlsError| e.to_string();
        assert_eq!(
            err(certs("l.tls.certificates[0]", bad.cert_chain_pem()).unwrap_err()),
            "l.tls.certificates[0].cert_chain: inline PEM: no CERTIFICATE block found"
        );
        let e = err(key("l.tls.certificates[0]", bad.private_key_pem()).unwrap_err());
        assert!(
            e.starts_with("l.tls.certificates[0].private_key: inline PEM: "),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");
        // Folded by YAML onto one line, the key is all BEGIN line: the
        // parser's own error would spell it out (as decimal bytes).
        let folded = certificate(
            "{private_key: \"-----BEGIN PRIVATE KEY----- SECRETKEYTEXT -----END PRIVATE KEY-----\"}",
        );
        let e = err(key("t", folded.private_key_pem()).unwrap_err());
        assert_eq!(
            e,
            "t.private_key: inline PEM: no usable private key: a section has no END line"
        );
        let garbled = certificate("{cert_chain: \"-----BEGIN CERTIFICATE-----\\n!!\\n\"}");
        let e = err(certs("t", garbled.cert_chain_pem()).unwrap_err());
        assert!(
            e.starts_with("t.cert_chain: inline PEM: invalid PEM"),
            "{e}"
        );
        let neither = certificate("{}");
        assert_eq!(
            err(certs("t", neither.cert_chain_pem()).unwrap_err()),
            "t.cert_chain_file: cert_chain_file or cert_chain is required"
        );
    }
}
