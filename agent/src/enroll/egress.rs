//! What the connect hooks decide alone (`agent-ebpf/src/connect.rs`): the
//! destinations they send to the proxy or let go direct, the node's egress
//! switches, both kept in step with the config, and the counts of what they
//! let through or refused, exported under the proxied traffic's labels.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::Enroller;
use crate::config::{OutboundTrafficPolicy, ProxyConfig, UnclaimedTraffic};
use crate::datapath::{
    DatapathError, Destination, DestinationsChanged, EgressPolicy, Flow, Verdict,
};
use crate::proxy::tls::failure::LogLimit;

/// The port the cluster's DNS answers on.
const DNS_PORT: u16 = 53;

/// What the config says about destinations, with what it leaves to the node.
pub struct EgressInputs<'a> {
    pub config: &'a ProxyConfig,
    /// The mesh's pod networks (`--mesh-pod-cidrs`): the proxy tunnels to them.
    pub mesh_networks: &'a [(IpAddr, u8)],
    /// The cluster's DNS servers when the config names none.
    pub system_dns: &'a [IpAddr],
}

/// The destination table and switches `inputs` ask for.
pub fn egress_plan(inputs: &EgressInputs<'_>) -> (Vec<(Destination, Verdict)>, EgressPolicy) {
    let cfg = inputs.config;
    let registry_only = cfg.outbound_traffic_policy == OutboundTrafficPolicy::RegistryOnly;
    let mut table = Vec::new();
    // Direct first: a listener claiming the same destination wins (later
    // duplicates replace earlier ones).
    if registry_only {
        for allow in &cfg.egress.allow {
            let ports: &[u16] = if allow.ports.is_empty() {
                &[0]
            } else {
                &allow.ports
            };
            for port in ports {
                let net = Destination {
                    net: allow.cidr.ip,
                    prefix: allow.cidr.prefix,
                    port: *port,
                };
                table.push((net, Verdict::Direct));
            }
        }
        let dns = cfg
            .egress
            .dns_servers
            .as_deref()
            .unwrap_or(inputs.system_dns);
        for ip in dns.iter().filter(|ip| !ip.is_loopback()) {
            table.push((host(*ip, DNS_PORT), Verdict::Direct));
        }
    }
    for (net, prefix) in inputs.mesh_networks {
        let net = Destination {
            net: *net,
            prefix: *prefix,
            port: 0,
        };
        table.push((net, Verdict::Proxy));
    }
    for l in cfg.listeners.iter().filter(|l| !l.bind_to_port) {
        let ip = l.address.ip();
        let claimed = if ip.is_unspecified() {
            // Every address of the family, on the listener's port.
            Destination {
                net: ip,
                prefix: 0,
                port: l.address.port(),
            }
        } else {
            host(ip, l.address.port())
        };
        table.push((claimed, Verdict::Proxy));
    }
    let policy = EgressPolicy {
        registry_only,
        unclaimed_direct: !registry_only && cfg.egress.unclaimed == UnclaimedTraffic::Direct,
    };
    (table, policy)
}

fn host(ip: IpAddr, port: u16) -> Destination {
    Destination {
        net: ip,
        prefix: if ip.is_ipv4() { 32 } else { 128 },
        port,
    }
}

/// The nameservers of `/etc/resolv.conf` (none if it cannot be read).
pub fn system_dns_servers() -> Vec<IpAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    nameservers(&text)
}

fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Collections a flow may stay unchanged before its kernel entry is
/// dropped (at [`crate::run`]'s 2 s interval, a minute): reading the table
/// costs a system call per entry, so only flows still moving are kept.
const IDLE_COLLECTIONS: u32 = 30;

/// Totals seen at the last collection, to export only what grew.
#[derive(Default)]
pub(super) struct FlowTotals {
    /// The totals last seen and how many collections they stayed the same.
    seen: HashMap<(u64, SocketAddr, bool, bool), (weir_common::FlowCounts, u32)>,
    started: bool,
    refusals_logged: LogLimit,
}

