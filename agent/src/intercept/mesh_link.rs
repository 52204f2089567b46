//! Between nodes (issue 14): an enrolled pod's connection to a pod of
//! another node goes through a tunnel (`crate::tunnel`: HTTP/2 CONNECT over
//! mutual TLS, ztunnel's HBONE) to the weir serving the destination pod,
//! which learns the source workload from the tunnel's peer certificate
//! (`crate::mesh`: SPIFFE IDs the agents issue), never from a header.
//!
//! As ztunnel does in its in-pod mode, the tunnel ends in the destination
//! pod itself: its port 15008 is steered to weir's inbound side like any
//! other inbound port, and weir answers it with mutual TLS as that pod's
//! workload. So no agent needs to know which node a pod is on or whether
//! that node runs weir: a pod address either answers on 15008 (weir is
//! there) or refuses it (a pod outside the mesh, a node without weir), and
//! only that refusal lets the bytes go in plain text, counted, and
//! remembered for a while. A TLS failure, a timeout or a refused CONNECT
//! fails the connection: anything could be in the path, so nothing is sent
//! unprotected to an address that answered the tunnel port. Which
//! addresses are pods is the one cluster-wide fact this needs: the
//! cluster's pod CIDRs, configuration (`--mesh-pod-cidrs`), as Cilium's and
//! Calico's pools are, not a watch of every pod.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};
use tokio::net::TcpStream;

use super::PodIdentity;
use super::authz::Principal;
use super::bounded::BoundedValues;
use crate::mesh::{Identities, MeshConfig, MeshError, SpiffeId, baggage, server_name};
use crate::pods::Workload;
use crate::proxy::metrics::{MetricsError, counter};
use crate::proxy::upstream::connector::ConnectError;
use crate::proxy::upstream::egress::{Egress, EgressError, EgressId};
use crate::tunnel::{
    Dial, PeerInfo, PoolConfig, Refusal, Reuse, ServerLimits, Spawner, TUNNEL_PORT, TunnelError,
    TunnelHandler, TunnelPool, TunnelServer, TunnelStream,
};

/// How long an address that refused the tunnel port is sent plain text
/// without asking again (a pod that enrolls meanwhile is tunnelled to after
/// this).
pub const NO_TUNNEL_MEMORY: Duration = Duration::from_secs(30);
/// Addresses remembered as refusing the tunnel, at most; when full the
/// memory is emptied (each is asked once more).
pub const MAX_NO_TUNNEL: usize = 4096;
/// Pooled tunnel connections (one per source pod, service account and
/// destination pod), at most; the pool drops closed and idle ones first.
pub const MAX_TUNNELS: usize = 4096;
/// Source namespaces from peer certificates used as metric labels, at
/// most; a namespace beyond them is counted as `other`. Certificates come
/// only from the mesh's node CAs, but a compromised node can mint any
/// namespace, and no peer may grow the series count without bound.
pub const MAX_SOURCE_NAMESPACES: usize = 1024;
/// Source workload names (from streams' baggage) used as labels, at most;
/// beyond them `other`. Any peer of the mesh may name any workload in its
/// own namespace.
pub const MAX_SOURCE_WORKLOADS: usize = 4096;
/// Bound on opening a tunnel stream inside whatever bound the caller has
/// (a cluster's `connect_timeout`, the passthrough's connect timeout).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the tunnel is used, and the credentials it is used with.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub config: MeshConfig,
    /// The cluster's pod networks: only a destination inside one may be a
    /// pod with weir at its port 15008 (a Service's virtual address or an
    /// external host never is).
    pub pod_cidrs: Vec<Cidr>,
    /// Never send a connection to a pod address in plain text: one whose
    /// port 15008 refuses (no weir there, or a forged reset) fails instead
    /// (Istio's `ISTIO_MUTUAL`, against its auto mTLS's fallback).
    pub require_tunnel: bool,
}

