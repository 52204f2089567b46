//! `weir uninstall`: everything weir left in the kernel, gone.
//!
//! What outlives an agent is what it pinned (links keep programs attached to
//! pods' cgroups and network namespaces; maps keep their state). Removing the
//! pins drops the kernel's last references (a running agent holds no
//! descriptor on its pinned links, only on the maps and programs), and the
//! kernel then detaches the links and frees the programs and maps once no
//! agent holds them. Nothing
//! else survives an agent: its unpinned links and its in-pod listeners close
//! with its process.

use std::io;
use std::path::{Path, PathBuf};

use super::DatapathError;
use super::pin::remove_pins;

/// What [`uninstall`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Uninstalled {
    /// Pods whose links were pinned, over every layout version found.
    pub pods: usize,
    /// Pinned files removed (links and maps).
    pub pins: usize,
}

/// Removes every weir pin under `pin_root` (every layout version) and the
/// directory itself. A missing `pin_root` is not an error: nothing to do.
/// Refuses a directory that is not on a bpffs or holds anything at its top
/// level but weir's layout directories (`v<N>`), so a wrong path deletes nothing.
pub fn uninstall(pin_root: &Path) -> Result<Uninstalled, DatapathError> {
    if !pin_root.exists() {
        return Ok(Uninstalled::default());
    }
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source: io::Error| DatapathError::Pin { path, source }
    };
    let fs = nix::sys::statfs::statfs(pin_root).map_err(|e| err(pin_root)(e.into()))?;
    if fs.filesystem_type().0 as i64 != super::pin::BPF_FS_MAGIC {
        return Err(DatapathError::NotBpffs(pin_root.to_path_buf()));
    }
    let versions = layout_versions(pin_root).map_err(err(pin_root))?;
    let mut done = Uninstalled::default();
    for version in &versions {
        let pods = version.join("pods");
        if pods.is_dir() {
            done.pods += std::fs::read_dir(&pods).map_err(err(&pods))?.count();
        }
        done.pins += remove_pins(version).map_err(err(version))?;
    }
    std::fs::remove_dir(pin_root).map_err(err(pin_root))?;
    Ok(done)
}

/// The `v<N>` directories under the root; anything else there is refused.
fn layout_versions(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_layout = super::pin::is_layout_dir_name(&name);
        if !is_layout || !entry.file_type()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not weir's (expected only v<N> layout directories); nothing removed",
                    entry.path().display()
                ),
            ));
        }
        versions.push(entry.path());
    }
    Ok(versions)
}
