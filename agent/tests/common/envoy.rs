//! A real Envoy for the parity test, started like `common::Proxy` starts
//! weir: on a config whose addresses are loopback with port 0, its admin
//! address read from the file `--admin-address-path` writes, its listeners'
//! addresses from the admin's `/listeners?format=json`, ready when `/ready`
//! answers `LIVE`. Killed (by PID) on drop, so a failing test leaves no
//! Envoy behind. Included with `#[path = "common/envoy.rs"] mod envoy;`
//! beside `mod common;`.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::get;

/// Names the Envoy binary; `cargo xtask test` installs Envoy 1.40 and sets it.
pub const BINARY_ENV: &str = "WEIR_ENVOY";

/// `1` skips the comparison with Envoy instead of failing without it.
pub const SKIP_ENV: &str = "WEIR_SKIP_ENVOY_PARITY";

/// How long Envoy may take to start, initialise its clusters (their first
/// DNS resolution included) and answer `/ready`, on a loaded machine.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The Envoy binary to compare weir against, or `None` when the caller
/// asked to skip the comparison (`WEIR_SKIP_ENVOY_PARITY=1`). Without
/// either, fails saying how to get Envoy, as the other tests do for the
/// tools they need.
pub fn binary() -> Option<PathBuf> {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("{SKIP_ENV}=1: the comparison with Envoy is skipped");
        return None;
    }
    let Some(path) = std::env::var_os(BINARY_ENV).map(PathBuf::from) else {
        panic!(
            "{BINARY_ENV} is not set: run `cargo xtask test` (installs Envoy 1.40 and sets it), \
             or set {BINARY_ENV} to an Envoy 1.40 binary; {SKIP_ENV}=1 skips this test"
        );
    };
    assert!(
        path.is_file(),
        "{BINARY_ENV}={} is not a file: run `cargo xtask test` (installs Envoy 1.40), \
         or point {BINARY_ENV} at an Envoy 1.40 binary",
        path.display()
    );
    Some(path)
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
}

impl Envoy {
    /// Start `binary` on `config` (Envoy's YAML bootstrap); waits for `/ready`.
    pub async fn start(binary: &Path, config: &str) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let admin_path = dir.path().join("admin.address");
        let child = Command::new(binary)
            .arg("--config-path")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            // No shared memory, so runs beside other Envoys (a benchmark,
            // another test) never clash.
            .arg("--disable-hot-restart")
            // One worker: its round robin is then one rotation, as weir's
            // is, and it is light on a 2-core machine.
            .arg("--concurrency")
            .arg("1")
            .args(["--log-level", "info", "--log-path"])
            .arg(dir.path().join("envoy.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut envoy = Envoy {
            child,
            dir,
            admin: "0.0.0.0:0".parse().unwrap(),
        };
        let deadline = Instant::now() + START_LIMIT;
        envoy.admin = loop {
            // Written once the admin listener is bound.
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                break addr;
            }
            envoy.check_running(deadline, "write its admin address");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        loop {
            let (status, body) = envoy.admin_get("/ready").await;
            if status == 200 && body.trim() == "LIVE" {
                return envoy;
            }
            envoy.check_running(deadline, "be ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Panics with Envoy's log when it exited or `deadline` passed.
    fn check_running(&mut self, deadline: Instant, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "Envoy exited ({status}) before it could {what}; its log:\n{}",
                self.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not {what} within {START_LIMIT:?}; its log:\n{}",
            self.log()
        );
    }

    /// The bound address of the listener `name` (kernel-picked port).
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let (status, body) = self.admin_get("/listeners?format=json").await;
        assert_eq!(status, 200, "Envoy /listeners: {body}");
        let listeners: serde_json::Value = serde_json::from_str(&body).expect("listeners JSON");
        let found = listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("Envoy has no listener {name}: {body}"));
        let socket = &found["local_address"]["socket_address"];
        let ip = socket["address"].as_str().expect("listener address");
        let port = socket["port_value"].as_u64().expect("listener port");
        format!("{ip}:{port}")
            .parse()
            .expect("listener socket address")
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        get(&format!("http://{}{path}", self.admin)).await
    }

    /// The Prometheus exposition, `/stats/prometheus`.
    pub async fn metrics(&self) -> String {
        self.admin_get("/stats/prometheus").await.1
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
