//! Every map the programs share with the agent. Names and types come from
//! `weir-common`, so both sides agree on them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap, SockHash},
};
use weir_common::{
    ConnKey, InboundKey, InboundSettings, MAX_BYPASSED_CONNECTIONS, MAX_PODS,
    MAX_TRACKED_CONNECTIONS, PendingConnect, PodSettings, SockAddr, SockKey,
};

/// Enrolled pods by network namespace cookie. Written only by the agent.
#[map(name = "WEIR_PODS")]
pub static PODS: HashMap<u64, PodSettings> = HashMap::with_max_entries(MAX_PODS, 0);

/// Original destination and namespace by socket cookie, between `connect()`
/// and establishment. LRU: a connect that never completes is evicted instead
/// of leaking.
#[map(name = "WEIR_PENDING_CONNECT")]
pub static PENDING_CONNECT: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// Original destination by the client end of an established redirected connection.
/// The agent removes an entry when it accepts the connection; LRU bounds the rest.
#[map(name = "WEIR_ORIG_DST")]
pub static ORIG_DST: LruHashMap<ConnKey, SockAddr> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// Inbound settings by pod address. Written only by the agent.
#[map(name = "WEIR_INBOUND_PODS")]
pub static INBOUND_PODS: HashMap<InboundKey, InboundSettings> =
    HashMap::with_max_entries(2 * MAX_PODS, 0);

/// The proxy's inbound listener for each pod address.
#[map(name = "WEIR_INBOUND_LISTENERS")]
pub static INBOUND_LISTENERS: SockHash<InboundKey> = SockHash::with_max_entries(2 * MAX_PODS, 0);

/// Both ends of app-to-proxy loopback connections, for sk_msg. The kernel
/// removes a socket when it closes, so this never holds a dead connection.
#[map(name = "WEIR_SOCKS")]
pub static SOCKS: SockHash<SockKey> = SockHash::with_max_entries(2 * MAX_TRACKED_CONNECTIONS, 0);

/// Network namespace cookie by socket cookie, for the agent's own sockets,
/// on kernels without `SO_NETNS_COOKIE` (see netns.rs). LRU: nothing removes
/// entries but the agent's look-ups.
#[map(name = "WEIR_NETNS_BY_SOCKET")]
pub static NETNS_BY_SOCKET: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

/// Connections let through to their original destination because no proxy
/// served the pod (fail-open), by socket cookie, for the next agent. LRU: with
/// no agent running, nothing else would ever remove an entry.
#[map(name = "WEIR_BYPASSED_CONNECTS")]
pub static BYPASSED_CONNECTS: LruHashMap<u64, PendingConnect> =
    LruHashMap::with_max_entries(MAX_BYPASSED_CONNECTIONS, 0);

/// How many connections each pod's namespace let through that way. Per CPU,
/// so counting needs no atomic instruction (5.10's BPF has no fetch-add).
#[map(name = "WEIR_BYPASS_COUNTS")]
pub static BYPASS_COUNTS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(MAX_PODS, 0);

/// Node-wide switches, `SETTING_*` bits in slot 0. Written only by the agent.
#[map(name = "WEIR_SETTINGS")]
pub static SETTINGS: Array<u32> = Array::with_max_entries(1, 0);

/// Whether a `SETTING_*` switch is on.
pub fn setting(bit: u32) -> bool {
    SETTINGS.get(0).is_some_and(|bits| bits & bit != 0)
}
