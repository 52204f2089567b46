//! Wakes the pods file's poller the moment the file may have changed, so an
//! edit is acted on in about a millisecond rather than at the next poll.
//! inotify on the file's directory, for what completes a change there: a
//! writer closing a file (`IN_CLOSE_WRITE`) and a rename into it
//! (`IN_MOVED_TO`: a file replaced by rename, a ConfigMap's `..data` symlink
//! swap). Not `IN_MODIFY` or `IN_CREATE`: those come while a file is half
//! written, and reading it then would see a truncated list. Any event only
//! triggers a poll, which still reads and compares the content, so events
//! of other files in the directory cost one read.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An inotify instance on one directory.
pub(super) struct DirChanges {
    fd: AsyncFd<InotifyFd>,
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl DirChanges {
    /// Watches the directory holding `file`. Must be called inside a tokio
    /// runtime.
    pub(super) fn watch(file: &Path) -> io::Result<DirChanges> {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO,
        )?;
        // SAFETY: the descriptor is owned by the `Inotify` inside the
        // `AsyncFd`, so it stays open and the same for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(DirChanges { fd })
    }

    /// Resolves once something changed in the directory (every event queued
    /// by then is consumed: a burst of them is one wake-up).
    pub(super) async fn next(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(_events)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                // Spurious readiness: wait again.
                Err(_would_block) => continue,
            }
        }
    }
}
