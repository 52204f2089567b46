//! Map key and value types shared by weir's eBPF programs and its agent.
//!
//! Both sides must agree on the byte layout of everything in here, so every type is
//! `#[repr(C)]`, has explicit padding, and uses integers instead of `bool`.
//! Addresses are kept in network byte order exactly as the kernel hands them to the
//! programs; ports are kept in host byte order so neither side has to guess.
#![no_std]

/// Per-pod settings, keyed by the pod's network namespace cookie.
pub const MAP_PODS: &str = "WEIR_PODS";
/// Original destination of a redirected `connect()` and the namespace it was
/// made in ([`PendingConnect`]), keyed by the socket cookie. Short-lived: the
/// sockops program moves the entry to [`MAP_ORIG_DST`] once the connection is
/// established.
pub const MAP_PENDING_CONNECT: &str = "WEIR_PENDING_CONNECT";
/// Maps an earlier agent pinned that this one no longer uses; removed from
/// the pin directory at start. `WEIR_PENDING_ORIG_DST` held a bare
/// [`SockAddr`] before [`PendingConnect`] carried the namespace too.
pub const OBSOLETE_MAPS: [&str; 1] = ["WEIR_PENDING_ORIG_DST"];
/// Original destination of a redirected connection, keyed by the client end of the
/// connection as the proxy sees it when it accepts ([`ConnKey`]).
pub const MAP_ORIG_DST: &str = "WEIR_ORIG_DST";

/// Inbound settings of each enrolled pod address ([`InboundKey`] ->
/// [`InboundSettings`]). Keyed by the pod's own IP, not its namespace:
/// sk_lookup programs cannot read the namespace cookie, and a pod's IP is
/// unique on its node.
pub const MAP_INBOUND_PODS: &str = "WEIR_INBOUND_PODS";
/// The proxy's in-pod inbound listeners (a SOCKHASH keyed by [`InboundKey`]),
/// where the sk_lookup program steers connections to the pod's ports.
pub const MAP_INBOUND_LISTENERS: &str = "WEIR_INBOUND_LISTENERS";

/// Sockets of both ends of app-to-proxy loopback connections (a SOCKHASH keyed
/// by [`SockKey`]), for sk_msg to splice data between them.
pub const MAP_SOCKS: &str = "WEIR_SOCKS";
/// Network namespace cookie by socket cookie of the agent's own sockets
/// (`u64` -> `u64`), filled by [`PROG_NETNS_NAME4`] / [`PROG_NETNS_NAME6`]
/// on kernels without `SO_NETNS_COOKIE`.
pub const MAP_NETNS_BY_SOCKET: &str = "WEIR_NETNS_BY_SOCKET";
/// Connections enrolled pods made directly, outside the mesh, because no
/// proxy served them (fail-open while no agent ran): the namespace and
/// original destination ([`PendingConnect`]) by socket cookie, so the next
/// agent can find those still open. LRU, [`MAX_BYPASSED_CONNECTIONS`].
pub const MAP_BYPASSED_CONNECTS: &str = "WEIR_BYPASSED_CONNECTS";
/// How many connections each pod made that way (a per-CPU hash, namespace
/// cookie -> `u64`): the count survives the LRU's evictions.
pub const MAP_BYPASS_COUNTS: &str = "WEIR_BYPASS_COUNTS";
/// Node-wide switches (an array of one `u32` of `SETTING_*` bits).
pub const MAP_SETTINGS: &str = "WEIR_SETTINGS";
/// `WEIR_SETTINGS[0]`: splice app-to-proxy data with sk_msg.
pub const SETTING_SK_MSG: u32 = 1 << 0;
/// `WEIR_SETTINGS[0]`: `outbound_traffic_policy: REGISTRY_ONLY`: an enrolled
/// pod's `connect()` (TCP, and UDP) to a destination [`MAP_DESTINATIONS`]
/// does not list fails with EPERM.
pub const SETTING_REGISTRY_ONLY: u32 = 1 << 1;
/// `WEIR_SETTINGS[0]`: under `ALLOW_ANY`, an enrolled pod's TCP connection
/// to a destination no listener claims goes direct, without the proxy hop,
/// unless the pod says otherwise ([`POD_FLAG_UNCLAIMED_PROXY`]).
pub const SETTING_UNCLAIMED_DIRECT: u32 = 1 << 2;

