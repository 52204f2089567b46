//! `sockops`: once a redirected connection is established, re-key its original
//! destination from the socket cookie (known at `connect()`) to the client's
//! address (what the proxy sees when it accepts), scoped by the network
//! namespace the connect hook recorded.
//!
//! Two variants, the agent loads the one the kernel can run:
//! - `weir_sockops` only re-keys. It calls no helper Linux 5.10 lacks in
//!   sock_ops programs, so the pod's identity stays exact there too: the
//!   namespace cookie comes from the connect hook, which can read it.
//! - `weir_sockops_accel` also feeds sk_msg acceleration: it puts both ends of
//!   each app-to-proxy connection into `WEIR_SOCKS`, the application's end here
//!   (attached to the pod's cgroup), the proxy's end on PASSIVE_ESTABLISHED
//!   (attached to the agent's own cgroup, which the proxy's accepted sockets
//!   belong to). The proxy's end has no connect record, so this variant reads
//!   the namespace with `bpf_get_netns_cookie`, which sock_ops programs get
//!   from Linux 5.15.
//!
//! Both also count the bytes of connections the connect hook let go direct
//! (`WEIR_DIRECT_SOCKETS`): they ask for state callbacks on those alone and
//! add the socket's totals to its flow when it closes.

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
    },
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sock_ops,
    programs::SockOpsContext,
};
use weir_common::{AF_INET, AF_INET6, ConnKey, FlowCounts, SETTING_SK_MSG, SockAddr, SockKey};

use crate::maps::{DIRECT_SOCKETS, ORIG_DST, PENDING_CONNECT, PODS, SOCKS, count_flow, setting};

#[sock_ops]
pub fn weir_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            if on_active_established(&ctx).is_none() {
                watch_if_direct(&ctx);
            }
        }
        BPF_SOCK_OPS_STATE_CB => on_state_change(&ctx),
        _ => {}
    }
    1
}

#[sock_ops]
pub fn weir_sockops_accel(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => match on_active_established(&ctx) {
            Some(netns_cookie) if setting(SETTING_SK_MSG) => accelerate(&ctx, netns_cookie),
            Some(_) => {}
            None => watch_if_direct(&ctx),
        },
        BPF_SOCK_OPS_STATE_CB => on_state_change(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            if setting(SETTING_SK_MSG) {
                // SAFETY: bpf_get_netns_cookie accepts a sock_ops context (5.15+,
                // which is why only this variant calls it).
                let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
                if accepted_by_egress_listener(&ctx, netns_cookie) {
                    accelerate(&ctx, netns_cookie);
                }
            }
        }
        _ => {}
    }
    1
}

/// Moves a redirected connection's original destination to its client-address
/// key; the connection's namespace cookie when it was one weir redirected.
#[inline(always)]
fn on_active_established(ctx: &SockOpsContext) -> Option<u64> {
    // SAFETY: bpf_get_socket_cookie accepts a sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once; the entry is removed below by this socket only.
    let pending = unsafe { PENDING_CONNECT.get(&cookie).copied() }?;
    let client = normalized(local_addr(ctx)?);
    let key = ConnKey {
        netns_cookie: pending.netns_cookie,
        client,
        _pad: 0,
    };
    let _ = ORIG_DST.insert(&key, &pending.orig, 0);
    let _ = PENDING_CONNECT.remove(&cookie);
    Some(pending.netns_cookie)
}

/// Asks for this socket's state changes if it is a direct connection whose
/// bytes are counted.
#[inline(always)]
fn watch_if_direct(ctx: &SockOpsContext) {
    // SAFETY: bpf_get_socket_cookie accepts a sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: only looked at; removed by this socket's close alone.
    if unsafe { DIRECT_SOCKETS.get(&cookie) }.is_some() {
        let flags = ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG;
        // Best effort: without it only the bytes go uncounted.
        let _ = ctx.set_cb_flags(flags as i32);
    }
}

