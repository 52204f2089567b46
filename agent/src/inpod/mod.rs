//! The proxy's listeners inside a pod's network namespace. Created by the agent
//! process on a thread that entered the pod's namespace, so one process serves
//! every pod on the node without a sidecar.

mod factory;
mod reset;

pub use factory::{PodSocketFactory, SocketFactory};
pub use reset::{ResetOutcome, reset_connections};

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;

use weir_common::{PROXY_INBOUND_SOURCE_V4, PROXY_INBOUND_SOURCE_V6, PodSettings};

use crate::netns::{NetNs, NetNsError};
use crate::socket::netns_cookie;

#[derive(Debug, thiserror::Error)]
pub enum InPodError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("binding the proxy listener {addr} in {netns}: {source}")]
    Bind {
        addr: SocketAddr,
        netns: String,
        source: io::Error,
    },
    #[error("connecting to the application at {app} in {netns}: {source}")]
    ConnectApp {
        app: SocketAddr,
        netns: String,
        source: io::Error,
    },
    #[error("starting the socket factory: {0}")]
    Factory(#[source] io::Error),
    #[error("resetting connections through sock_diag in {netns}: {source}")]
    SockDiag { netns: String, source: io::Error },
    #[error("reading the network namespace cookie of a socket in {netns}: {source}")]
    Cookie { netns: String, source: io::Error },
}

/// A pair of proxy listeners in one pod, IPv4 and IPv6: bound to loopback, so
/// nothing outside the pod can connect to them directly (inbound connections
/// reach them only through sk_lookup); ports picked by the kernel.
pub struct PodListeners {
    pub v4: TcpListener,
    pub v6: TcpListener,
    /// The pod's network namespace cookie, the key the eBPF programs use.
    pub netns_cookie: u64,
}

/// Accept queue of an in-pod listener: a burst of connections (a pod
/// opening thousands at once) waits here rather than having SYNs dropped,
/// each drop costing the client a 1-3 s retransmission; std's 128 made
/// 6,000 connections take 22 s to open. The pod's `net.core.somaxconn`
/// (4096 by default) caps it.
pub const LISTEN_BACKLOG: i32 = 4096;

/// A listening socket on `addr` with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Where the connect hooks send the pod's outbound connections.
pub type EgressListeners = PodListeners;
/// Where sk_lookup steers connections to the pod's ports.
pub type InboundListeners = PodListeners;

impl PodListeners {
    pub fn bind(netns: &NetNs) -> Result<Self, InPodError> {
        let name = netns.path().display().to_string();
        let bind = |addr: SocketAddr| {
            listen(addr).map_err(|source| InPodError::Bind {
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

    /// Pod settings that redirect the pod's outbound connections here.
    pub fn egress_settings(&self, flags: u32) -> io::Result<PodSettings> {
        Ok(PodSettings {
            egress_port_v4: self.v4.local_addr()?.port(),
            egress_port_v6: self.v6.local_addr()?.port(),
            flags,
            ..PodSettings::default()
        })
    }
}

/// Connects to a pod's application at `app` (the inbound connection's original
/// destination) from the proxy's reserved source address, 127.0.0.6 (or ::6,
/// which must be on the pod's loopback), so the inbound steering lets it pass.
/// The socket is created inside the pod's namespace; the connect itself blocks.
pub fn connect_to_app(netns: &NetNs, app: SocketAddr) -> Result<std::net::TcpStream, InPodError> {
    let source: SocketAddr = match app {
        SocketAddr::V4(_) => SocketAddr::from((PROXY_INBOUND_SOURCE_V4, 0)),
        SocketAddr::V6(_) => SocketAddr::from((PROXY_INBOUND_SOURCE_V6, 0)),
    };
    let name = netns.path().display().to_string();
    let connect = || -> io::Result<std::net::TcpStream> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(app),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&source.into())?;
        socket.connect(&app.into())?;
        Ok(socket.into())
    };
    netns
        .run(connect)?
        .map_err(|source| InPodError::ConnectApp {
            app,
            netns: name,
            source,
        })
}
