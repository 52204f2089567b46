//! Hand-over between two agents on one node, so that a rolling update
//! leaves no instant at which an enrolled pod's `connect()` finds no
//! listener (docs/architecture.md, "Restarts and upgrades").
//!
//! The agent holding the node answers on an abstract Unix socket named
//! after its pin root (abstract names live in the network namespace: the
//! node's, as the DaemonSet runs with hostNetwork; no file to clean up
//! after a crash). An agent that starts while another holds the name is its
//! successor: it connects, enrolls the pods with its own listeners (each
//! pinned map entry replaced atomically) and reports each pod it took with
//! a line `took <uid>`. The holder then stops listening for that pod,
//! after accepting what was already queued, and stops enrolling altogether;
//! on SIGTERM it waits (within its drain time) until every pod is taken.
//! When the holder exits, the successor takes the name over. Only a peer
//! holding CAP_BPF and CAP_NET_ADMIN is heard ([`peer_may_hand_over`]).

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// What the holder learns from its successor.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A successor connected: it is about to take the pods over.
    SuccessorArrived,
    /// The successor serves the pod with this uid now.
    Taken(String),
    /// The successor went away (it crashed, or it was stopped first).
    SuccessorGone,
}

/// A `took` line longer than this is not one weir wrote; the successor's
/// connection is dropped rather than buffering without bound.
const MAX_LINE: usize = 512;

/// How long a successor keeps trying to take the name over once its
/// predecessor's connection closed (the predecessor's listening socket
/// closes as its process exits).
const TAKE_NAME_WITHIN: Duration = Duration::from_secs(5);

