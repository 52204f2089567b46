//! Pinning in bpffs, so the data path outlives the agent process.
//!
//! Layout under the pin root (default `/sys/fs/bpf/weir`):
//! `v<layout>/maps/<MAP>` for every map, `v<layout>/pods/<uid>/<program>` for
//! each enrolled pod's links. Pinned links keep a pod's hooks attached while
//! the agent is down, which is what makes fail-closed possible; pinned maps let
//! the next agent adopt the pods' state instead of starting from nothing.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::programs::links::{FdLink, PinnedLink};
use weir_common::{MAP_LAYOUT_VERSION, OBSOLETE_MAPS, PROG_SOCKOPS};

use super::{DatapathError, sys};

/// Where weir pins by default.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/weir";

pub(super) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Clone, Debug)]
pub(super) struct PinLayout {
    base: PathBuf,
}

impl PinLayout {
    /// Checks that `root` is on a bpffs and creates the layout below it.
    pub(super) fn create(root: &Path) -> Result<Self, DatapathError> {
        let pin_err = |source: io::Error| DatapathError::Pin {
            path: root.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(root).map_err(pin_err)?;
        let fs = nix::sys::statfs::statfs(root).map_err(|e| pin_err(e.into()))?;
        if fs.filesystem_type().0 as i64 != BPF_FS_MAGIC {
            return Err(DatapathError::NotBpffs(root.to_path_buf()));
        }
        let layout = Self {
            base: root.join(format!("v{MAP_LAYOUT_VERSION}")),
        };
        for dir in [layout.maps_dir(), layout.pods_dir()] {
            std::fs::create_dir_all(&dir).map_err(|source| DatapathError::Pin {
                path: dir.clone(),
                source,
            })?;
        }
        // The pinned links an earlier agent left run this agent's programs
        // once adopted, so nothing reads the maps they replaced: free them.
        for name in OBSOLETE_MAPS {
            let path = layout.map_path(name);
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!("removed obsolete pinned map {}", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(DatapathError::Pin { path, source }),
            }
        }
        Ok(layout)
    }

    /// The other `v<N>` layout directories beside this one: what agents
    /// built with another map layout pinned (an upgrade or a downgrade).
    pub(super) fn other_layouts(&self) -> Vec<PathBuf> {
        let Some(root) = self.base.parent() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| is_layout_dir_name(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| *p != self.base)
            .collect()
    }

    pub(super) fn map_path(&self, map: &str) -> PathBuf {
        self.maps_dir().join(map)
    }

    fn maps_dir(&self) -> PathBuf {
        self.base.join("maps")
    }

    pub(super) fn pods_dir(&self) -> PathBuf {
        self.base.join("pods")
    }

    pub(super) fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid)
    }
}

/// A link owned by one pod. Unpinned, it detaches when dropped; pinned, it
/// stays attached after the agent is gone until [`AttachedLink::remove`].
///
/// A pinned link is held by its pin alone, not by a descriptor: the pin keeps
/// it attached, and nothing here uses the link after pinning it (adopting it
/// again, replacing its program, reads the pin). So each enrolled pod costs
/// no descriptor for its eight links, and removing the pin detaches the link
/// at once, whoever removes it: this agent un-enrolling the pod, `weir
/// uninstall`, or a successor of another map layout retiring it.
pub(super) enum AttachedLink {
    /// Not pinned: this descriptor is all that keeps it attached.
    Held(FdLink),
    /// Pinned as `hook` in the pod's directory; no descriptor held. The
    /// pod's links share the directory's path: a whole path per link was
    /// about a kilobyte of the agent's memory per pod.
    Pinned { dir: Arc<Path>, hook: &'static str },
}

impl AttachedLink {
    /// Adopts the link pinned as `hook` in the pod's directory `pin` (pointing
    /// it at the current program), or makes one with `attach` and pins it there.
    pub(super) fn attach_or_adopt(
        pin: Option<(Arc<Path>, &'static str)>,
        program: BorrowedFd<'_>,
        attach: impl FnOnce() -> Result<FdLink, DatapathError>,
    ) -> Result<Self, DatapathError> {
        let Some((dir, hook)) = pin else {
            return Ok(Self::Held(attach()?));
        };
        let path = dir.join(hook);
        let pin_err = |source: io::Error| DatapathError::Pin {
            path: path.clone(),
            source,
        };
        if path.exists() {
            // The pinned link may run a previous agent's program instance;
            // swap in ours atomically so no connection goes unhooked.
            update_pinned_link_program(&path, program).map_err(pin_err)?;
            return Ok(Self::Pinned { dir, hook });
        }
        std::fs::create_dir_all(&dir).map_err(pin_err)?;
        // The descriptor closes here; the pin holds the link from now on.
        drop(
            attach()?
                .pin(&path)
                .map_err(|e| pin_err(io::Error::other(e)))?,
        );
        Ok(Self::Pinned { dir, hook })
    }

    /// The link's kernel ID (a pinned one is opened from its pin for that).
    pub(super) fn id(&self) -> Option<u32> {
        let info = match self {
            Self::Held(link) => link.info(),
            Self::Pinned { dir, hook } => {
                FdLink::from(PinnedLink::from_pin(dir.join(hook)).ok()?).info()
            }
        };
        info.ok().map(|i| i.id())
    }

    /// Detaches the link for good, pinned or not.
    pub(super) fn remove(self) {
        match self {
            Self::Held(link) => drop(link),
            Self::Pinned { dir, hook } => {
                let path = dir.join(hook);
                if let Err(e) = std::fs::remove_file(&path) {
                    log::warn!("unpinning {}: {e}", path.display());
                }
            }
        }
    }
}

/// Points the link pinned at `path` at `program` (`BPF_OBJ_GET`, then
/// `BPF_LINK_UPDATE`, which replaces the program atomically). aya keeps its own
/// wrappers of these private; they are the only raw bpf(2) calls weir makes.
fn update_pinned_link_program(path: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct LinkUpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let get = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `get` is a fully initialised obj_get member of union bpf_attr
    // whose pathname points at a NUL-terminated string alive for the call.
    let fd = unsafe { sys::bpf(sys::BPF_OBJ_GET, &get)? };
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let update = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: as above, a fully initialised link_update member of bpf_attr.
    unsafe { sys::bpf(sys::BPF_LINK_UPDATE, &update) }.map(drop)
}

/// `v<N>`: a layout directory.
pub(super) fn is_layout_dir_name(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes a directory of pins and everything in it, deepest first: a pod's
/// directory (a pod gone while no agent ran, or one retired from another map
/// layout), or a whole layout (`weir uninstall`, an emptied old layout).
/// Returns the files removed. Each directory's files go in
/// [`in_removal_order`], so a pod's hooks go as an un-enrolled pod's do
/// whoever removes them.
pub(super) fn remove_pins(dir: &Path) -> io::Result<usize> {
    let mut files = Vec::new();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            removed += remove_pins(&entry.path())?;
        } else {
            files.push(entry.path());
        }
    }
    for file in in_removal_order(files) {
        std::fs::remove_file(file)?;
        removed += 1;
    }
    std::fs::remove_dir(dir)?;
    Ok(removed)
}

/// sockops last, after the connect hooks: a connection an old connect hook
/// redirected just before still has its original destination re-keyed, so
/// the agent accepting it (one of another map layout, still draining) knows
/// where it was going rather than closing it. A directory's own order is the
/// filesystem's.
fn in_removal_order(mut pins: Vec<PathBuf>) -> Vec<PathBuf> {
    pins.sort_by_key(|pin| pin.file_name() == Some(OsStr::new(PROG_SOCKOPS)));
    pins
}

#[cfg(test)]
mod tests {
    use weir_common::{PROG_CONNECT4, PROG_CONNECT6, PROG_SK_LOOKUP};

