//! Connections that went around the proxy while no agent served a pod. A
//! fail-open pod's `connect()` finds no listener while the agent is down
//! (a crash, an OOM kill, a stop without a successor) and goes straight to
//! its destination; such a connection stays outside the mesh for its whole
//! life. The connect hooks count and record them (`datapath::bypass`); once
//! this agent serves the pod again it counts them per pod and, where the
//! pod's policy says so, resets those still open so the application
//! reconnects through weir. A rolling update hands the listeners over
//! without a gap, so it leaves nothing to settle here.

use std::collections::HashSet;

use super::{EnrolledPod, Enroller};
use crate::datapath::Bypassed;
use crate::inpod::{ResetOutcome, reset_connections};
use crate::pods::BypassedConnections;

impl Enroller {
    /// Counts, and resets where the policy says so, what the pods `uids`
    /// (enrolled just now, their listeners in the maps) did while no agent
    /// served them. Runs where enrolment runs: resetting needs CAP_NET_ADMIN.
    pub(super) fn settle_bypassed(&mut self, uids: &[String]) {
        let cookies: HashSet<u64> = uids
            .iter()
            .filter_map(|uid| self.pods.get(uid))
            .map(EnrolledPod::netns_cookie)
            .collect();
        if cookies.is_empty() {
            return;
        }
        let taken = match self.datapath.take_bypassed(&cookies) {
            Ok(taken) => taken,
            Err(e) => {
                log::warn!("reading the connections that bypassed the proxy: {e}");
                return;
            }
        };
        let allows_any = self.intercept.allows_any_destination();
        for pod in uids.iter().filter_map(|uid| self.pods.get(uid)) {
            if let Some(bypassed) = taken.get(&pod.netns_cookie()) {
                let reset = settle(pod, bypassed, allows_any);
                self.intercept
                    .bypassed(pod.context(), bypassed.connections, reset as u64);
            }
        }
    }
}

/// Resets `bypassed`'s connections that are still open if the pod's policy
/// says so; returns how many were reset.
fn settle(pod: &EnrolledPod, bypassed: &Bypassed, allows_any: bool) -> usize {
    let label = pod.label();
    let count = bypassed.connections;
    if !resets(pod.policy().bypassed, allows_any) {
        log::warn!(
            "pod {label}: {count} connection(s) went direct, outside the mesh, while no agent \
             served it; left open (weir.dev/bypassed-connections, or ALLOW_ANY)"
        );
        return 0;
    }
    let cookies: HashSet<u64> = bypassed.sockets.keys().copied().collect();
    match reset_connections(pod.netns(), cookies) {
        Ok(ResetOutcome {
            reset,
            not_supported,
        }) => {
            log::warn!(
                "pod {label}: {count} connection(s) went direct, outside the mesh, while no agent \
                 served it; reset the {reset} still open"
            );
            if not_supported > 0 {
                log::warn!(
                    "pod {label}: {not_supported} bypassed connection(s) left open: this kernel \
                     cannot destroy sockets (CONFIG_INET_DIAG_DESTROY)"
                );
            }
            for (cookie, dst) in &bypassed.sockets {
                log::debug!("pod {label}: bypassed connection {cookie} to {dst:?}");
            }
            reset
        }
        Err(e) => {
            log::warn!(
                "pod {label}: {count} connection(s) went direct while no agent served it; \
                 resetting them failed: {e}"
            );
            0
        }
    }
}

/// Whether bypassed connections are reset: by the annotation, else by the
/// node's traffic policy (under REGISTRY_ONLY they may reach destinations
/// the mesh forbids).
fn resets(policy: BypassedConnections, allows_any: bool) -> bool {
    match policy {
        BypassedConnections::Reset => true,
        BypassedConnections::Keep => false,
        BypassedConnections::ByTrafficPolicy => !allows_any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_wins_over_the_traffic_policy() {
        for allows_any in [true, false] {
            assert!(resets(BypassedConnections::Reset, allows_any));
            assert!(!resets(BypassedConnections::Keep, allows_any));
        }
        assert!(resets(BypassedConnections::ByTrafficPolicy, false));
        assert!(!resets(BypassedConnections::ByTrafficPolicy, true));
    }
}
