//! The node most agent tests start from: a client pod, a fail-closed pod
//! (`locked`) and a server pod whose application answers HTTP on 8080 with
//! `server from <peer address>` (127.0.0.6 when weir delivered the request).

use std::net::SocketAddr;

use anyhow::Result;

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
        format!(
            "pods:\n{}{}{}",
            self.client.pods_file_entry(&[("weir.dev/enroll", "true")]),
            self.locked.pods_file_entry(&[
                ("weir.dev/enroll", "true"),
                ("weir.dev/fail-mode", "closed"),
            ]),
            self.server.pods_file_entry(&[("weir.dev/enroll", "true")]),
        )
    }
}
