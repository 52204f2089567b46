//! `WEIR_FLOWS`: the connections the connect hooks let go direct or
//! refused, counted per source pod and destination in the kernel. The
//! agent reads the running totals and exports what grew since it last
//! looked (`enroll::egress`).

use std::net::SocketAddr;

use aya::maps::{MapData, PerCpuHashMap};
use weir_common::{FLOW_REFUSED, FlowCounts, FlowKey, MAP_FLOWS};

use super::{Datapath, DatapathError, orig_dst};

/// Anything else the hooks count is UDP (or UDP-Lite, which shares its socket layer).
const IPPROTO_TCP: u16 = 6;

/// One (pod, destination, protocol, verdict)'s totals since the entry was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub netns_cookie: u64,
    pub dst: SocketAddr,
    pub udp: bool,
    /// The `connect()` failed with EPERM (REGISTRY_ONLY); else it went direct.
    pub refused: bool,
    pub counts: FlowCounts,
    /// The kernel's key, to forget the entry ([`Datapath::forget_flows`]).
    pub key: FlowKey,
}

impl Datapath {
    /// Every flow the kernel holds, its per-CPU counts summed. Bounded by
    /// `MAX_FLOWS` entries; the least recently used are evicted in the
    /// kernel, so an entry can vanish between two reads.
    pub fn flows(&self) -> Result<Vec<Flow>, DatapathError> {
        let flows = self
            .flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for entry in flows.iter() {
            let (key, per_cpu) = entry.map_err(|source| DatapathError::Map {
                name: MAP_FLOWS,
                source,
            })?;
            let Some(dst) = orig_dst::from_sock_addr(&key.dst) else {
                continue;
            };
            let mut counts = FlowCounts::default();
            for c in per_cpu.iter() {
                counts.connections += c.connections;
                counts.bytes_sent += c.bytes_sent;
                counts.bytes_received += c.bytes_received;
                counts.closed += c.closed;
            }
            out.push(Flow {
                netns_cookie: key.netns_cookie,
                dst,
                udp: key.protocol != IPPROTO_TCP,
                refused: key.verdict == FLOW_REFUSED,
                counts,
                key,
            });
        }
        Ok(out)
    }

    /// Removes these flows' entries: reading costs a system call per entry,
    /// so entries that stopped changing are dropped once exported. A
    /// connection counted between the last read and the removal is lost;
    /// the next one makes a new entry, counted from zero.
    pub fn forget_flows(&self, keys: &[FlowKey]) {
        let mut flows = self
            .flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            // Gone already (evicted) is as good.
            let _ = flows.remove(key);
        }
    }
}

pub(super) type FlowsMap = PerCpuHashMap<MapData, FlowKey, FlowCounts>;
