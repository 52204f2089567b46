//! TLS rules: each PEM setting given once (as a file or inline), required
//! pairs, and that every named file exists (contents, inline or not, are
//! parsed when the config is built).

use std::path::Path;

use super::super::error::DocPath;
use super::super::parse::FileChecks;
use super::super::tls::{DownstreamTlsConfig, PemField, PemSource, UpstreamTlsConfig};
use super::Checker;
use super::syntax::check_server_name;

impl Checker<'_> {
    pub(super) fn downstream_tls(&mut self, path: &DocPath, tls: &DownstreamTlsConfig) {
        let certs = path.key("certificates");
        if tls.certificates.is_empty() {
            self.report(
                certs.clone(),
                "a TLS listener needs at least one certificate",
            );
        }
        for (i, c) in tls.certificates.iter().enumerate() {
            let p = certs.index(i);
            self.pem(&p, c.cert_chain_pem(), true);
            self.pem(&p, c.private_key_pem(), true);
            self.server_names(&p.key("server_names"), &c.server_names);
        }
        let ca = tls.client_ca_pem();
        self.pem(path, ca, false);
        if ca.given().is_none() && tls.require_client_certificate {
            self.report(
                path.key("require_client_certificate"),
                format!(
                    "require_client_certificate needs {} or {}",
                    ca.file_key(),
                    ca.inline_key()
                ),
            );
        }
    }

    /// Each of `names` is a DNS name or `*.suffix`.
    pub(super) fn server_names(&mut self, path: &DocPath, names: &[String]) {
        for (j, name) in names.iter().enumerate() {
            if let Err(reason) = check_server_name(name) {
                self.report(path.index(j), reason);
            }
        }
    }

    pub(super) fn upstream_tls(&mut self, path: &DocPath, tls: &UpstreamTlsConfig) {
        let ca = tls.ca_pem();
        self.pem(path, ca, false);
        if ca.given().is_some() && tls.insecure_skip_verify {
            self.report(
                path.key("insecure_skip_verify"),
                format!("insecure_skip_verify with {}: choose one", ca.key()),
            );
        }
        let (cert, key) = (tls.client_cert_pem(), tls.client_key_pem());
        for (given, missing) in [(cert, key), (key, cert)] {
            self.pem(path, given, false);
            if given.given().is_some() && missing.given().is_none() {
                self.report(
                    path.key(&missing.file_key()),
                    format!(
                        "{} needs {} or {}",
                        given.key(),
                        missing.file_key(),
                        missing.inline_key()
                    ),
                );
            }
        }
        if let Some(sni) = &tls.sni
            && (sni.is_empty() || rustls_pki_types::ServerName::try_from(sni.as_str()).is_err())
        {
            self.report(path.key("sni"), format!("invalid sni {sni:?}"));
        }
    }

    /// `field` under `path` is given at most once, and exactly once when
    /// `required`; a file named exists.
    fn pem(&mut self, path: &DocPath, field: PemField<'_>, required: bool) {
        let (file_key, inline_key) = (field.file_key(), field.inline_key());
        if field.both() {
            self.report(
                path.key(inline_key),
                format!("{file_key} and {inline_key}: choose one"),
            );
            return;
        }
        match field.source() {
            // Never quoted back: pasted into the file field, it may be a key.
            Some(PemSource::File(f)) if looks_like_pem(f) => self.report(
                path.key(&file_key),
                format!(
                    "holds PEM text, not a file path (not repeated here: it may be a key); give the PEM as {inline_key}"
                ),
            ),
            Some(PemSource::File(f)) => self.file_exists(path.key(&file_key), f),
            // Only the key fields are redacted where the config is shown or
            // logged; a key anywhere else would be printed in full.
            Some(PemSource::Inline(text))
                if !field.holds_a_key() && text.contains("PRIVATE KEY") =>
            {
                self.report(
                    path.key(inline_key),
                    "holds a private key, which only a key field keeps out of /config_dump and logs; give the certificates alone here and the key as a key field",
                )
            }
            Some(PemSource::Inline(_)) => {}
            None if required => {
                self.report(
                    path.clone(),
                    format!("{file_key} or {inline_key} is required"),
                );
            }
            None => {}
        }
    }

    fn file_exists(&mut self, path: DocPath, file: &Path) {
        if self.files == FileChecks::MustExist && !file.is_file() {
            self.report(path, format!("file {} does not exist", file.display()));
        }
    }
}

/// A "path" that is PEM text (a key pasted into a `*_file` field).
fn looks_like_pem(file: &Path) -> bool {
    let bytes = file.as_os_str().as_encoded_bytes();
    bytes.contains(&b'\n') || bytes.windows(10).any(|w| w == b"-----BEGIN")
}
