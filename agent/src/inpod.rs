//! The proxy's listeners inside a pod's network namespace. Created by the agent
//! process on a thread that entered the pod's namespace, so one process serves
//! every pod on the node without a sidecar.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;

use weir_common::PodSettings;

use crate::netns::{NetNs, NetNsError};
use crate::socket::netns_cookie;

#[derive(Debug, thiserror::Error)]
pub enum InPodError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("binding the egress listener {addr} in {netns}: {source}")]
    Bind {
        addr: SocketAddr,
        netns: String,
        source: io::Error,
    },
    #[error("reading the network namespace cookie of a socket in {netns}: {source}")]
    Cookie { netns: String, source: io::Error },
}

/// The egress listeners of one pod: loopback only, so nothing outside the pod
/// can reach them; ports picked by the kernel.
pub struct EgressListeners {
    pub v4: TcpListener,
    pub v6: TcpListener,
    /// The pod's network namespace cookie, the key the eBPF programs use.
    pub netns_cookie: u64,
}

impl EgressListeners {
    pub fn bind(netns: &NetNs) -> Result<Self, InPodError> {
        let name = netns.path().display().to_string();
        let bind = |addr: SocketAddr| {
            TcpListener::bind(addr).map_err(|source| InPodError::Bind {
                addr,
                netns: name.clone(),
                source,
            })
        };
        let (v4, v6) = netns.run(|| {
            Ok::<_, InPodError>((
                bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?,
                bind(SocketAddr::from((Ipv6Addr::LOCALHOST, 0)))?,
            ))
        })??;
        let netns_cookie = netns_cookie(v4.as_fd()).map_err(|source| InPodError::Cookie {
            netns: name.clone(),
            source,
        })?;
        Ok(Self {
            v4,
            v6,
            netns_cookie,
        })
    }

    /// What the eBPF programs need to redirect this pod's connections here.
    pub fn pod_settings(&self, flags: u32) -> io::Result<PodSettings> {
        Ok(PodSettings {
            egress_port_v4: self.v4.local_addr()?.port(),
            egress_port_v6: self.v6.local_addr()?.port(),
            flags,
        })
    }
}
