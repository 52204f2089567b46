//! Every map the programs share with the agent. Names and types come from
//! `weir-common`, so both sides agree on them.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuHashMap, SockHash,
        lpm_trie::Key,
    },
};
use weir_common::{
    ConnKey, DestPrefix, FlowCounts, FlowKey, InboundKey, InboundSettings,
    MAX_BYPASSED_CONNECTIONS, MAX_DESTINATIONS, MAX_FLOWS, MAX_PODS, MAX_TRACKED_CONNECTIONS,
    MAX_UDP_PEERS, PendingConnect, PodSettings, SockAddr, SockKey, UdpPeerKey,
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

/// Destinations the connect hooks know, by longest prefix. Written only by
/// the agent.
#[map(name = "WEIR_DESTINATIONS")]
pub static DESTINATIONS: LpmTrie<DestPrefix, u32> = LpmTrie::with_max_entries(MAX_DESTINATIONS, 0);

/// Direct and refused connections per pod and destination. Per CPU and
/// LRU: counting needs no atomic instruction, and the table never fills.
#[map(name = "WEIR_FLOWS")]
pub static FLOWS: LruPerCpuHashMap<FlowKey, FlowCounts> =
    LruPerCpuHashMap::with_max_entries(MAX_FLOWS, 0);

/// Open direct connections' flows by socket cookie, until sockops counts
/// their bytes at close. LRU: a socket that never closes is evicted.
#[map(name = "WEIR_DIRECT_SOCKETS")]
pub static DIRECT_SOCKETS: LruHashMap<u64, FlowKey> =
    LruHashMap::with_max_entries(MAX_TRACKED_CONNECTIONS, 0);

/// Peers enrolled pods received UDP from (the recvmsg hooks), which they
/// may answer under REGISTRY_ONLY. LRU: refreshed by every receive.
#[map(name = "WEIR_UDP_PEERS")]
pub static UDP_PEERS: LruHashMap<UdpPeerKey, u32> = LruHashMap::with_max_entries(MAX_UDP_PEERS, 0);

fn udp_peer(netns_cookie: u64, peer: SockAddr) -> UdpPeerKey {
    UdpPeerKey {
        netns_cookie,
        peer,
        _pad: 0,
    }
}

/// The pod in `netns_cookie` received UDP from `peer`: it may answer.
pub fn hear_from(netns_cookie: u64, peer: SockAddr) {
    // Best effort: a peer not recorded only cannot be answered.
    let _ = UDP_PEERS.insert(&udp_peer(netns_cookie, peer), &1, 0);
}

/// Whether the pod in `netns_cookie` received UDP from `peer`.
pub fn heard_from(netns_cookie: u64, peer: &SockAddr) -> bool {
    // SAFETY: only presence is read.
    unsafe { UDP_PEERS.get(&udp_peer(netns_cookie, *peer)).is_some() }
}

/// The `DEST_*` verdict for `dst`: its port's entry first, then any port's.
pub fn destination(dst: &SockAddr) -> Option<u32> {
    let mut key = Key::new(
        DEST_BITS_ALL,
        DestPrefix {
            port: dst.port.to_be(),
            family: dst.family,
            addr: dst.addr,
        },
    );
    if let Some(v) = DESTINATIONS.get(&key) {
        return Some(*v);
    }
    key.data.port = 0;
    DESTINATIONS.get(&key).copied()
}

/// A lookup key covers the port, the family and the longest address.
const DEST_BITS_ALL: u32 = weir_common::DEST_PREFIX_HEAD_BITS + 128;

/// Adds `add` to this CPU's counts of `key`.
pub fn count_flow(key: &FlowKey, add: &FlowCounts) {
    match FLOWS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of the entry; no other CPU writes it.
        Some(counts) => unsafe {
            (*counts).connections += add.connections;
            (*counts).bytes_sent += add.bytes_sent;
            (*counts).bytes_received += add.bytes_received;
            (*counts).closed += add.closed;
        },
        None => {
            let _ = FLOWS.insert(key, add, 0);
        }
    }
}

/// Node-wide switches, `SETTING_*` bits in slot 0. Written only by the agent.
#[map(name = "WEIR_SETTINGS")]
pub static SETTINGS: Array<u32> = Array::with_max_entries(1, 0);

/// Whether a `SETTING_*` switch is on.
pub fn setting(bit: u32) -> bool {
    SETTINGS.get(0).is_some_and(|bits| bits & bit != 0)
}
