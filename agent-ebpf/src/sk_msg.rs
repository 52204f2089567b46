//! `sk_msg` on the `WEIR_SOCKS` sockets: data an application sends to the
//! proxy's egress listener (and the proxy's answers) goes straight into the
//! peer socket's receive queue, skipping the loopback TCP/IP stack.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_INGRESS, sk_action::SK_PASS},
    helpers::generated::bpf_get_netns_cookie,
    macros::sk_msg,
    programs::SkMsgContext,
};
use weir_common::{AF_INET, AF_INET6, SockAddr, SockKey};

use crate::maps::SOCKS;

#[sk_msg]
pub fn weir_sk_msg(ctx: SkMsgContext) -> u32 {
    // A failed redirect (peer not in the map yet, or gone) leaves the message
    // on the normal path: SK_PASS without a redirect target.
    let _ = redirect(&ctx);
    SK_PASS
}

fn redirect(ctx: &SkMsgContext) -> Option<()> {
    // SAFETY: the kernel hands every sk_msg program a valid sk_msg_md.
    let md = unsafe { &*ctx.msg };
    let local_port = md.local_port as u16;
    // The context keeps the remote port in network byte order, shifted up 16 bits.
    let remote_port = u16::from_be((md.remote_port >> 16) as u16);
    let (local, remote) = match md.family as u16 {
        AF_INET => (
            SockAddr {
                addr: [md.local_ip4, 0, 0, 0],
                port: local_port,
                family: AF_INET,
            },
            SockAddr {
                addr: [md.remote_ip4, 0, 0, 0],
                port: remote_port,
                family: AF_INET,
            },
        ),
        AF_INET6 => (
            SockAddr {
                addr: read4(&md.local_ip6),
                port: local_port,
                family: AF_INET6,
            },
            SockAddr {
                addr: read4(&md.remote_ip6),
                port: remote_port,
                family: AF_INET6,
            },
        ),
        _ => return None,
    };
    // SAFETY: bpf_get_netns_cookie accepts an sk_msg context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // The peer is the socket whose local end is our remote end.
    let mut peer = SockKey {
        netns_cookie,
        local: remote,
        remote: local,
    };
    SOCKS.redirect_msg(ctx, &mut peer, BPF_F_INGRESS as u64);
    Some(())
}

/// Reads an address field word by word (the verifier rejects block copies
/// out of the context).
#[inline(always)]
fn read4(field: &[u32; 4]) -> [u32; 4] {
    // SAFETY: `field` is a valid, aligned context field of four words.
    unsafe {
        [
            core::ptr::read_volatile(&field[0]),
            core::ptr::read_volatile(&field[1]),
            core::ptr::read_volatile(&field[2]),
            core::ptr::read_volatile(&field[3]),
        ]
    }
}
