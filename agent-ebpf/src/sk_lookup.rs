//! `sk_lookup`: steer inbound TCP connections to an enrolled pod's ports into the
//! proxy's inbound listener in the pod's namespace. The accepted socket's local
//! address is the original destination, so nothing needs recording.
//!
//! State is keyed by the destination address (the pod's own IP) because
//! sk_lookup programs may not call `bpf_get_netns_cookie`.

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use weir_common::{
    AF_INET, AF_INET6, INBOUND_FLAG_ALL_PORTS, INBOUND_FLAG_FAIL_CLOSED, InboundKey,
    InboundSettings, PROXY_INBOUND_SOURCE_V4, PROXY_INBOUND_SOURCE_V6,
};

use crate::maps::{INBOUND_LISTENERS, INBOUND_PODS};

const IPPROTO_TCP: u32 = 6;

#[sk_lookup]
pub fn weir_sk_lookup(ctx: SkLookupContext) -> u32 {
    // The kernel's own lookup continues when we assign nothing.
    match steer(&ctx) {
        Steer::Unserved => SK_DROP,
        Steer::Assigned | Steer::NotOurs => SK_PASS,
    }
}

enum Steer {
    /// Handed to the proxy's inbound listener.
    Assigned,
    /// Not a connection weir steers, or the proxy is down and the pod fails open.
    NotOurs,
    /// The proxy is down and the pod fails closed.
    Unserved,
}

fn steer(ctx: &SkLookupContext) -> Steer {
    match assign(ctx) {
        Ok(None) => Steer::NotOurs,
        Ok(Some(_)) => Steer::Assigned,
        Err(flags) if flags & INBOUND_FLAG_FAIL_CLOSED != 0 => Steer::Unserved,
        Err(_) => Steer::NotOurs,
    }
}

/// `Ok(None)`: not ours; `Ok(Some(()))`: assigned; `Err(flags)`: ours, but the
/// listener is gone (the agent is down), with the pod's inbound flags.
fn assign(ctx: &SkLookupContext) -> Result<Option<()>, u32> {
    // SAFETY: the kernel hands every sk_lookup program a valid bpf_sk_lookup.
    let lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP {
        return Ok(None);
    }
    let key = match lookup.family as u16 {
        AF_INET => {
            // The proxy's own connection to the application passes.
            if lookup.remote_ip4 == u32::from_ne_bytes(PROXY_INBOUND_SOURCE_V4) {
                return Ok(None);
            }
            InboundKey {
                addr: [lookup.local_ip4, 0, 0, 0],
                family: AF_INET.into(),
            }
        }
        AF_INET6 => {
            if read_ip6(&lookup.remote_ip6) == v6_words(&PROXY_INBOUND_SOURCE_V6) {
                return Ok(None);
            }
            InboundKey {
                addr: read_ip6(&lookup.local_ip6),
                family: AF_INET6.into(),
            }
        }
        _ => return Ok(None),
    };
    // Only pod addresses are in the map, so loopback traffic is never steered.
    // SAFETY: copied out at once; only the agent writes this map.
    let Some(settings) = (unsafe { INBOUND_PODS.get(&key).copied() }) else {
        return Ok(None);
    };
    if !steers_port(&settings, lookup.local_port as u16) {
        return Ok(None);
    }
    // Fails when the listener is gone: the kernel drops a closed socket from
    // the SOCKHASH, so a dead agent leaves no stale listener behind.
    match INBOUND_LISTENERS.redirect_sk_lookup(ctx, key, 0) {
        Ok(()) => Ok(Some(())),
        Err(_) => Err(settings.flags),
    }
}

fn steers_port(settings: &InboundSettings, port: u16) -> bool {
    if settings.flags & INBOUND_FLAG_ALL_PORTS != 0 {
        return true;
    }
    let mut i = 0;
    while i < settings.ports.len() {
        if settings.ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Reads an IPv6 address out of the context one 4-byte word at a time: the
/// verifier rejects the block copy the compiler would otherwise emit.
#[inline(always)]
fn read_ip6(field: &[u32; 4]) -> [u32; 4] {
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

/// Network byte order words of an IPv6 address, as in `bpf_sk_lookup`.
fn v6_words(octets: &[u8; 16]) -> [u32; 4] {
    let word =
        |i: usize| u32::from_ne_bytes([octets[i], octets[i + 1], octets[i + 2], octets[i + 3]]);
    [word(0), word(4), word(8), word(12)]
}
