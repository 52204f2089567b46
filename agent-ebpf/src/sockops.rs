//! `sockops`: once a redirected connection is established, re-key its original
//! destination from the socket cookie (known at `connect()`) to the client's
//! address (what the proxy sees when it accepts), scoped by network namespace.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sock_ops,
    programs::SockOpsContext,
};
use weir_common::{AF_INET, AF_INET6, ConnKey, SockAddr};

use crate::maps::{ORIG_DST, PENDING_ORIG_DST};

#[sock_ops]
pub fn weir_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        on_active_established(&ctx);
    }
    1
}

fn on_active_established(ctx: &SockOpsContext) {
    // SAFETY: bpf_get_socket_cookie accepts a sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once; the entry is removed below by this socket only.
    let Some(orig) = (unsafe { PENDING_ORIG_DST.get(&cookie).copied() }) else {
        return;
    };
    let Some(client) = local_addr(ctx) else {
        return;
    };
    // SAFETY: bpf_get_netns_cookie accepts a sock_ops context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    let key = ConnKey {
        netns_cookie,
        client,
        _pad: 0,
    };
    let _ = ORIG_DST.insert(&key, &orig, 0);
    let _ = PENDING_ORIG_DST.remove(&cookie);
}

/// The socket's own address, as the peer address the proxy will see. A
/// v4-mapped IPv6 address is reported as IPv4, as the IPv4 listener sees it.
fn local_addr(ctx: &SockOpsContext) -> Option<SockAddr> {
    // sockops gives local_port in host byte order.
    let port = ctx.local_port() as u16;
    match ctx.family() as u16 {
        AF_INET => Some(SockAddr {
            addr: [ctx.local_ip4(), 0, 0, 0],
            port,
            family: AF_INET,
        }),
        AF_INET6 => {
            let ip = ctx.local_ip6();
            if ip[0] == 0 && ip[1] == 0 && ip[2] == 0xffffu32.to_be() {
                Some(SockAddr {
                    addr: [ip[3], 0, 0, 0],
                    port,
                    family: AF_INET,
                })
            } else {
                Some(SockAddr {
                    addr: ip,
                    port,
                    family: AF_INET6,
                })
            }
        }
        _ => None,
    }
}
