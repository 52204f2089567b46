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
use super::pin::in_removal_order;

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
        done.pins += remove_tree(version).map_err(err(version))?;
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

/// Removes a directory tree of pins, deepest first; returns the files removed.
/// A directory's files go in the order a pod's pins must (sockops after the
/// connect hooks: `pin::in_removal_order`), so a pod caught by `weir
/// uninstall` (or a layout pruned whole) loses its hooks as an un-enrolled
/// pod does, not in whatever order the directory lists them.
pub(super) fn remove_tree(dir: &Path) -> io::Result<usize> {
    let removed = removal_order(dir)?;
    let files = removed.iter().filter(|(_, is_dir)| !is_dir).count();
    for (path, is_dir) in removed {
        if is_dir {
            std::fs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(files)
}

/// What [`remove_tree`] removes, in order: each directory's subdirectories
/// (recursively) and then its files, then the directory itself; `true` marks
/// a directory.
fn removal_order(dir: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut order = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            order.extend(removal_order(&entry.path())?);
        } else {
            files.push(entry.path());
        }
    }
    order.extend(in_removal_order(files).into_iter().map(|f| (f, false)));
    order.push((dir.to_path_buf(), true));
    Ok(order)
}

#[cfg(test)]
mod tests {
    use weir_common::{PROG_CONNECT4, PROG_CONNECT6, PROG_SK_LOOKUP, PROG_SOCKOPS};

    use super::*;

    /// Each pod's sockops goes after its connect hooks, whatever order the
    /// directory lists them in, and every directory after what it holds.
    #[test]
    fn a_tree_goes_pod_by_pod_with_sockops_after_the_connect_hooks() {
        let root = tempfile::tempdir().unwrap();
        let version = root.path().join("v3");
        let maps = version.join("maps");
        std::fs::create_dir_all(&maps).unwrap();
        std::fs::write(maps.join("WEIR_SETTINGS"), "").unwrap();
        let pods: Vec<PathBuf> = (0..6)
            .map(|i| version.join("pods").join(format!("uid-{i}")))
            .collect();
        let hooks = [PROG_SOCKOPS, PROG_CONNECT4, PROG_SK_LOOKUP, PROG_CONNECT6];
        for (i, pod) in pods.iter().enumerate() {
            std::fs::create_dir_all(pod).unwrap();
            // Created in a different order for each pod.
            for hook in hooks.iter().cycle().skip(i).take(hooks.len()) {
                std::fs::write(pod.join(hook), "").unwrap();
            }
        }
        let order = removal_order(&version).unwrap();
        let at = |path: &Path| order.iter().position(|(p, _)| p == path).unwrap();
        for pod in &pods {
            let sockops = at(&pod.join(PROG_SOCKOPS));
            for hook in [PROG_CONNECT4, PROG_SK_LOOKUP, PROG_CONNECT6] {
                assert!(at(&pod.join(hook)) < sockops, "{order:?}");
            }
            assert!(sockops < at(pod));
        }
        assert!(at(&version.join("pods")) < at(&version));
        assert_eq!(order.last(), Some(&(version.clone(), true)));

        assert_eq!(remove_tree(&version).unwrap(), 6 * hooks.len() + 1);
        assert!(!version.exists());
    }
}
