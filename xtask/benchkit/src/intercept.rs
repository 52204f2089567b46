//! The scenarios of `cargo xtask bench intercept`, named the same on both
//! sides: the benchmark binary that runs them on a simulated node and xtask,
//! which reports them.

use crate::sample::Subject;

/// How the client pod's requests reach the backend pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Straight to the backend pod's address: no proxy.
    Direct,
    /// To a service address that weir's eBPF programs steer into `weir run`
    /// (`--sk-msg off`, the default).
    Ebpf,
    /// The same with `weir run --sk-msg on`: sockops + sk_msg splice the
    /// app-to-proxy hop.
    EbpfSkMsg,
    /// To the same service address, sent by an iptables REDIRECT rule in the
    /// client pod's namespace to a `weir proxy` in that namespace (a sidecar).
    Iptables,
    /// As [`Scenario::Ebpf`] with the backend pod outside the mesh, so weir
    /// connects to it (no same-node delivery): from inside the client pod's
    /// network namespace, pooled per pod (`--pod-egress on`, the default).
    EbpfPodEgress,
    /// The same with `--pod-egress off`: from the agent's namespace, pools
    /// shared by pods (weir before issue 14).
    EbpfNodeEgress,
    /// The client pod enrolled with `weir.dev/unclaimed-traffic: "direct"`,
    /// calling the backend's own address, which no listener claims: the
    /// connect hook lets it go straight out, counted (no proxy hop).
    EbpfUnclaimedDirect,
}

impl Scenario {
    /// The full benchmark's scenarios (the docs' table).
    pub const ALL: [Scenario; 4] = [
        Scenario::Direct,
        Scenario::Ebpf,
        Scenario::EbpfSkMsg,
        Scenario::Iptables,
    ];

    /// What opening an enrolled pod's upstream connections inside its
    /// namespace costs: run when asked (`--scenarios`).
    pub const OUTBOUND: [Scenario; 2] = [Scenario::EbpfPodEgress, Scenario::EbpfNodeEgress];

    /// What a flow the kernel lets go direct costs against no weir at all:
    /// run when asked (`--scenarios direct,weir-ebpf-unclaimed-direct`).
    pub const UNCLAIMED: [Scenario; 1] = [Scenario::EbpfUnclaimedDirect];

    fn every() -> impl Iterator<Item = Scenario> {
        Scenario::ALL
            .into_iter()
            .chain(Scenario::OUTBOUND)
            .chain(Scenario::UNCLAIMED)
    }

    /// Parses a comma-separated flag value.
    pub fn parse(name: &str) -> Result<Scenario, String> {
        Scenario::from_name(name.trim()).ok_or_else(|| {
            let names: Vec<&str> = Scenario::every().map(|s| s.name()).collect();
            format!(
                "unknown scenario {name:?}: expected one of {}",
                names.join(", ")
            )
        })
    }

    /// Whether requests pass through weir (and its CPU is measured).
    pub fn through_weir(self) -> bool {
        !matches!(self, Scenario::Direct | Scenario::EbpfUnclaimedDirect)
    }

    /// A `weir run` on the node serves it (eBPF interception).
    pub fn by_agent(self) -> bool {
        matches!(
            self,
            Scenario::Ebpf
                | Scenario::EbpfSkMsg
                | Scenario::EbpfPodEgress
                | Scenario::EbpfNodeEgress
                | Scenario::EbpfUnclaimedDirect
        )
    }

    /// The backend pod is enrolled too (so weir delivers to it on the same node).
    pub fn backend_enrolled(self) -> bool {
        matches!(self, Scenario::Ebpf | Scenario::EbpfSkMsg)
    }
}

impl Subject for Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Ebpf => "weir-ebpf",
            Scenario::EbpfSkMsg => "weir-ebpf-sk-msg",
            Scenario::Iptables => "weir-iptables",
            Scenario::EbpfPodEgress => "weir-ebpf-pod-egress",
            Scenario::EbpfNodeEgress => "weir-ebpf-node-egress",
            Scenario::EbpfUnclaimedDirect => "weir-ebpf-unclaimed-direct",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Scenario::every().find(|s| s.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scenario::every() {
            assert_eq!(Scenario::parse(s.name()), Ok(s));
        }
        assert!(
            Scenario::parse("sidecar")
                .unwrap_err()
                .contains("direct, weir-ebpf")
        );
    }
}