/// Destinations the connect hooks know (an LPM trie, [`DestPrefix`] ->
/// `DEST_*`): those a listener claims, the mesh's pod networks, and under
/// REGISTRY_ONLY those allowed to be reached directly. Written only by the
/// agent, kept in step with its config.
pub const MAP_DESTINATIONS: &str = "WEIR_DESTINATIONS";
/// Direct (not proxied) and refused connections per source pod and
/// destination ([`FlowKey`] -> per-CPU [`FlowCounts`]), LRU,
/// [`MAX_FLOWS`]: what the agent exports beside the proxied traffic.
pub const MAP_FLOWS: &str = "WEIR_FLOWS";
/// Peers each enrolled pod received UDP from under REGISTRY_ONLY
/// ([`UdpPeerKey`] -> `u32`, 1), LRU, [`MAX_UDP_PEERS`]: the pod may answer
/// them (a DNS or QUIC server replying with `sendto()`, or connecting its
/// socket to the client) though the policy would refuse them as a
/// destination, as a stateful firewall lets replies out.
pub const MAP_UDP_PEERS: &str = "WEIR_UDP_PEERS";
/// The [`FlowKey`] of each open direct connection by socket cookie, so
/// sockops can add its bytes when it closes. LRU, [`MAX_TRACKED_CONNECTIONS`].
pub const MAP_DIRECT_SOCKETS: &str = "WEIR_DIRECT_SOCKETS";

/// `WEIR_DESTINATIONS` value: redirect to the proxy (a listener claims
/// the destination, or the mesh knows it).
pub const DEST_PROXY: u32 = 1;
/// `WEIR_DESTINATIONS` value: go direct, counted (the REGISTRY_ONLY allow
/// list, the cluster's DNS servers).
pub const DEST_DIRECT: u32 = 2;

/// [`FlowKey::verdict`]: the connection went direct.
pub const FLOW_DIRECT: u16 = 1;
/// [`FlowKey::verdict`]: the `connect()` failed with EPERM (REGISTRY_ONLY).
pub const FLOW_REFUSED: u16 = 2;
/// Capacity of [`MAP_FLOWS`]: (pod, destination, verdict) triples counted
/// at once; the least recently used are forgotten (the agent has read them
/// within its collection interval unless more than this many are new in it).
pub const MAX_FLOWS: u32 = 16_384;
/// Capacity of [`MAP_UDP_PEERS`]; each receive refreshes its peer, so the
/// peers forgotten first are those not heard from for longest.
pub const MAX_UDP_PEERS: u32 = 16_384;
/// Capacity of [`MAP_DESTINATIONS`]: claimed addresses, pod networks,
/// allowed prefixes.
pub const MAX_DESTINATIONS: u32 = 16_384;

/// Program names as they appear in the object file.
pub const PROG_CONNECT4: &str = "weir_connect4";
pub const PROG_CONNECT6: &str = "weir_connect6";
/// REGISTRY_ONLY for datagrams sent without `connect()` (UDP `sendto`).
pub const PROG_SENDMSG4: &str = "weir_sendmsg4";
pub const PROG_SENDMSG6: &str = "weir_sendmsg6";
/// Record the peers a pod receives UDP from, so that it may answer them
/// ([`MAP_UDP_PEERS`]).
pub const PROG_RECVMSG4: &str = "weir_recvmsg4";
pub const PROG_RECVMSG6: &str = "weir_recvmsg6";
/// The sockops hook (and the name its pinned links go by, whichever variant
/// runs): re-keys original destinations. Needs only helpers Linux 5.10 offers.
pub const PROG_SOCKOPS: &str = "weir_sockops";
/// The sockops variant that also feeds sk_msg acceleration: it needs
/// `bpf_get_netns_cookie` in sock_ops programs (Linux 5.15).
pub const PROG_SOCKOPS_ACCEL: &str = "weir_sockops_accel";
pub const PROG_SK_LOOKUP: &str = "weir_sk_lookup";
pub const PROG_SK_MSG: &str = "weir_sk_msg";
/// `getsockname` hooks that tell the agent its sockets' namespace cookies on
/// kernels without `SO_NETNS_COOKIE` (before 5.14).
pub const PROG_NETNS_NAME4: &str = "weir_netns_name4";
pub const PROG_NETNS_NAME6: &str = "weir_netns_name6";

