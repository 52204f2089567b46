//! Installing and finding the programs the benchmark runs, idempotently:
//! nginx, wrk, h2load (nghttp2-client) and openssl from Debian, Envoy 1.40
//! ([`crate::envoy`], shared with `cargo xtask test`), weir built in release mode here.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::envoy::ensure_envoy;
use crate::install::ensure_apt_packages;
use crate::run::{command_output, run};

#[derive(Debug, Clone)]
pub struct Tools {
    pub wrk: PathBuf,
    pub nginx: PathBuf,
    /// The HTTP/2 load.
    pub h2load: PathBuf,
    /// Makes the TLS listeners' certificate.
    pub openssl: PathBuf,
    pub envoy: Option<PathBuf>,
    pub weir: Option<PathBuf>,
}

/// Installs what is missing; `envoy`/`weir` say whether those are wanted.
pub fn ensure(root: &Path, envoy: bool, weir: bool) -> Result<Tools> {
    ensure_apt_packages(&["nginx", "wrk", "nghttp2-client", "openssl"])?;
    Ok(Tools {
        wrk: on_path("wrk")?,
        h2load: on_path("h2load")?,
        openssl: on_path("openssl")?,
        nginx: on_path("nginx").or_else(|_| {
            let sbin = PathBuf::from("/usr/sbin/nginx");
            if sbin.exists() {
                Ok(sbin)
            } else {
                bail!("nginx is installed but not found on PATH nor at /usr/sbin/nginx")
            }
        })?,
        envoy: envoy.then(|| ensure_envoy(root)).transpose()?,
        weir: weir.then(|| build_weir(root)).transpose()?,
    })
}

pub fn on_path(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` not found on PATH"))
}

/// `cargo build --release` of the `weir` binary; fails clearly if this
/// branch's weir has no `proxy` command yet.
pub fn build_weir(root: &Path) -> Result<PathBuf> {
    println!(
        "xtask: building weir (usually about 5 minutes on 2 cores from nothing, less after a change): \
         cargo build --release -p weir-agent --bin weir"
    );
    run(crate::cargo(root).args(["build", "--release", "-p", "weir-agent", "--bin", "weir"]))?;
    let weir = root.join("target/release/weir");
    if command_output(Command::new(&weir).args(["proxy", "--help"])).is_err() {
        bail!(
            "{} has no `proxy` command on this branch; merge the proxy engine, \
             or leave weir out: --peers envoy,nginx",
            weir.display()
        );
    }
    Ok(weir)
}

/// One line naming a tool's version, for the report.
pub fn version_line(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output();
    match out {
        Ok(out) => {
            // nginx and wrk print their version on stderr.
            let text = [out.stdout, out.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("?")
                .to_owned()
        }
        Err(_) => "?".to_owned(),
    }
}