/// A watched direct connection closing: its bytes go to its flow.
#[inline(always)]
fn on_state_change(ctx: &SockOpsContext) {
    if ctx.arg(1) != BPF_TCP_CLOSE {
        return;
    }
    // SAFETY: bpf_get_socket_cookie accepts a sock_ops context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: copied out at once; the entry is removed below by this socket only.
    let Some(key) = (unsafe { DIRECT_SOCKETS.get(&cookie).copied() }) else {
        return;
    };
    // SAFETY: `ctx.ops` is the valid bpf_sock_ops of this invocation; each
    // field is read with one 8-byte load, as the verifier requires.
    let (sent, received) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ops).bytes_acked),
            core::ptr::read_volatile(&(*ctx.ops).bytes_received),
        )
    };
    count_flow(
        &key,
        &FlowCounts {
            bytes_sent: sent,
            bytes_received: received,
            closed: 1,
            ..FlowCounts::default()
        },
    );
    let _ = DIRECT_SOCKETS.remove(&cookie);
}

/// Whether this accepted socket is the proxy's end of a connection to an
/// enrolled pod's egress listener.
fn accepted_by_egress_listener(ctx: &SockOpsContext, netns_cookie: u64) -> bool {
    // SAFETY: copied out at once; only the agent writes this map.
    let Some(pod) = (unsafe { PODS.get(&netns_cookie).copied() }) else {
        return false;
    };
    let Some(local) = local_addr(ctx) else {
        return false;
    };
    match local.family {
        AF_INET => local.port == pod.egress_port_v4 && u32::from_be(local.addr[0]) >> 24 == 127,
        AF_INET6 => local.port == pod.egress_port_v6,
        _ => false,
    }
}

/// Adds this socket to `WEIR_SOCKS` under the key sk_msg computes for it.
fn accelerate(ctx: &SockOpsContext, netns_cookie: u64) {
    let (Some(local), Some(remote)) = (local_addr(ctx), remote_addr(ctx)) else {
        return;
    };
    let mut key = SockKey {
        netns_cookie,
        local,
        remote,
    };
    // SAFETY: `ctx.ops` is the valid bpf_sock_ops of this invocation.
    let ops = unsafe { &mut *ctx.ops };
    // Best effort: a socket left out just takes the normal path.
    let _ = SOCKS.update(&mut key, ops, BPF_ANY as u64);
}

/// The socket's own address, in its own family.
fn local_addr(ctx: &SockOpsContext) -> Option<SockAddr> {
    // sockops gives local_port in host byte order.
    let port = ctx.local_port() as u16;
    match ctx.family() as u16 {
        AF_INET => Some(SockAddr {
            addr: [ctx.local_ip4(), 0, 0, 0],
            port,
            family: AF_INET,
        }),
        AF_INET6 => Some(SockAddr {
            // SAFETY: `ctx.ops` is the valid bpf_sock_ops of this invocation.
            addr: read4(unsafe { &(*ctx.ops).local_ip6 }),
            port,
            family: AF_INET6,
        }),
        _ => None,
    }
}

/// The peer's address, in the socket's family.
fn remote_addr(ctx: &SockOpsContext) -> Option<SockAddr> {
    // sockops gives remote_port in network byte order, shifted up 16 bits.
    let port = u16::from_be((ctx.remote_port() >> 16) as u16);
    match ctx.family() as u16 {
        AF_INET => Some(SockAddr {
            addr: [ctx.remote_ip4(), 0, 0, 0],
            port,
            family: AF_INET,
        }),
        AF_INET6 => Some(SockAddr {
            // SAFETY: `ctx.ops` is the valid bpf_sock_ops of this invocation.
            addr: read4(unsafe { &(*ctx.ops).remote_ip6 }),
            port,
            family: AF_INET6,
        }),
        _ => None,
    }
}

/// A v4-mapped IPv6 address as IPv4, the way the proxy's IPv4 listener sees it.
fn normalized(addr: SockAddr) -> SockAddr {
    let ip = addr.addr;
    if addr.family == AF_INET6 && ip[0] == 0 && ip[1] == 0 && ip[2] == 0xffffu32.to_be() {
        SockAddr {
            addr: [ip[3], 0, 0, 0],
            port: addr.port,
            family: AF_INET,
        }
    } else {
        addr
    }
}

/// Reads an address field word by word, each a constant offset from the
/// context (the verifier rejects loads through a derived context pointer).
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
