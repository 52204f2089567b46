//! One writer thread per access log file, fed through a bounded queue, so
//! that the request path never waits on the disk: a full queue drops the
//! line and counts it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// Lines waiting for one writer, at most.
pub const MAX_QUEUED_LINES: usize = 16_384;
/// Bytes of the lines waiting for one writer, at most (so that 16,384
/// lines of long headers cannot hold 150 MiB).
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
/// The writer's buffer; flushed when full and after every batch, so a
/// line reaches the file within [`BATCH_EVERY`] of being queued.
const BUFFER_BYTES: usize = 64 * 1024;
/// Under load the writer takes the queue's lines in batches this far
/// apart, so that senders never wake it line by line (a futex wake and a
/// context switch per request cost more than the line itself); a line
/// thus waits at most this long before its write.
const BATCH_EVERY: Duration = Duration::from_millis(10);
/// An idle writer waits for the next line at most this long at a time.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// A failing file is reported at most once per this.
const ERROR_REPORT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("opening access log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("starting the writer thread of access log {path}: {source}")]
    Thread { path: PathBuf, source: io::Error },
}

/// The sending side of one file's writer; the thread ends (flushing what
/// it holds) once every sender is gone, as after a reload.
pub struct Sink {
    tx: SyncSender<String>,
    queued: Arc<AtomicUsize>,
    dropped: IntCounter,
}

impl Sink {
    /// Opens `path` for appending (`/dev/stdout`, `/dev/stderr`: the
    /// process's own) and starts its writer with room for `lines`.
    pub fn open(path: &Path, dropped: IntCounter, lines: usize) -> Result<Self, AccessLogError> {
        let out = Output::open(path).map_err(|source| AccessLogError::Open {
            path: path.to_owned(),
            source,
        })?;
        let (tx, rx) = sync_channel(lines);
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            out: BufWriter::with_capacity(BUFFER_BYTES, out),
            path: path.to_owned(),
            queued: queued.clone(),
            last_error: None,
        };
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AccessLogError::Thread {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            tx,
            queued,
            dropped,
        })
    }

    /// Queues `line` without waiting; a full queue drops and counts it.
    pub fn send(&self, line: String) {
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped.inc();
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.dropped.inc();
        }
    }
}

/// Where lines go.
enum Output {
    File(File),
    Stdout,
    Stderr,
}

impl Output {
    fn open(path: &Path) -> io::Result<Self> {
        // The process's own streams even when they are sockets or pipes
        // that cannot be opened again by name.
        if path == Path::new("/dev/stdout") {
            return Ok(Self::Stdout);
        }
        if path == Path::new("/dev/stderr") {
            return Ok(Self::Stderr);
        }
        File::options()
            .append(true)
            .create(true)
            .open(path)
            .map(Self::File)
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::File(f) => f.write(buf),
            Self::Stdout => io::stdout().write(buf),
            Self::Stderr => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::File(f) => f.flush(),
            Self::Stdout => io::stdout().flush(),
            Self::Stderr => io::stderr().flush(),
        }
    }
}

struct Writer {
    out: BufWriter<Output>,
    path: PathBuf,
    queued: Arc<AtomicUsize>,
    last_error: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: Receiver<String>) {
        // It only writes to a file already open: it needs no privilege
        // (a thread inherits its creator's capabilities).
        for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
            let _ = caps::clear(None, set);
        }
        loop {
            // Idle: sleep in the queue until a line comes.
            match rx.recv_timeout(IDLE_WAIT) {
                Ok(line) => self.write(&line),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Busy: take what came meanwhile, write it out, and come back
            // after a pause rather than on each line.
            loop {
                let open = loop {
                    match rx.try_recv() {
                        Ok(line) => self.write(&line),
                        Err(TryRecvError::Empty) => break true,
                        Err(TryRecvError::Disconnected) => break false,
                    }
                };
                let r = self.out.flush();
                self.check(r);
                if !open {
                    return;
                }
                std::thread::sleep(BATCH_EVERY);
                if rx.try_iter().next().map(|line| self.write(&line)).is_none() {
                    break;
                }
            }
        }
    }

    fn write(&mut self, line: &str) {
        self.queued.fetch_sub(line.len(), Ordering::Relaxed);
        let r = self.out.write_all(line.as_bytes());
        self.check(r);
    }

    /// Reports a failed write at most once per [`ERROR_REPORT_EVERY`]; the
    /// writer goes on (a full disk may free up).
    fn check(&mut self, r: io::Result<()>) {
        if let Err(e) = r
            && self
                .last_error
                .is_none_or(|t| t.elapsed() >= ERROR_REPORT_EVERY)
        {
            self.last_error = Some(Instant::now());
            log::warn!("access log {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose queue nobody drains: a writer stuck on a slow disk.
    fn stuck(lines: usize, dropped: &IntCounter) -> (Sink, Receiver<String>) {
        let (tx, rx) = sync_channel(lines);
        let sink = Sink {
            tx,
            queued: Arc::default(),
            dropped: dropped.clone(),
        };
        (sink, rx)
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let dropped = IntCounter::new("d", "d").unwrap();
        let (sink, rx) = stuck(2, &dropped);
        let started = Instant::now();
        for i in 0..1000 {
            sink.send(format!("line {i}\n"));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "send blocked");
        assert_eq!(dropped.get(), 998);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["line 0\n", "line 1\n"]);
    }

    #[test]
    fn the_writer_appends_every_line_and_ends_with_its_senders() {
        let dir = std::env::temp_dir().join(format!("weir-al-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        std::fs::write(&path, "kept\n").unwrap();
        let dropped = IntCounter::new("d", "d").unwrap();
        let sink = Sink::open(&path, dropped.clone(), MAX_QUEUED_LINES).unwrap();
        for i in 0..100 {
            sink.send(format!("line {i}\n"));
        }
        drop(sink);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 101 {
                assert!(text.starts_with("kept\nline 0\n") && text.ends_with("line 99\n"));
                break;
            }
            assert!(Instant::now() < deadline, "only {text:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(dropped.get(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_byte_bound_drops_too() {
        let dir = std::env::temp_dir().join(format!("weir-al-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dropped = IntCounter::new("d", "d").unwrap();
        let sink = Sink::open(&dir.join("b.log"), dropped.clone(), MAX_QUEUED_LINES).unwrap();
        // Pretend the writer holds the whole byte budget.
        sink.queued.store(MAX_QUEUED_BYTES, Ordering::Relaxed);
        sink.send("x\n".to_owned());
        assert_eq!(dropped.get(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
