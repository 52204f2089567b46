//! TLS rules: required pairs, and that every named file exists (its
//! contents are parsed when the config is built).

use std::path::Path;

use super::super::error::DocPath;
use super::super::parse::FileChecks;
use super::super::tls::{DownstreamTlsConfig, UpstreamTlsConfig};
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
            self.file_exists(p.key("cert_chain_file"), &c.cert_chain_file);
            self.file_exists(p.key("private_key_file"), &c.private_key_file);
            self.server_names(&p.key("server_names"), &c.server_names);
        }
        match &tls.client_ca_file {
            Some(f) => self.file_exists(path.key("client_ca_file"), f),
            None if tls.require_client_certificate => self.report(
                path.key("require_client_certificate"),
                "require_client_certificate needs client_ca_file",
            ),
            None => {}
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
        if let Some(f) = &tls.ca_file {
            self.file_exists(path.key("ca_file"), f);
            if tls.insecure_skip_verify {
                self.report(
                    path.key("insecure_skip_verify"),
                    "insecure_skip_verify with ca_file: choose one",
                );
            }
        }
        match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(c), Some(k)) => {
                self.file_exists(path.key("client_cert_file"), c);
                self.file_exists(path.key("client_key_file"), k);
            }
            (Some(_), None) => self.report(
                path.key("client_key_file"),
                "client_cert_file needs client_key_file",
            ),
            (None, Some(_)) => self.report(
                path.key("client_cert_file"),
                "client_key_file needs client_cert_file",
            ),
            (None, None) => {}
        }
        if let Some(sni) = &tls.sni
            && (sni.is_empty() || rustls_pki_types::ServerName::try_from(sni.as_str()).is_err())
        {
            self.report(path.key("sni"), format!("invalid sni {sni:?}"));
        }
    }

    fn file_exists(&mut self, path: DocPath, file: &Path) {
        if self.files == FileChecks::MustExist && !file.is_file() {
            self.report(path, format!("file {} does not exist", file.display()));
        }
    }
}