    use super::*;

    #[test]
    fn sockops_is_unpinned_after_the_connect_hooks_whatever_the_directory_order() {
        let dir = Path::new("/sys/fs/bpf/weir/v1/pods/uid");
        let names = [PROG_SOCKOPS, PROG_CONNECT4, PROG_SK_LOOKUP, PROG_CONNECT6];
        for first in 0..names.len() {
            let listed: Vec<PathBuf> = names
                .iter()
                .cycle()
                .skip(first)
                .take(names.len())
                .map(|n| dir.join(n))
                .collect();
            let ordered = in_removal_order(listed.clone());
            assert_eq!(ordered.last(), Some(&dir.join(PROG_SOCKOPS)), "{listed:?}");
            assert_eq!(ordered.len(), names.len());
        }
    }

    /// A whole layout goes, with each pod's sockops after its connect hooks.
    /// tmpfs lists a directory newest first, so creating each pod's pins in
    /// a different order has some pod list its sockops first (on a disk
    /// filesystem the listing order is a hash of the names, the same for
    /// every pod). The order is seen through inotify: one `IN_DELETE` event
    /// per pin, in the order removed.
    #[test]
    fn a_layout_goes_with_each_pods_sockops_after_its_connect_hooks() {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let layout = root.path().join("v3");
        let maps = layout.join("maps");
        std::fs::create_dir_all(&maps).unwrap();
        std::fs::write(maps.join("WEIR_SETTINGS"), "").unwrap();
        let hooks = [PROG_SOCKOPS, PROG_CONNECT4, PROG_SK_LOOKUP, PROG_CONNECT6];
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        let mut pods = std::collections::HashMap::new();
        for i in 0..hooks.len() {
            let pod = layout.join("pods").join(format!("uid-{i}"));
            std::fs::create_dir_all(&pod).unwrap();
            for hook in hooks.iter().cycle().skip(i).take(hooks.len()) {
                std::fs::write(pod.join(hook), "").unwrap();
            }
            let watch = inotify.add_watch(&pod, AddWatchFlags::IN_DELETE).unwrap();
            pods.insert(watch, pod);
        }

        assert_eq!(remove_pins(&layout).unwrap(), hooks.len() * hooks.len() + 1);
        assert!(!layout.exists());
        let mut removed: std::collections::HashMap<_, Vec<String>> = Default::default();
        for event in inotify.read_events().unwrap() {
            if let Some(name) = event.name {
                let name = name.to_string_lossy().into_owned();
                removed.entry(event.wd).or_default().push(name);
            }
        }
        for (watch, pod) in &pods {
            let order = &removed[watch];
            assert_eq!(order.len(), hooks.len(), "{}: {order:?}", pod.display());
            assert_eq!(
                order.last().map(String::as_str),
                Some(PROG_SOCKOPS),
                "{}: {order:?}",
                pod.display()
            );
        }
    }
}