pub struct Handoff {
    /// Set while this agent is a successor: where `took` lines go.
    predecessor: Option<UnixStream>,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl Handoff {
    /// Holds the name for `pin_root`, or, when another agent holds it,
    /// becomes its successor. Never fails the agent: without a hand-over
    /// socket it runs as before, and says why.
    pub fn start(pin_root: &Path) -> Self {
        let name = socket_name(pin_root);
        let (tx, events) = mpsc::unbounded_channel();
        let (predecessor, task) = match bind(&name) {
            Ok(listener) => (None, tokio::spawn(hold(listener, tx))),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match connect(&name) {
                Ok(stream) => {
                    log::info!("another agent serves this node: taking its pods over");
                    let watch = stream.try_clone().ok();
                    let task = tokio::spawn(succeed(name, watch, tx));
                    (Some(stream), task)
                }
                Err(e) => {
                    log::warn!("hand-over socket held but not answering ({e}); starting alone");
                    (None, tokio::spawn(async {}))
                }
            },
            Err(e) => {
                log::warn!("hand-over socket: {e}; restarts will not hand pods over");
                (None, tokio::spawn(async {}))
            }
        };
        Self {
            predecessor,
            events,
            task,
        }
    }

    /// Whether an older agent was running when this one started.
    #[cfg(test)]
    fn is_successor(&self) -> bool {
        self.predecessor.is_some()
    }

    /// Tells the predecessor, if any, that this agent serves the pod `uid`
    /// now (its listeners are in the maps).
    pub fn took(&mut self, uid: &str) {
        let Some(stream) = &mut self.predecessor else {
            return;
        };
        // One write: a line split over several could be cut by WouldBlock.
        if let Err(e) = stream.write_all(format!("took {uid}\n").as_bytes()) {
            // The predecessor has gone; nothing is left to hand over.
            log::debug!("hand-over: predecessor gone ({e})");
            self.predecessor = None;
        }
    }

    /// Stops holding the name and waits until its socket is closed, as the
    /// holder's exit would (dropping only asks the task to stop).
    #[cfg(test)]
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// The next event from a successor (pends while there is none).
    pub async fn next(&mut self) -> Event {
        match self.events.recv().await {
            Some(event) => event,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Abstract names are at most 107 bytes; a long pin root is shortened to
/// its hash, which is as unique for this purpose.
fn socket_name(pin_root: &Path) -> Vec<u8> {
    let root = pin_root.to_string_lossy();
    let name = format!("weir-agent:{root}");
    if name.len() <= 100 {
        return name.into_bytes();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut h);
    format!("weir-agent:#{:016x}", h.finish()).into_bytes()
}

fn bind(name: &[u8]) -> std::io::Result<tokio::net::UnixListener> {
    let listener = UnixListener::bind_addr(&UnixAddr::from_abstract_name(name)?)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

fn connect(name: &[u8]) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect_addr(&UnixAddr::from_abstract_name(name)?)?;
    // A `took` line must never stall enrolment on a predecessor that stopped reading.
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// The holder: each successor's lines become events. The readers belong
/// to this task, so stopping it closes every successor's connection, as
/// the holder's exit would.
async fn hold(listener: tokio::net::UnixListener, tx: mpsc::UnboundedSender<Event>) {
    let mut readers = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = readers.join_next(), if !readers.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("hand-over socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(why) = peer_may_hand_over(&stream) {
            log::warn!("hand-over socket: refused a peer: {why}");
            continue;
        }
        if tx.send(Event::SuccessorArrived).is_err() {
            return;
        }
        readers.spawn(read_successor(stream, tx.clone()));
    }
}

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_BPF: u32 = 39;

/// Any process in the node's network namespace (a hostNetwork pod too) can
/// reach an abstract socket, and `took` lines make the holder close pods'
/// listeners. Only a peer holding CAP_BPF and CAP_NET_ADMIN (what `weir run`
/// keeps for enrolment) is heard: such a process can already rewrite weir's
/// maps and detach its programs, so believing it gives nothing away.
fn peer_may_hand_over(stream: &tokio::net::UnixStream) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let pid = cred.pid().ok_or("the peer's pid is unknown")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    caps_allow_hand_over(&status).map_err(|why| format!("pid {pid} (uid {}): {why}", cred.uid()))
}

/// Whether a `/proc/<pid>/status` shows CAP_BPF and CAP_NET_ADMIN effective.
fn caps_allow_hand_over(status: &str) -> Result<(), String> {
    let caps = effective_caps(status).ok_or("no CapEff in its status")?;
    let needed = (1u64 << CAP_BPF) | (1u64 << CAP_NET_ADMIN);
    if caps & needed == needed {
        Ok(())
    } else {
        Err("lacks CAP_BPF or CAP_NET_ADMIN".into())
    }
}

/// The `CapEff:` mask of a `/proc/<pid>/status`.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

async fn read_successor(stream: tokio::net::UnixStream, tx: mpsc::UnboundedSender<Event>) {
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let read = (&mut lines)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await;
        match read {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                if let Some(uid) = line.trim_end().strip_prefix("took ") {
                    let _ = tx.send(Event::Taken(uid.to_owned()));
                }
            }
            _ => break,
        }
    }
    let _ = tx.send(Event::SuccessorGone);
}

/// The successor: once the predecessor's connection closes (it exited),
/// take the name, and hold it for the next agent.
async fn succeed(name: Vec<u8>, watch: Option<UnixStream>, tx: mpsc::UnboundedSender<Event>) {
    if let Some(watch) = watch.and_then(|w| tokio::net::UnixStream::from_std(w).ok()) {
        let mut watch = watch;
        let mut sink = [0u8; 64];
        // The predecessor never writes; EOF or an error means it is gone.
        while let Ok(n) = watch.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + TAKE_NAME_WITHIN;
    loop {
        match bind(&name) {
            Ok(listener) => {
                log::info!("the previous agent has exited: this agent holds the node now");
                return hold(listener, tx).await;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                log::warn!(
                    "hand-over socket still held ({e}); the next restart will not hand over"
                );
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a socket listens on the abstract `name` (`/proc/net/unix`:
    /// flags `00010000` mark a listener, `@` an abstract name).
    fn listening(name: &[u8]) -> bool {
        let wanted = format!("@{}", String::from_utf8_lossy(name));
        std::fs::read_to_string("/proc/net/unix")
            .unwrap_or_default()
            .lines()
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(3) == Some(&"00010000") && fields.last() == Some(&wanted.as_str())
            })
    }

    fn unique_root(tag: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/test/{tag}/{}", std::process::id()))
    }

    #[test]
    fn long_pin_roots_get_a_short_name() {
        let long = std::path::PathBuf::from(format!("/{}", "x".repeat(300)));
        assert!(socket_name(&long).len() <= 107);
        assert_ne!(
            socket_name(&long),
            socket_name(Path::new("/sys/fs/bpf/weir"))
        );
    }

    #[tokio::test]
    async fn a_successor_reports_pods_and_takes_the_name_when_the_holder_goes() {
        let root = unique_root("handoff");
        let mut holder = Handoff::start(&root);
        assert!(!holder.is_successor());
        let mut successor = Handoff::start(&root);
        assert!(successor.is_successor());
        assert_eq!(holder.next().await, Event::SuccessorArrived);
        successor.took("uid-1");
        successor.took("uid-2");
        assert_eq!(holder.next().await, Event::Taken("uid-1".into()));
        assert_eq!(holder.next().await, Event::Taken("uid-2".into()));

        // The holder exits: the successor holds the name for the next one.
        holder.stop().await;
        // Watched, not probed: starting an agent here to see would bind the
        // free name itself (racing the successor for it), and a connection
        // would count as one more successor.
        let name = socket_name(&root);
        let mut waited = 0;
        while !listening(&name) {
            waited += 1;
            assert!(
                waited < 500,
                "the successor did not take the name over in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut third = Handoff::start(&root);
        assert!(third.is_successor());
        assert_eq!(successor.next().await, Event::SuccessorArrived);
        third.took("uid-1");
        assert_eq!(successor.next().await, Event::Taken("uid-1".into()));
        drop(third);
        assert_eq!(successor.next().await, Event::SuccessorGone);
    }

    #[test]
    fn effective_capabilities_are_read_from_the_status_file() {
        let status = "Name:\tweir\nCapInh:\t0000000000000000\nCapEff:\t000000c000201000\n";
        let caps = effective_caps(status).unwrap();
        assert_ne!(caps & (1 << CAP_BPF), 0);
        assert_ne!(caps & (1 << CAP_NET_ADMIN), 0);
        assert_eq!(effective_caps("Name:\tweir\n"), None);
    }

    #[test]
    fn only_a_peer_with_cap_bpf_and_cap_net_admin_is_heard() {
        let status = |eff: &str| format!("Name:\tpeer\nCapEff:\t{eff}\n");
        // What `weir run`'s main thread keeps: BPF, NET_ADMIN, SYS_ADMIN, SYS_PTRACE.
        assert!(caps_allow_hand_over(&status("000000c000281000")).is_ok());
        // A root shell in a hostNetwork pod with the runtime's default set.
        assert!(caps_allow_hand_over(&status("00000000a80425fb")).is_err());
        assert!(caps_allow_hand_over(&status("0000008000000000")).is_err());
        assert!(caps_allow_hand_over("Name:\tpeer\n").is_err());
    }

    #[tokio::test]
    async fn this_agent_is_heard_by_another() {
        // The test process holds every capability as root; the full path
        // (SO_PEERCRED, /proc/<pid>/status) must let it in.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let root = unique_root("heard");
        let mut holder = Handoff::start(&root);
        let mut successor = Handoff::start(&root);
        successor.took("uid");
        assert_eq!(holder.next().await, Event::SuccessorArrived);
        assert_eq!(holder.next().await, Event::Taken("uid".into()));
    }

    #[tokio::test]
    async fn an_overlong_line_drops_the_successor() {
        let root = unique_root("overlong");
        let mut holder = Handoff::start(&root);
        let mut raw = connect(&socket_name(&root)).unwrap();
        raw.set_nonblocking(false).unwrap();
        assert_eq!(holder.next().await, Event::SuccessorArrived);
        raw.write_all(&vec![b'a'; MAX_LINE * 2]).unwrap();
        assert_eq!(holder.next().await, Event::SuccessorGone);
    }
}