/// Capacity of the pod table: pods on one node.
pub const MAX_PODS: u32 = 4096;
/// Capacity of the original-destination tables (LRU, so they never grow past this).
pub const MAX_TRACKED_CONNECTIONS: u32 = 65_536;
/// Capacity of [`MAP_BYPASSED_CONNECTS`]: direct connections remembered per
/// node while no agent runs (LRU: the oldest are forgotten, still counted).
pub const MAX_BYPASSED_CONNECTIONS: u32 = 16_384;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `PodSettings::flags`: refuse the pod's connections when the proxy is not serving
/// it, instead of letting them pass untouched.
pub const POD_FLAG_FAIL_CLOSED: u32 = 1 << 0;
/// `PodSettings::flags`: the pod's TCP connections to destinations no
/// listener claims go direct (`weir.dev/unclaimed-traffic: direct`),
/// whatever [`SETTING_UNCLAIMED_DIRECT`] says.
pub const POD_FLAG_UNCLAIMED_DIRECT: u32 = 1 << 1;
/// `PodSettings::flags`: they go through the proxy
/// (`weir.dev/unclaimed-traffic: proxy`), whatever the node default says.
pub const POD_FLAG_UNCLAIMED_PROXY: u32 = 1 << 2;
/// `InboundSettings::flags`: steer every port, not only those listed.
pub const INBOUND_FLAG_ALL_PORTS: u32 = 1 << 0;
/// `InboundSettings::flags`: drop connections to steered ports while the
/// proxy's inbound listener is gone, instead of letting them reach the app.
pub const INBOUND_FLAG_FAIL_CLOSED: u32 = 1 << 1;

/// How many inbound ports a pod can list (`weir.dev/inbound-ports`).
pub const MAX_INBOUND_PORTS: usize = 16;
/// How many outbound ports a pod can exclude (`weir.dev/exclude-outbound-ports`).
pub const MAX_EXCLUDED_OUTBOUND_PORTS: usize = 16;

/// Bumped whenever a map's key or value layout changes, so an agent never
/// adopts pinned maps written with another layout.
pub const MAP_LAYOUT_VERSION: u32 = 2;

/// Source address of the proxy's own connections to a pod's application, which
/// the inbound steering lets pass (Istio's choice, kept for familiarity).
pub const PROXY_INBOUND_SOURCE_V4: [u8; 4] = [127, 0, 0, 6];
/// IPv6 counterpart of [`PROXY_INBOUND_SOURCE_V4`] (`::6`).
pub const PROXY_INBOUND_SOURCE_V6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6];

/// What the eBPF side needs to know about an enrolled pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodSettings {
    /// Port of the proxy's egress listener on 127.0.0.1 inside the pod's netns.
    pub egress_port_v4: u16,
    /// Port of the proxy's egress listener on ::1 inside the pod's netns.
    pub egress_port_v6: u16,
    /// `POD_FLAG_*` bits.
    pub flags: u32,
    /// Destination ports never redirected; host byte order, 0 = unused slot.
    pub exclude_outbound_ports: [u16; MAX_EXCLUDED_OUTBOUND_PORTS],
}

/// A `connect()` as the connect hook saw it: redirected, between the hook and
/// establishment ([`MAP_PENDING_CONNECT`]), or let through because no proxy
/// served the pod ([`MAP_BYPASSED_CONNECTS`]). The connect hook records the
/// namespace because it can read its cookie on every supported kernel;
/// sock_ops programs can only from Linux 5.15.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingConnect {
    pub netns_cookie: u64,
    pub orig: SockAddr,
    pub _pad: u32,
}

