//! `cgroup/recvmsg4` and `cgroup/recvmsg6`: under REGISTRY_ONLY, remember
//! the peers an enrolled pod receives UDP from (`WEIR_UDP_PEERS`), so that
//! the pod may answer them (`sendmsg.rs`, and `connect.rs` for a server
//! that connects a socket to its client) though the policy would refuse
//! them as destinations: replies, as a stateful firewall lets them out.
//! The hook runs when the application asks for the sender's address, which
//! any server that answers must. It never changes what is received.

use aya_ebpf::{bindings::bpf_sock_addr, macros::cgroup_sock_addr, programs::SockAddrContext};
use weir_common::{AF_INET, SETTING_REGISTRY_ONLY, SockAddr};

use crate::connect::{ALLOW, enrolled, is_v4_mapped, sock_addr4, sock_addr6};
use crate::maps::{hear_from, setting};

#[cgroup_sock_addr(recvmsg4)]
pub fn weir_recvmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/recvmsg4 program a valid bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    remember(&ctx, sa, sock_addr4(sa));
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn weir_recvmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/recvmsg6 program a valid bpf_sock_addr.
    let sa = unsafe { &*ctx.sock_addr };
    let mut peer = sock_addr6(sa);
    // An IPv4 sender as a dual-stack socket sees it; the answer goes out
    // through sendmsg4 (or connect4) as IPv4, so it is kept as IPv4.
    if is_v4_mapped(&peer.addr) {
        peer = SockAddr {
            addr: [peer.addr[3], 0, 0, 0],
            port: peer.port,
            family: AF_INET,
        };
    }
    remember(&ctx, sa, peer);
    ALLOW
}

fn remember(ctx: &SockAddrContext, sa: &bpf_sock_addr, peer: SockAddr) {
    // Nothing is refused outside REGISTRY_ONLY, so nothing needs answering.
    if !setting(SETTING_REGISTRY_ONLY) {
        return;
    }
    if let Some((netns_cookie, _)) = enrolled(ctx, sa) {
        hear_from(netns_cookie, peer);
    }
}
