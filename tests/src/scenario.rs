//! The node most agent tests start from: a client pod, a fail-closed pod
//! (`locked`) and a server pod whose application answers HTTP on 8080 with
//! `server from <peer address>` (127.0.0.6 when weir delivered the request).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::support::sim_client;
use crate::{PodProcess, SimNode, SimPod};

pub struct ThreePods {
    /// First, so the processes end before their pods' namespaces go.
    _processes: Vec<PodProcess>,
    pub client: SimPod,
    pub locked: SimPod,
    pub server: SimPod,
    /// The server pod's HTTP application.
    pub http: SocketAddr,
}

impl ThreePods {
    /// The three pods on `node`, each with a running pause process, and the
    /// server's application listening.
    pub fn start(node: &SimNode) -> Result<Self> {
        let client = node.add_pod("client")?;
        let locked = node.add_pod("locked")?;
        let server = node.add_pod("server")?;
        let mut processes = vec![
            client.start_pause()?,
            locked.start_pause()?,
            server.start_pause()?,
        ];
        let (app, http) = server.start_http_app()?;
        processes.push(app);
        Ok(Self {
            _processes: processes,
            client,
            locked,
            server,
            http,
        })
    }

    /// A pods file enrolling all three, `locked` fail-closed.
    pub fn pods_file(&self) -> String {
        self.pods_file_with(&[])
    }

    /// [`Self::pods_file`] with `client` also annotated `client_extra`.
    pub fn pods_file_with(&self, client_extra: &[(&str, &str)]) -> String {
        let enroll = ("weir.dev/enroll", "true");
        let mut client = vec![enroll];
        client.extend_from_slice(client_extra);
        format!(
            "pods:\n{}{}{}",
            self.client.pods_file_entry(&client),
            self.locked
                .pods_file_entry(&[enroll, ("weir.dev/fail-mode", "closed")]),
            self.server.pods_file_entry(&[enroll]),
        )
    }
}

/// The server's answer to a request weir delivered (its peer is 127.0.0.6).
pub const VIA_WEIR: &str = "server from 127.0.0.6";

/// A `sim-client` loop in `pod`: `mode` is `loop` (a connection per
/// request) or `keepalive`; a GET of `target` every `gap_ms` until the file
/// `stop` exists (a minute at the most), one `ok MS BODY` or `err MS ERROR`
/// line each.
pub fn start_loop(
    pod: &SimPod,
    mode: &str,
    target: SocketAddr,
    gap_ms: &str,
    stop: &Path,
) -> Result<PodProcess> {
    let mut cmd = Command::new(sim_client());
    cmd.args([mode, &target.to_string(), "server", "/", gap_ms, "60000"])
        .env("SIM_CLIENT_STOP_FILE", stop);
    pod.spawn(cmd)
}

/// A loop's lines, once its stop file ended it.
pub fn loop_lines(process: PodProcess) -> Result<Vec<String>> {
    let out = process.wait_output(Duration::from_secs(20))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().map(str::to_owned).collect())
}

/// How one request of a loop (or of `sim-client http … 1`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A 200 from the application through weir.
    ViaWeir,
    /// A 200 from the application straight from the client
    /// (`server from <client address>`): weir was bypassed.
    Bypassed,
    /// An error or another status.
    Failed,
}

/// `line` is a loop's `ok MS BODY` (a 200's body; other statuses keep
/// theirs in front) or `sim-client http`'s `1 200 BODY`.
pub fn answer(line: &str) -> Answer {
    let body = line.strip_prefix("1 200 ").or_else(|| {
        line.strip_prefix("ok ")
            .and_then(|l| l.split_once(' '))
            .map(|(_, b)| b)
    });
    match body {
        Some(VIA_WEIR) => Answer::ViaWeir,
        Some(b) if b.starts_with("server from ") => Answer::Bypassed,
        _ => Answer::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_who_the_application_saw() {
        assert_eq!(answer("ok 12 server from 127.0.0.6"), Answer::ViaWeir);
        assert_eq!(answer("1 200 server from 127.0.0.6"), Answer::ViaWeir);
        assert_eq!(answer("ok 12 server from 10.0.0.2"), Answer::Bypassed);
        assert_eq!(answer("ok 12 1 503 no healthy upstream"), Answer::Failed);
        assert_eq!(answer("err 12 connecting: refused"), Answer::Failed);
    }
}