/// The data of a [`MAP_DESTINATIONS`] key. The trie matches bits in memory
/// order, so the port and family come first: every entry covers them whole
/// (its prefix length is 32 plus the address bits). Port 0 stands for any
/// port; the hooks look the exact port up first, then port 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DestPrefix {
    /// Network byte order; 0: any port.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Network byte order; IPv4 in the first word.
    pub addr: [u32; 4],
}

/// Bits of a [`DestPrefix`] before its address.
pub const DEST_PREFIX_HEAD_BITS: u32 = 32;

/// A peer an enrolled pod received UDP from ([`MAP_UDP_PEERS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UdpPeerKey {
    pub netns_cookie: u64,
    /// IPv4 peers as `AF_INET`, also when a dual-stack socket saw them
    /// v4-mapped: the send side judges them as IPv4.
    pub peer: SockAddr,
    /// Zero: hash keys are compared byte for byte.
    pub _pad: u32,
}

/// Who connected where, and what became of it ([`MAP_FLOWS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub netns_cookie: u64,
    pub dst: SockAddr,
    /// `FLOW_DIRECT` or `FLOW_REFUSED`.
    pub verdict: u16,
    /// 6 (TCP), 17 (UDP) or 136 (UDP-Lite).
    pub protocol: u16,
}

/// Counts of one [`FlowKey`], per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// `connect()` calls.
    pub connections: u64,
    /// Of the direct TCP connections that closed: bytes the peer acknowledged.
    pub bytes_sent: u64,
    /// And bytes received.
    pub bytes_received: u64,
    /// Direct TCP connections that closed (their bytes are counted).
    pub closed: u64,
}

/// One end of a TCP connection, as that end sees it, in its namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub netns_cookie: u64,
    pub local: SockAddr,
    pub remote: SockAddr,
}

/// Which of a pod's inbound connections go to the proxy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InboundSettings {
    /// `INBOUND_FLAG_*` bits.
    pub flags: u32,
    /// Ports steered when `INBOUND_FLAG_ALL_PORTS` is not set; host byte
    /// order, 0 marks an unused slot.
    pub ports: [u16; MAX_INBOUND_PORTS],
}

/// Key of the inbound maps: one of a pod's own addresses. An IPv4 address
/// lives in `addr[0]` (network byte order), the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InboundKey {
    pub addr: [u32; 4],
    /// `AF_INET` or `AF_INET6`, as u32 to keep the key free of padding.
    pub family: u32,
}

/// An IPv4 or IPv6 socket address. IPv4 lives in `addr[0]`, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockAddr {
    /// Network byte order, as in `struct bpf_sock_addr`.
    pub addr: [u32; 4],
    /// Host byte order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
}

/// The client end of a connection the proxy accepted, in the namespace it lives in.
///
/// Every pod's redirected sockets have the source 127.0.0.1 or ::1, so the address
/// alone collides across pods: the network namespace cookie tells them apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub netns_cookie: u64,
    pub client: SockAddr,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integers with explicit padding, valid for any bytes.
    unsafe impl aya::Pod for super::PodSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockAddr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingConnect {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InboundKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InboundSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DestPrefix {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: plain integers, `repr(C)`, padding explicit.
    unsafe impl aya::Pod for super::UdpPeerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(
            core::mem::size_of::<PodSettings>(),
            8 + 2 * MAX_EXCLUDED_OUTBOUND_PORTS
        );
        assert_eq!(
            core::mem::size_of::<InboundSettings>(),
            4 + 2 * MAX_INBOUND_PORTS
        );
        assert_eq!(core::mem::size_of::<InboundKey>(), 20);
        assert_eq!(core::mem::size_of::<SockKey>(), 48);
        assert_eq!(core::mem::size_of::<SockAddr>(), 20);
        assert_eq!(core::mem::size_of::<ConnKey>(), 32);
        assert_eq!(core::mem::size_of::<PendingConnect>(), 32);
        assert_eq!(core::mem::align_of::<ConnKey>(), 8);
        assert_eq!(core::mem::size_of::<DestPrefix>(), 20);
        assert_eq!(core::mem::size_of::<FlowKey>(), 32);
        assert_eq!(core::mem::size_of::<FlowCounts>(), 32);
    }
}
