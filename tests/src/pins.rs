//! A private bpffs pin root per test, removed on drop with whatever a test
//! left pinned in it (so a failing test cannot leak pins into the next run).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct PinRoot {
    path: PathBuf,
}

impl PinRoot {
    /// `/sys/fs/bpf/weir-test-<pid>-<n>`, not yet created (the data path
    /// creates its layout itself).
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Self {
            path: PathBuf::from(format!("/sys/fs/bpf/weir-test-{}-{n}", std::process::id())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every pinned file below the root.
    pub fn pinned_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.path, &mut files);
        files.sort();
        files
    }
}

impl Default for PinRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.path.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            eprintln!("simnode: removing pin root {}: {e}", self.path.display());
        }
    }
}
