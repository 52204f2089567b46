//! `cgroup/sendmsg4` and `cgroup/sendmsg6`: REGISTRY_ONLY for the datagrams
//! an enrolled pod addresses one by one (`sendto()`/`sendmsg()` with a
//! destination, on a UDP socket it never connected). They never pass
//! through `connect()`, so without these hooks such a socket could send to
//! any address the policy refuses to a connected one. A datagram to a
//! destination `WEIR_DESTINATIONS` does not list fails with EPERM before it
//! leaves, counted per pod and destination like a refused `connect()`;
//! everything else passes untouched and uncounted (a count per datagram
//! would not be a count of flows), the cluster's DNS included.

use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};
use weir_common::{AF_INET, AF_INET6, SETTING_REGISTRY_ONLY, SockAddr};

use crate::connect::{
    ALLOW, Route, decide, enrolled, is_excluded, is_loopback_v4, is_loopback_v6, is_v4_mapped,
    port_from_ctx, settle,
};
use crate::maps::setting;

#[cgroup_sock_addr(sendmsg4)]
pub fn weir_sendmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/sendmsg4 program a valid bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    let dst = SockAddr {
        addr: [sa.user_ip4, 0, 0, 0],
        port: port_from_ctx(sa.user_port),
        family: AF_INET,
    };
    verdict(&ctx, sa, dst)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn weir_sendmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/sendmsg6 program a valid bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    let ip = sa.user_ip6;
    let port = port_from_ctx(sa.user_port);
    let dst = if is_v4_mapped(&ip) {
        // A dual-stack socket sending to an IPv4 address: judged as IPv4.
        SockAddr {
            addr: [ip[3], 0, 0, 0],
            port,
            family: AF_INET,
        }
    } else {
        SockAddr {
            addr: ip,
            port,
            family: AF_INET6,
        }
    };
    verdict(&ctx, sa, dst)
}

/// Refused (EPERM, counted) only where a `connect()` to `dst` would be.
fn verdict(ctx: &SockAddrContext, sa: &bpf_sock_addr, dst: SockAddr) -> i32 {
    // Only REGISTRY_ONLY refuses: outside it a datagram costs one array
    // lookup here, not the pod's and the destination's.
    if !setting(SETTING_REGISTRY_ONLY) {
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
    match decide(&pod, &dst, sa.protocol) {
        Route::Refuse => settle(ctx, netns, dst, sa.protocol, Route::Refuse),
        _ => ALLOW,
    }
}
