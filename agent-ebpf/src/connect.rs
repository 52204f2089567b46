//! `cgroup/connect4` and `cgroup/connect6`: redirect an enrolled pod's outbound TCP
//! connections to the proxy's egress listener inside the pod's own network
//! namespace, remembering where they were going; or let them go direct, or
//! refuse them, by what `WEIR_DESTINATIONS` says of the destination:
//!
//! - listed for the proxy (a listener claims it, the mesh knows it): TCP is
//!   redirected, UDP passes;
//! - listed as direct (REGISTRY_ONLY's allow list, the cluster's DNS):
//!   passes, counted;
//! - not listed: under REGISTRY_ONLY the `connect()` fails with EPERM before
//!   any packet leaves (TCP and UDP), counted; else TCP goes to the proxy,
//!   or direct and counted where the pod or the node asked for the proxy
//!   hop only where a listener claims the destination.
//!
//! Datagrams a pod addresses one by one, without `connect()`, meet the same
//! REGISTRY_ONLY verdict in `sendmsg.rs`. Under it, UDP to a peer the pod
//! received from (`recvmsg.rs`) passes: an answer, not a new destination.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_CURRENT_NETNS, bpf_sock_addr, bpf_sock_tuple},
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_sk_lookup_tcp, bpf_sk_release,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use weir_common::{
    AF_INET, AF_INET6, DEST_DIRECT, DEST_PROXY, FLOW_DIRECT, FLOW_REFUSED, FlowCounts, FlowKey,
    POD_FLAG_FAIL_CLOSED, POD_FLAG_UNCLAIMED_DIRECT, POD_FLAG_UNCLAIMED_PROXY, PendingConnect,
    PodSettings, SETTING_REGISTRY_ONLY, SETTING_UNCLAIMED_DIRECT, SockAddr,
};

use crate::maps::{
    BYPASS_COUNTS, BYPASSED_CONNECTS, DIRECT_SOCKETS, PENDING_CONNECT, PODS, count_flow,
    destination, heard_from, setting,
};

/// Let the `connect()` proceed (to the original or the rewritten address).
pub(crate) const ALLOW: i32 = 1;
/// Fail the `connect()` with EPERM.
const REFUSE: i32 = 0;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// UDP-Lite: the same socket layer as UDP (and the same hooks), so the
/// same policy.
const IPPROTO_UDPLITE: u32 = 136;
const LOOPBACK_V4: u32 = 0x7f00_0001;

/// What becomes of one `connect()`.
pub(crate) enum Route {
    /// Redirected to the proxy (TCP only).
    Proxy,
    /// To its destination, counted.
    Direct,
    /// EPERM, counted.
    Refuse,
    /// To its destination, not counted (UDP outside REGISTRY_ONLY, or to a
    /// peer the pod received from).
    Untouched,
}

#[cgroup_sock_addr(connect4)]
pub fn weir_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/connect4 program a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some((netns, pod)) = enrolled(&ctx, sa) else {
        return ALLOW;
    };
    let orig = sock_addr4(sa);
    if is_loopback_v4(orig.addr[0]) || is_excluded(&pod, orig.port) {
        return ALLOW;
    }
    match decide(&pod, netns, &orig, sa.protocol) {
        Route::Proxy => {}
        other => return settle(&ctx, netns, orig, sa.protocol, other),
    }
    if !listening_v4(&ctx, pod.egress_port_v4) {
        return unserved(&ctx, netns, &pod, orig);
    }
    if remember(&ctx, netns, orig) {
        sa.user_ip4 = LOOPBACK_V4.to_be();
        sa.user_port = port_to_ctx(pod.egress_port_v4);
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn weir_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/connect6 program a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    let Some((netns, pod)) = enrolled(&ctx, sa) else {
        return ALLOW;
    };
    let called = sock_addr6(sa);
    let (dst, port) = (called.addr, called.port);
    if is_excluded(&pod, port) {
        return ALLOW;
    }
    if is_v4_mapped(&dst) {
        // A dual-stack socket reaching an IPv4 destination: send it to the IPv4
        // listener through its mapped address.
        if is_loopback_v4(dst[3]) {
            return ALLOW;
        }
        let orig = SockAddr {
            addr: [dst[3], 0, 0, 0],
            port,
            family: AF_INET,
        };
        match decide(&pod, netns, &orig, sa.protocol) {
            Route::Proxy => {}
            other => return settle(&ctx, netns, orig, sa.protocol, other),
        }
        if !listening_v4(&ctx, pod.egress_port_v4) {
            return unserved(&ctx, netns, &pod, orig);
        }
        if remember(&ctx, netns, orig) {
            sa.user_ip6[3] = LOOPBACK_V4.to_be();
            sa.user_port = port_to_ctx(pod.egress_port_v4);
        }
        return ALLOW;
    }
    if is_loopback_v6(&dst) {
        return ALLOW;
    }
    let orig = called;
    match decide(&pod, netns, &orig, sa.protocol) {
        Route::Proxy => {}
        other => return settle(&ctx, netns, orig, sa.protocol, other),
    }
    if !listening_v6(&ctx, pod.egress_port_v6) {
        return unserved(&ctx, netns, &pod, orig);
    }
    if remember(&ctx, netns, orig) {
        // Written word by word: the verifier only allows 4-byte stores here.
        sa.user_ip6[0] = 0;
        sa.user_ip6[1] = 0;
        sa.user_ip6[2] = 0;
        sa.user_ip6[3] = 1u32.to_be();
        sa.user_port = port_to_ctx(pod.egress_port_v6);
    }
    ALLOW
}

