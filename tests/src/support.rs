//! Small things every end-to-end test needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use weir::inpod::PodListeners;

use crate::{SimPod, wait};

/// The data-path tests need root (BPF, namespaces, cgroups); say so plainly.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the eBPF data-path tests need root (BPF, namespaces, cgroups): run them as root"
    );
}

/// A helper binary of this package (`sim-client`, `sim-server`), which cargo
/// builds next to the test binaries' `deps/` directory.
pub fn helper_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} not built next to {}", exe.display()))
}

pub fn sim_client() -> PathBuf {
    helper_bin("sim-client")
}

pub fn sim_server() -> PathBuf {
    helper_bin("sim-server")
}

/// Closes a pod's proxy listeners the way a dying agent does, and waits until
/// the kernel has really dropped them: a child that another test is forking at
/// that moment holds a copy of every descriptor until its exec.
pub fn close_listeners(pod: &SimPod, listeners: PodListeners) -> Result<()> {
    let addrs = [listeners.v4.local_addr()?, listeners.v6.local_addr()?];
    drop(listeners);
    let closed = wait::until(Duration::from_secs(5), || {
        addrs.iter().all(|addr| {
            pod.netns()
                .run(|| std::net::TcpStream::connect(addr).is_err())
                .unwrap_or(false)
        })
    });
    anyhow::ensure!(closed, "the listeners {addrs:?} are still open");
    Ok(())
}

/// Waits up to `timeout` until `GET /ready` on `admin`, from inside `pod`'s
/// network namespace, answers 200 (a sidecar proxy's admin listener).
pub fn wait_ready_in(pod: &SimPod, admin: SocketAddr, timeout: Duration) -> bool {
    wait::until(timeout, || {
        pod.netns()
            .run(move || crate::agent::http_get(admin, "/ready").is_ok_and(|(s, _)| s == 200))
            .unwrap_or(false)
    })
}

/// A directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory named `<prefix>-XXXXXX`.
    pub fn new(prefix: &str) -> Result<TempDir> {
        let template = std::env::temp_dir().join(format!("{prefix}-XXXXXX"));
        let path = nix::unistd::mkdtemp(&template).context("creating a temp dir")?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
