//! The test API server's keys and certificates, made with openssl: a CA, a
//! serving certificate it signs for 127.0.0.1, and the service-account signing key.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cmd;

pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Signs service-account tokens; its public half verifies them.
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Writes everything into `dir` (the server's cert dir). P-256 keys: quick to
    /// make on a loaded machine, and both Go and rustls speak them.
    pub fn create(dir: &Path) -> Result<Pki> {
        let path = |name: &str| dir.join(name);
        let p = |path: &PathBuf| path.to_str().expect("temp paths are UTF-8").to_owned();
        let pki = Pki {
            ca_cert: path("ca.crt"),
            serving_cert: path("apiserver.crt"),
            serving_key: path("apiserver.key"),
            service_account_key: path("sa.key"),
            service_account_pub: path("sa.pub"),
        };
        let ca_key = path("ca.key");
        let csr = path("apiserver.csr");
        let ext = path("apiserver.ext");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(ec);
        let (ca_key_s, ca_cert_s) = (p(&ca_key), p(&pki.ca_cert));
        ca.extend(["-keyout", &ca_key_s, "-out", &ca_cert_s]);
        ca.extend(["-subj", "/CN=weir-test-ca"]);
        cmd::run("openssl", &ca)?;

        let (key_s, csr_s) = (p(&pki.serving_key), p(&csr));
        let mut req = vec!["req", "-nodes"];
        req.extend(ec);
        req.extend([
            "-keyout",
            &key_s,
            "-out",
            &csr_s,
            "-subj",
            "/CN=kube-apiserver",
        ]);
        cmd::run("openssl", &req)?;
        let (cert_s, ext_s) = (p(&pki.serving_cert), p(&ext));
        cmd::run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr_s,
                "-CA",
                &ca_cert_s,
                "-CAkey",
                &ca_key_s,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext_s,
                "-out",
                &cert_s,
            ],
        )?;

        let (sa_key_s, sa_pub_s) = (p(&pki.service_account_key), p(&pki.service_account_pub));
        cmd::run(
            "openssl",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &sa_key_s,
            ],
        )?;
        cmd::run(
            "openssl",
            &["ec", "-in", &sa_key_s, "-pubout", "-out", &sa_pub_s],
        )?;
        Ok(pki)
    }
}