/// Where `orig` goes, by what the agent listed and the policies.
#[inline(always)]
pub(crate) fn decide(pod: &PodSettings, netns: u64, orig: &SockAddr, protocol: u32) -> Route {
    let tcp = protocol == IPPROTO_TCP;
    match destination(orig) {
        Some(DEST_PROXY) if tcp => Route::Proxy,
        Some(DEST_PROXY) => Route::Untouched,
        Some(DEST_DIRECT) => Route::Direct,
        // Except UDP to a peer the pod received from: a server answering
        // its client (QUIC servers connect a socket to each).
        _ if setting(SETTING_REGISTRY_ONLY) => {
            if !tcp && heard_from(netns, orig) {
                Route::Untouched
            } else {
                Route::Refuse
            }
        }
        _ if !tcp => Route::Untouched,
        _ if unclaimed_goes_direct(pod) => Route::Direct,
        _ => Route::Proxy,
    }
}

/// The pod's annotation, else the node's default.
fn unclaimed_goes_direct(pod: &PodSettings) -> bool {
    if pod.flags & POD_FLAG_UNCLAIMED_DIRECT != 0 {
        return true;
    }
    if pod.flags & POD_FLAG_UNCLAIMED_PROXY != 0 {
        return false;
    }
    setting(SETTING_UNCLAIMED_DIRECT)
}

/// The verdict of a `connect()` that does not reach the proxy, counted.
pub(crate) fn settle(
    ctx: &SockAddrContext,
    netns: u64,
    orig: SockAddr,
    protocol: u32,
    route: Route,
) -> i32 {
    let verdict = match route {
        Route::Direct => FLOW_DIRECT,
        Route::Refuse => FLOW_REFUSED,
        Route::Proxy | Route::Untouched => return ALLOW,
    };
    let key = FlowKey {
        netns_cookie: netns,
        dst: orig,
        verdict,
        protocol: protocol as u16,
    };
    count_flow(
        &key,
        &FlowCounts {
            connections: 1,
            ..FlowCounts::default()
        },
    );
    if verdict == FLOW_REFUSED {
        return REFUSE;
    }
    if protocol == IPPROTO_TCP {
        // SAFETY: bpf_get_socket_cookie accepts a cgroup/connect context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        // Best effort: without it only the bytes go uncounted.
        let _ = DIRECT_SOCKETS.insert(&cookie, &key, 0);
    }
    ALLOW
}

/// The namespace cookie and the pod's settings when this is a TCP or UDP
/// socket in an enrolled pod's namespace.
pub(crate) fn enrolled(ctx: &SockAddrContext, sa: &bpf_sock_addr) -> Option<(u64, PodSettings)> {
    if !matches!(sa.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE) {
        return None;
    }
    // SAFETY: bpf_get_netns_cookie accepts a cgroup/connect context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; only the agent writes this map.
    let pod = unsafe { PODS.get(&netns).copied() }?;
    Some((netns, pod))
}

/// Whether the pod asked for connections to `port` to go direct.
pub(crate) fn is_excluded(pod: &PodSettings, port: u16) -> bool {
    let mut i = 0;
    while i < pod.exclude_outbound_ports.len() {
        if pod.exclude_outbound_ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// The verdict for a pod whose proxy is not serving it (agent stopped,
/// crashed, restarting): pass untouched unless the pod asked to fail closed.
/// A connection that passes is outside the mesh for its whole life: it is
/// counted and recorded for the next agent, which reports it and may reset it.
fn unserved(ctx: &SockAddrContext, netns_cookie: u64, pod: &PodSettings, orig: SockAddr) -> i32 {
    if pod.flags & POD_FLAG_FAIL_CLOSED != 0 {
        return REFUSE;
    }
    match BYPASS_COUNTS.get_ptr_mut(&netns_cookie) {
        // SAFETY: this CPU's slot of the entry; no other CPU writes it.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = BYPASS_COUNTS.insert(&netns_cookie, &1, 0);
        }
    }
    // SAFETY: bpf_get_socket_cookie accepts a cgroup/connect context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let direct = PendingConnect {
        netns_cookie,
        orig,
        _pad: 0,
    };
    let _ = BYPASSED_CONNECTS.insert(&cookie, &direct, 0);
    ALLOW
}

