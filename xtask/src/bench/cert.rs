//! The one self-signed certificate every TLS listener of a run serves, made
//! with the openssl CLI under the run's directory: ECDSA P-256, for
//! `localhost` and 127.0.0.1, valid two days. The load tools do not verify it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::configs::Cert;
use crate::run::command_output;

pub fn self_signed(openssl: &Path, dir: &Path) -> Result<Cert> {
    let cert = Cert {
        chain: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    command_output(&mut command(openssl, &cert))
        .context("could not make the benchmark's self-signed certificate")?;
    for file in [&cert.chain, &cert.key] {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("openssl wrote no {}", file.display()))?;
        anyhow::ensure!(
            text.contains("-----BEGIN "),
            "{} is not PEM",
            file.display()
        );
    }
    Ok(cert)
}

fn command(openssl: &Path, cert: &Cert) -> Command {
    let mut cmd = Command::new(openssl);
    cmd.args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&cert.key)
        .arg("-out")
        .arg(&cert.chain);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_writes_both_files_under_the_run_directory() {
        let cert = Cert {
            chain: "/run/cert.pem".into(),
            key: "/run/key.pem".into(),
        };
        let cmd = command(Path::new("openssl"), &cert);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(after("-keyout"), "/run/key.pem");
        assert_eq!(after("-out"), "/run/cert.pem");
        assert_eq!(after("-newkey"), "ec");
    }
}
