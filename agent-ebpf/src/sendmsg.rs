//! `cgroup/sendmsg4` and `cgroup/sendmsg6`: REGISTRY_ONLY for the datagrams
//! an enrolled pod addresses itself (`sendto()`/`sendmsg()` with a
//! destination, mostly on a UDP socket it never connected). They never pass
//! through `connect()`, so without these hooks such a socket could send to
//! any address the policy refuses to a connected one. A datagram to a
//! destination `WEIR_DESTINATIONS` does not list, and that the pod has not
//! received from (`recvmsg.rs`: a server's answer to its client passes),
//! fails with EPERM before it leaves, counted per pod and destination like
//! a refused `connect()`. Everything else passes untouched and uncounted
//! (a count per datagram would not be a count of flows), the cluster's DNS
//! included.
//!
//! A v4-mapped destination on an IPv6 socket reaches `sendmsg4` as plain
//! IPv4: `udpv6_sendmsg` hands it to `udp_sendmsg` before its own hook runs.

use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};
use weir_common::{AF_INET, SETTING_REGISTRY_ONLY, SockAddr};

use crate::connect::{
    ALLOW, Route, decide, enrolled, is_excluded, is_loopback_v4, is_loopback_v6, settle,
    sock_addr4, sock_addr6,
};
use crate::maps::setting;

#[cgroup_sock_addr(sendmsg4)]
pub fn weir_sendmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/sendmsg4 program a valid bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    verdict(&ctx, sa, sock_addr4(sa))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn weir_sendmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/sendmsg6 program a valid bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    verdict(&ctx, sa, sock_addr6(sa))
}

/// Refused (EPERM, counted) only where a `connect()` to `dst` would be.
fn verdict(ctx: &SockAddrContext, sa: &bpf_sock_addr, dst: SockAddr) -> i32 {
    // Only REGISTRY_ONLY refuses: outside it a datagram costs one array
    // lookup here, not the pod's and the destination's.
    if !setting(SETTING_REGISTRY_ONLY) {
        return ALLOW;
    }
    // No address of its own: a connected socket's send that carries control
    // messages runs the hook with a zeroed address. Its peer was judged at
    // connect(); an address given with port 0 never reaches the hook.
    if dst.port == 0 {
        return ALLOW;
    }
    let Some((netns, pod)) = enrolled(ctx, sa) else {
        return ALLOW;
    };
    let loopback = match dst.family {
        AF_INET => is_loopback_v4(dst.addr[0]),
        _ => is_loopback_v6(&dst.addr),
    };
    if loopback || is_excluded(&pod, dst.port) {
        return ALLOW;
    }
    match decide(&pod, netns, &dst, sa.protocol) {
        Route::Refuse => settle(ctx, netns, dst, sa.protocol, Route::Refuse),
        _ => ALLOW,
    }
}