/// An address block, `192.0.2.0/24` or `2001:db8::/48`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network's address and prefix length.
    pub fn parts(&self) -> (IpAddr, u8) {
        (self.addr, self.prefix)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let (whole, rest) = (usize::from(prefix / 8), prefix % 8);
    if net[..whole] != ip[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xff_u8 << (8 - rest);
        net[whole] & mask == ip[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (address/prefix, e.g. 10.244.0.0/16)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("{s:?}: address {addr:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?}: prefix {prefix:?} is not 0-{max}"))?;
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MeshLinkError {
    #[error("mesh credentials: {0}")]
    Credentials(#[from] MeshError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The tunnel's counters (`docs/metrics.md`, "Mesh").
struct MeshMetrics {
    /// New tunnel connections: [outbound, inbound].
    connections: [IntCounter; 2],
    /// Tunnelled streams: [outbound, inbound].
    streams: [IntCounter; 2],
    /// Outbound tunnels that failed, by reason.
    failed_tls: IntCounter,
    failed_refused: IntCounter,
    failed_other: IntCounter,
    failed_no_tunnel: IntCounter,
    /// Inbound tunnels refused, by reason.
    refused_not_served: IntCounter,
    refused_identity: IntCounter,
    /// Connections sent in plain text to a pod address without weir.
    plaintext: IntCounter,
}

impl MeshMetrics {
    fn new(r: &Registry) -> Result<Self, MetricsError> {
        let connections = counter(
            r,
            "weir_mesh_tunnel_connections_total",
            "Mutual-TLS tunnel connections between weir agents: outbound (opened for this node's pods) and inbound (accepted on an enrolled pod's port 15008).",
            &["direction"],
        )?;
        let streams = counter(
            r,
            "weir_mesh_tunnel_streams_total",
            "Connections carried through a tunnel (one HTTP/2 CONNECT stream each), by direction.",
            &["direction"],
        )?;
        let failed = counter(
            r,
            "weir_mesh_tunnel_failures_total",
            "Outbound connections that could not be tunnelled and were not sent: reason tls (the peer failed to prove a mesh identity, or refused ours), refused (the peer answered the CONNECT with an error status), other (timeout, reset, HTTP/2), no_tunnel (nothing listens on the pod's port 15008 and --mesh-require-tunnel forbids plain text).",
            &["reason"],
        )?;
        let refused = counter(
            r,
            "weir_mesh_tunnel_refused_total",
            "Tunnel streams this node refused: reason not_served (the target is not the pod the tunnel reached), identity (no mesh identity in the peer certificate).",
            &["reason"],
        )?;
        let plaintext = IntCounter::new(
            "weir_mesh_plaintext_connections_total",
            "Connections from an enrolled pod to a pod address sent without the tunnel because nothing listens on its port 15008 (no weir serves that pod).",
        )?;
        r.register(Box::new(plaintext.clone()))?;
        Ok(Self {
            connections: ["outbound", "inbound"].map(|d| connections.with_label_values(&[d])),
            streams: ["outbound", "inbound"].map(|d| streams.with_label_values(&[d])),
            failed_tls: failed.with_label_values(&["tls"]),
            failed_refused: failed.with_label_values(&["refused"]),
            failed_other: failed.with_label_values(&["other"]),
            failed_no_tunnel: failed.with_label_values(&["no_tunnel"]),
            refused_not_served: refused.with_label_values(&["not_served"]),
            refused_identity: refused.with_label_values(&["identity"]),
            plaintext,
        })
    }
}

/// One agent's end of the mesh: its credentials, its pooled tunnels, what
/// it remembers of addresses without weir.
pub(super) struct MeshLink {
    identities: Identities,
    pod_cidrs: Vec<Cidr>,
    require_tunnel: bool,
    /// Keyed by (source identity, source pod, destination pod address): a
    /// pod's tunnels leave from its own network namespace, with its address.
    pool: TunnelPool<(SpiffeId, EgressId, IpAddr)>,
    no_tunnel: Mutex<HashMap<IpAddr, Instant>>,
    /// The source namespaces labels were made for (see [`MAX_SOURCE_NAMESPACES`]).
    source_namespaces: BoundedValues,
    /// The source workloads labels were made for (see [`MAX_SOURCE_WORKLOADS`]).
    source_workloads: BoundedValues,
    metrics: MeshMetrics,
}

impl MeshLink {
    pub(super) fn new(options: &MeshOptions, registry: &Registry) -> Result<Self, MeshLinkError> {
        let identities = Identities::load(options.config.clone())?;
        let pool = TunnelPool::new(PoolConfig {
            max_keys: MAX_TUNNELS,
            spawner: charging_spawner(),
            ..PoolConfig::default()
        });
        Ok(Self {
            identities,
            pod_cidrs: options.pod_cidrs.clone(),
            require_tunnel: options.require_tunnel,
            pool,
            no_tunnel: Mutex::new(HashMap::new()),
            source_namespaces: BoundedValues::new(MAX_SOURCE_NAMESPACES),
            source_workloads: BoundedValues::new(MAX_SOURCE_WORKLOADS),
            metrics: MeshMetrics::new(registry)?,
        })
    }

    /// The identity of `workload` in this mesh.
    fn identity_of(&self, workload: &Workload) -> Result<SpiffeId, MeshError> {
        SpiffeId::new(
            self.identities.trust_domain().clone(),
            &workload.namespace,
            &workload.service_account,
        )
        .map_err(MeshError::from)
    }

    /// The label value of source namespace `namespace` (a peer
    /// certificate's), within [`MAX_SOURCE_NAMESPACES`].
    pub(super) fn namespace_label(&self, namespace: &str) -> Arc<str> {
        self.source_namespaces.label(namespace)
    }

    pub(super) fn trust_domain(&self) -> &str {
        self.identities.trust_domain().as_str()
    }

    fn is_pod_address(&self, dst: SocketAddr) -> bool {
        dst.port() != TUNNEL_PORT && self.pod_cidrs.iter().any(|c| c.contains(dst.ip()))
    }

    fn refused_recently(&self, ip: IpAddr) -> bool {
        let Ok(mut no) = self.no_tunnel.lock() else {
            return false;
        };
        match no.get(&ip) {
            Some(at) if at.elapsed() < NO_TUNNEL_MEMORY => true,
            Some(_) => {
                no.remove(&ip);
                false
            }
            None => false,
        }
    }

    fn remember_refused(&self, ip: IpAddr) {
        if let Ok(mut no) = self.no_tunnel.lock() {
            if no.len() >= MAX_NO_TUNNEL {
                no.clear();
            }
            no.insert(ip, Instant::now());
        }
    }

    /// A stream to `dst` through the tunnel to its pod's weir, for the pod
    /// `egress` is (its workload, its network namespace); `None` when the
    /// connection is not for the tunnel (no enrolled source, not a pod
    /// address, or no weir there: then it goes in plain text, unless the
    /// tunnel is required).
    pub(super) async fn connect(
        &self,
        egress: Option<&Egress>,
        dst: SocketAddr,
    ) -> Result<Option<TunnelStream>, ConnectError> {
        let Some((egress, workload)) = egress.and_then(|e| Some((e, e.tag::<Workload>()?))) else {
            return Ok(None);
        };
        if !self.is_pod_address(dst) {
            return Ok(None);
        }
        if !self.require_tunnel && self.refused_recently(dst.ip()) {
            self.metrics.plaintext.inc();
            return Ok(None);
        }
        let failed = |e: io::Error| ConnectError::Failed(dst, e);
        let id = self
            .identity_of(workload)
            .map_err(|e| failed(io::Error::other(e)))?;
        let tls = self
            .identities
            .client_config(&id)
            .map_err(|e| failed(io::Error::other(e)))?;
        let peer = SocketAddr::new(dst.ip(), TUNNEL_PORT);
        let key = (id, egress.id(), dst.ip());
        let dial = Dial {
            connect: || dial_from(egress, peer),
            tls,
            server_name: server_name(),
        };
        let baggage = baggage::encode(&workload.namespace, &workload.name);
        let stream = (dst, baggage.as_ref());
        match self
            .pool
            .connect_with(&key, stream, dial, OPEN_TIMEOUT)
            .await
        {
            Ok(tunnel) => {
                if tunnel.reuse == Reuse::New {
                    self.metrics.connections[0].inc();
                }
                self.metrics.streams[0].inc();
                Ok(Some(tunnel.stream))
            }
            Err(e) if e.is_refused() && self.require_tunnel => {
                self.metrics.failed_no_tunnel.inc();
                log::debug!(
                    "tunnel to {dst} for {}: {e} (plain text refused)",
                    egress.name()
                );
                Err(failed(io::Error::other(e)))
            }
            Err(e) if e.is_refused() => {
                self.remember_refused(dst.ip());
                self.metrics.plaintext.inc();
                Ok(None)
            }
            Err(e) => {
                match &e {
                    TunnelError::Tls(_) | TunnelError::NoH2 => self.metrics.failed_tls.inc(),
                    TunnelError::Status(_) => self.metrics.failed_refused.inc(),
                    _ => self.metrics.failed_other.inc(),
                }
                log::debug!("tunnel to {dst} for {}: {e}", egress.name());
                Err(failed(io::Error::other(e)))
            }
        }
    }

    /// Serve a connection to the tunnel port of enrolled pod `pod`
    /// (`workload`, at `dst`): mutual TLS as that pod's workload, then each
    /// CONNECT to one of the pod's own ports handed to `deliver` with the
    /// peer's workload.
    pub(super) async fn serve<D: Deliver>(
        self: &Arc<Self>,
        stream: TcpStream,
        dst: SocketAddr,
        peer: SocketAddr,
        workload: &Workload,
        pod: &PodIdentity,
        deliver: D,
    ) {
        self.metrics.connections[1].inc();
        let tls = match self
            .identity_of(workload)
            .and_then(|id| self.identities.server_config(&id))
        {
            Ok(tls) => tls,
            Err(e) => {
                log::warn!(
                    "tunnel to {}/{}: no certificate to answer with: {e}",
                    pod.namespace,
                    pod.name
                );
                return;
            }
        };
        let draining = deliver.draining();
        let handler = Arc::new(PodEnd {
            link: Arc::clone(self),
            pod_ip: dst.ip(),
            deliver,
        });
        let server = TunnelServer::new(tls, handler, ServerLimits::default())
            .with_spawner(charging_spawner());
        if let Err(e) = server.serve_until(stream, Some(peer), draining).await {
            log::debug!("tunnel from {peer} to {dst}: {e}");
        }
    }
}

/// Tunnel streams run as tasks charged to whoever pays for the task that
/// spawns them (the pod whose connection it is, `proxy::cost`).
fn charging_spawner() -> Spawner {
    Spawner::new(crate::proxy::cost::spawn)
}

/// The tunnel's TCP connection, from the source pod's network namespace;
/// a refusal keeps its kind (the one failure that allows plain text).
async fn dial_from(egress: &Egress, peer: SocketAddr) -> io::Result<TcpStream> {
    let stream = egress.connect(peer).await.map_err(|e| match e {
        EgressError::Connect(e) => e,
        other => io::Error::other(other),
    })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// What the far end does with an admitted stream: serve it as an inbound
/// connection to the pod from `source`, the peer certificate's workload
/// (its namespace a bounded label: [`MAX_SOURCE_NAMESPACES`]), the
/// interceptor's inbound side.
/// A tunnel stream's source, as the receiving agent knows it.
pub(super) struct MeshSource {
    /// What the peer's certificate proved (its namespace a bounded label).
    pub principal: Principal,
    /// The workload the stream's baggage named in that namespace: a metric
    /// label only (bounded: [`MAX_SOURCE_WORKLOADS`]), never authorization.
    pub workload: Option<Arc<str>>,
}

pub(super) trait Deliver: Send + Sync + 'static {
    fn deliver(
        &self,
        source: MeshSource,
        target: SocketAddr,
        stream: TunnelStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Resolves when the agent begins to drain: the tunnel connection
    /// then says GOAWAY, so the peer takes new streams elsewhere (to a
    /// successor agent) while the open ones finish.
    fn draining(&self) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The tunnel's far end in one pod.
struct PodEnd<D> {
    link: Arc<MeshLink>,
    pod_ip: IpAddr,
    deliver: D,
}

impl<D: Deliver> TunnelHandler for PodEnd<D> {
    fn admit(&self, peer: &PeerInfo, target: SocketAddr) -> Result<(), Refusal> {
        // Only to the pod the tunnel reached, and not to the tunnel again:
        // the tunnel is no way into the node's network.
        if target.ip().to_canonical() != self.pod_ip.to_canonical() || target.port() == TUNNEL_PORT
        {
            self.link.metrics.refused_not_served.inc();
            return Err(Refusal::NotServed);
        }
        if self.link.identities.peer_identity(&peer.certs).is_err() {
            self.link.metrics.refused_identity.inc();
            return Err(Refusal::Forbidden);
        }
        Ok(())
    }

    fn serve(
        &self,
        peer: Arc<PeerInfo>,
        target: SocketAddr,
        stream: TunnelStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // `admit` checked it; the verifier before it.
        let Ok(source) = self.link.identities.peer_identity(&peer.certs) else {
            return Box::pin(async {});
        };
        self.link.metrics.streams[1].inc();
        let principal = Principal {
            // The certificate's namespace is the peer's choice within its
            // node CA: a bounded label.
            namespace: self.link.namespace_label(&source.namespace),
            ..Principal::new(
                source.trust_domain.as_str(),
                &source.namespace,
                &source.service_account,
            )
        };
        let workload = stream
            .baggage()
            .and_then(|b| baggage::workload_in(b, &source.namespace))
            .map(|w| self.link.source_workloads.label(w));
        let source = MeshSource {
            principal,
            workload,
        };
        self.deliver.deliver(source, target, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::bounded::OTHER;

    #[test]
    fn source_namespaces_are_bounded_labels() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::mesh::testing::write_mesh(
            dir.path(),
            "cluster.local",
            Duration::from_secs(3600),
        )
        .unwrap();
        let options = MeshOptions {
            config,
            pod_cidrs: vec![],
            require_tunnel: false,
        };
        let link = MeshLink::new(&options, &Registry::new()).unwrap();
        for n in 0..MAX_SOURCE_NAMESPACES {
            assert_eq!(&*link.namespace_label(&format!("ns{n}")), format!("ns{n}"));
        }
        assert_eq!(&*link.namespace_label("ns7"), "ns7");
        assert_eq!(&*link.namespace_label("one-too-many"), OTHER);
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let v4: Cidr = "192.0.2.0/25".parse().unwrap();
        assert!(v4.contains("192.0.2.127".parse().unwrap()));
        assert!(!v4.contains("192.0.2.128".parse().unwrap()));
        assert!(v4.contains("::ffff:192.0.2.1".parse().unwrap()));
        let v6: Cidr = "2001:db8:1::/52".parse().unwrap();
        assert!(v6.contains("2001:db8:1:fff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:1:1000::1".parse().unwrap()));
        assert!(!v6.contains("192.0.2.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("198.51.100.7".parse().unwrap()));
        assert_eq!(v4.to_string(), "192.0.2.0/25");
        for bad in [
            "192.0.2.0",
            "192.0.2.0/33",
            "2001:db8::/129",
            "pods/16",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
        }
    }
}
