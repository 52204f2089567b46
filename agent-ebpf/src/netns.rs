//! `cgroup/getsockname4` and `getsockname6` on the agent's own cgroup, loaded
//! only on kernels without `SO_NETNS_COOKIE` (before 5.14): they record each
//! socket's network namespace cookie by its socket cookie, so the agent learns
//! the cookie of a pod's namespace from a listener it bound there
//! (`getsockname`, then `SO_COOKIE`, then `WEIR_NETNS_BY_SOCKET`), the same
//! value the connect hook keys by.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

use crate::maps::NETNS_BY_SOCKET;

/// Never change the call's outcome.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(getsockname4)]
pub fn weir_netns_name4(ctx: SockAddrContext) -> i32 {
    record(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getsockname6)]
pub fn weir_netns_name6(ctx: SockAddrContext) -> i32 {
    record(&ctx);
    ALLOW
}

fn record(ctx: &SockAddrContext) {
    // SAFETY: both helpers accept a cgroup_sock_addr context.
    let (socket, netns) = unsafe {
        (
            bpf_get_socket_cookie(ctx.as_ptr()),
            bpf_get_netns_cookie(ctx.as_ptr()),
        )
    };
    let _ = NETNS_BY_SOCKET.insert(&socket, &netns, 0);
}