/// Whether the proxy's egress listener exists in the socket's namespace. The
/// listener is the liveness signal: when the agent dies the kernel closes it at
/// once, so no heartbeat is needed to stop redirecting into nothing.
fn listening_v4(ctx: &SockAddrContext, port: u16) -> bool {
    // SAFETY: all-zero is a valid bpf_sock_tuple; only the IPv4 half is used.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4.daddr = LOOPBACK_V4.to_be();
    tuple.__bindgen_anon_1.ipv4.dport = port.to_be();
    lookup_listener(ctx, &mut tuple, 12)
}

fn listening_v6(ctx: &SockAddrContext, port: u16) -> bool {
    // SAFETY: all-zero is a valid bpf_sock_tuple.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // SAFETY: writing plain integers into the IPv6 member of the union.
    unsafe {
        tuple.__bindgen_anon_1.ipv6.daddr[3] = 1u32.to_be();
        tuple.__bindgen_anon_1.ipv6.dport = port.to_be();
    }
    lookup_listener(ctx, &mut tuple, 36)
}

fn lookup_listener(ctx: &SockAddrContext, tuple: &mut bpf_sock_tuple, tuple_size: u32) -> bool {
    // SAFETY: the tuple lives on this stack frame and is `tuple_size` bytes long
    // for its family; the returned reference is released before returning.
    unsafe {
        let sk = bpf_sk_lookup_tcp(
            ctx.as_ptr(),
            tuple,
            tuple_size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        );
        if sk.is_null() {
            return false;
        }
        bpf_sk_release(sk.cast());
    }
    true
}

/// Records the original destination and the namespace by socket cookie; false
/// if they could not be recorded, in which case the connection is left alone
/// rather than redirected to a proxy that could not tell where it was going.
/// The namespace is recorded here because sockops, which re-keys the entry,
/// cannot read it before Linux 5.15.
fn remember(ctx: &SockAddrContext, netns_cookie: u64, orig: SockAddr) -> bool {
    // SAFETY: bpf_get_socket_cookie accepts a cgroup/connect context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let pending = PendingConnect {
        netns_cookie,
        orig,
        _pad: 0,
    };
    PENDING_CONNECT.insert(&cookie, &pending, 0).is_ok()
}

/// The IPv4 address and port of a cgroup/connect4, sendmsg4 or recvmsg4 call.
#[inline(always)]
pub(crate) fn sock_addr4(sa: &bpf_sock_addr) -> SockAddr {
    SockAddr {
        addr: [sa.user_ip4, 0, 0, 0],
        port: port_from_ctx(sa.user_port),
        family: AF_INET,
    }
}

/// The IPv6 address and port of a cgroup/connect6, sendmsg6 or recvmsg6 call, the
/// address read word by word: the verifier refuses a block copy out of the
/// context (a load through a moved context pointer), which the compiler may
/// emit for a plain `sa.user_ip6`.
#[inline(always)]
pub(crate) fn sock_addr6(sa: &bpf_sock_addr) -> SockAddr {
    let field = &sa.user_ip6;
    // SAFETY: `field` is a valid, aligned context field of four words.
    let addr = unsafe {
        [
            core::ptr::read_volatile(&field[0]),
            core::ptr::read_volatile(&field[1]),
            core::ptr::read_volatile(&field[2]),
            core::ptr::read_volatile(&field[3]),
        ]
    };
    SockAddr {
        addr,
        port: port_from_ctx(sa.user_port),
        family: AF_INET6,
    }
}

/// `user_port` carries the port in network byte order in its low 16 bits.
fn port_from_ctx(user_port: u32) -> u16 {
    u16::from_be(user_port as u16)
}

fn port_to_ctx(port: u16) -> u32 {
    port.to_be() as u32
}

pub(crate) fn is_loopback_v4(addr_be: u32) -> bool {
    u32::from_be(addr_be) >> 24 == 127
}

pub(crate) fn is_loopback_v6(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 1u32.to_be()
}

pub(crate) fn is_v4_mapped(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == 0xffffu32.to_be()
}