impl Enroller {
    /// Writes the table first, then the switches: turning REGISTRY_ONLY on
    /// never finds a claimed destination missing.
    pub fn apply_egress(
        &mut self,
        inputs: &EgressInputs<'_>,
    ) -> Result<DestinationsChanged, DatapathError> {
        let (table, policy) = egress_plan(inputs);
        let changed = self.datapath.set_destinations(&table)?;
        self.datapath.set_egress_policy(policy)?;
        Ok(changed)
    }

    /// Exports what the enrolled pods' direct and refused connections did
    /// since the last call. The first call only takes the totals as they
    /// are: pinned counts from before this agent were exported by the last.
    pub fn collect_flows(&mut self) -> Result<(), DatapathError> {
        let flows = self.datapath.flows()?;
        let (grown, idle) = self.flow_totals.advance(flows);
        self.datapath.forget_flows(&idle);
        let by_cookie: HashMap<u64, &super::EnrolledPod> =
            self.pods.values().map(|p| (p.netns_cookie(), p)).collect();
        let mut refusals = Vec::new();
        for delta in grown {
            let Some(pod) = by_cookie.get(&delta.netns_cookie) else {
                continue;
            };
            if delta.refused {
                refusals.push((pod.label(), delta.dst, delta.udp, delta.counts.connections));
            }
            self.intercept.direct(pod.context(), &delta);
        }
        if !refusals.is_empty()
            && let Some(skipped) = self.flow_totals.refusals_logged.admit()
        {
            log_refusals(&refusals, skipped);
        }
        Ok(())
    }
}

impl FlowTotals {
    /// Takes the kernel's totals: the flows that grew since the last call,
    /// with their growth as counts (none on the first call), and the keys
    /// of those unchanged for [`IDLE_COLLECTIONS`], which are forgotten.
    fn advance(&mut self, flows: Vec<Flow>) -> (Vec<Flow>, Vec<weir_common::FlowKey>) {
        let mut next = HashMap::with_capacity(flows.len());
        let (mut out, mut idle) = (Vec::new(), Vec::new());
        for flow in flows {
            let key = (flow.netns_cookie, flow.dst, flow.udp, flow.refused);
            let (before, unchanged) = self.seen.get(&key).copied().unwrap_or_default();
            let growth = grown(&before, &flow.counts);
            let unchanged = if growth.is_some() { 0 } else { unchanged + 1 };
            if unchanged >= IDLE_COLLECTIONS {
                idle.push(flow.key);
                continue;
            }
            next.insert(key, (flow.counts, unchanged));
            if let Some(growth) = growth.filter(|_| self.started) {
                out.push(Flow {
                    counts: growth,
                    ..flow
                });
            }
        }
        self.seen = next;
        self.started = true;
        (out, idle)
    }
}

/// What grew from `before` to `now`; `None` if nothing did. A count below
/// its last value is a new entry (the old one was evicted): all of it is new.
fn grown(
    before: &weir_common::FlowCounts,
    now: &weir_common::FlowCounts,
) -> Option<weir_common::FlowCounts> {
    let base = if now.connections < before.connections || now.closed < before.closed {
        weir_common::FlowCounts::default()
    } else {
        *before
    };
    let growth = weir_common::FlowCounts {
        connections: now.connections - base.connections,
        bytes_sent: now.bytes_sent.saturating_sub(base.bytes_sent),
        bytes_received: now.bytes_received.saturating_sub(base.bytes_received),
        closed: now.closed - base.closed,
    };
    (growth != weir_common::FlowCounts::default()).then_some(growth)
}

/// One line for many refusals: the first few, and how many more.
fn log_refusals(refusals: &[(String, SocketAddr, bool, u64)], skipped_lines: u64) {
    const SHOWN: usize = 5;
    let shown: Vec<String> = refusals
        .iter()
        .take(SHOWN)
        .map(|(pod, dst, udp, n)| {
            let proto = if *udp { "udp" } else { "tcp" };
            format!("{pod} -> {dst}/{proto} x{n}")
        })
        .collect();
    let more = refusals.len().saturating_sub(SHOWN);
    log::warn!(
        "refused at connect()/sendto() by outbound_traffic_policy REGISTRY_ONLY (EPERM): {}{}{}",
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more pod/destination pair(s)")
        } else {
            String::new()
        },
        if skipped_lines > 0 {
            format!(" ({skipped_lines} such line(s) left out before this one)")
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
