//! Interception's connection hook into the engine: every upstream
//! connection a cluster opens comes through here. A cleartext HTTP/1
//! connection to an intercepted port of a pod on this node goes straight to
//! its application, served as its inbound side would (`same_node`); any other
//! is plain TCP from the request's source (an enrolled pod's connection
//! from inside that pod's network namespace, `Shared::connect_from`) whose
//! local address is remembered as weir's own socket, so the inbound side
//! knows it (`peers`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};

use super::Shared;
use super::passthrough::Upstream;
use super::same_node::{LocalInbound, LocalPod};
use crate::proxy::runtime::Runtime;
use crate::proxy::upstream::connector::{
    ConnectError, Connected, Connecting, Connection, Connector, Target,
};
use crate::proxy::upstream::egress::Egress;

pub(super) struct InterceptConnector(Arc<Shared>, OnceLock<Weak<Runtime>>);

impl InterceptConnector {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self(shared, OnceLock::new())
    }

    /// The runtime this connector serves, whose config says which pods
    /// authorization policies select (set once, after the runtime is made
    /// around this connector).
    pub(super) fn serves(&self, runtime: &Arc<Runtime>) {
        let _ = self.1.set(Arc::downgrade(runtime));
    }

    /// Whether same-node delivery may skip the inbound side for `pod`: not
    /// when an authorization policy selects it, since only the inbound side
    /// decides per request (a change of policies renews every cluster, so
    /// no pooled connection outlives the policies it was opened under).
    fn may_deliver_directly(&self, pod: &LocalPod) -> bool {
        let Some(runtime) = self.1.get().and_then(Weak::upgrade) else {
            return false;
        };
        let config = runtime.effective.load();
        config
            .as_ref()
            .as_ref()
            .is_none_or(|c| !super::authz::selects(&c.authorization_policies, &pod.identity))
    }

    async fn same_node(&self, pod: &LocalPod, addr: SocketAddr) -> Result<Connected, ConnectError> {
        let stream = pod
            .app
            .connect_app(addr)
            .await
            .map_err(|e| ConnectError::Failed(addr, e))?;
        let (inbound, open) = LocalInbound::open(&self.0, pod, addr);
        // Counted as the inbound side counts its client
        // (`IdentityHandles::app_counters`).
        let counters = inbound.app_bytes.clone();
        Ok(Connected {
            connection: Connection::Served {
                stream,
                counters,
                exchange: inbound,
            },
            guard: Some(Box::new(open)),
        })
    }

    async fn tcp(
        &self,
        addr: SocketAddr,
        egress: Option<&Egress>,
    ) -> Result<Connected, ConnectError> {
        let stream = match self.0.connect_upstream(egress, addr).await? {
            Upstream::Tcp(stream) => stream,
            // The far end's weir names the source (the tunnel's peer).
            Upstream::Tunnel(stream) => {
                return Ok(Connected {
                    connection: Connection::Stream(Box::new(stream)),
                    guard: None,
                });
            }
        };
        // The source travels per request (`x-weir-source`): `peers::Peer::Weir`.
        let peer = stream
            .local_addr()
            .ok()
            .map(|a| self.0.peers.register(a, None));
        Ok(Connected {
            connection: Connection::Tcp(stream),
            guard: peer.map(|p| Box::new(p) as _),
        })
    }
}

impl Connector for InterceptConnector {
    fn connect(&self, target: Target) -> Connecting<'_> {
        Box::pin(async move {
            if target.cleartext_http1
                && let Some(pod) = self.0.same_node.lookup(target.addr)
                && self.may_deliver_directly(&pod)
            {
                return self.same_node(&pod, target.addr).await;
            }
            self.tcp(target.addr, target.egress.as_ref()).await
        })
    }
}
