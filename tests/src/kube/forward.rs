//! The API server as a node reaches it: the simulated node's host network is
//! a namespace of its own, from which the test's 127.0.0.1 cannot be reached,
//! so a forwarder listens on the node's loopback and relays to the server.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use weir::netns::NetNs;

/// Relays connections made to `listen` (inside a node's namespace) to the
/// API server, until dropped.
pub struct NodeForward {
    pub listen: SocketAddr,
    task: JoinHandle<()>,
}

impl NodeForward {
    /// Must be called inside a tokio runtime, which runs the relays.
    pub fn start(node: &NetNs, to: SocketAddr) -> Result<NodeForward> {
        let listener = node.run(|| TcpListener::bind("127.0.0.1:0"))??;
        let listen = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let task = tokio::spawn(async move {
            while let Ok((mut from, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut from, &mut upstream).await;
                    }
                });
            }
        });
        Ok(NodeForward { listen, task })
    }

    /// `kubeconfig` with its server pointed at this forwarder, written beside it.
    pub fn rewrite_kubeconfig(&self, kubeconfig: &Path, server: &str) -> Result<PathBuf> {
        let text = std::fs::read_to_string(kubeconfig)
            .with_context(|| format!("reading {}", kubeconfig.display()))?;
        anyhow::ensure!(
            text.contains(server),
            "{server} not in {}",
            kubeconfig.display()
        );
        let path = kubeconfig.with_extension("node");
        std::fs::write(
            &path,
            text.replace(server, &format!("https://{}", self.listen)),
        )?;
        Ok(path)
    }
}

impl Drop for NodeForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}
