//! Doing work inside another network namespace. `setns` changes only the
//! calling thread, so the work runs on a short-lived thread of its own and
//! sockets it creates stay in that namespace after the thread ends: this is how
//! one agent process owns listeners inside many pods.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// A handle on a network namespace (an open `/proc/<pid>/ns/net` or
/// `/run/netns/<name>`), kept open so the namespace cannot vanish under us.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("entering network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("the thread working in network namespace {0} panicked")]
    Panicked(PathBuf),
}

impl NetNs {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetNsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetNsError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Self { file, path })
    }

    /// The namespace of process `pid`.
    pub fn of_pid(pid: u32) -> Result<Self, NetNsError> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> Result<Self, NetNsError> {
        let file = self.file.try_clone().map_err(|source| NetNsError::Open {
            path: self.path.clone(),
            source,
        })?;
        Ok(Self {
            file,
            path: self.path.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `work` on a thread inside this namespace and returns its result.
    pub fn run<T, F>(&self, work: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetNsError::Enter {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    Ok(work())
                })
                .join()
                .map_err(|_| NetNsError::Panicked(self.path.clone()))?
        })
    }
}
