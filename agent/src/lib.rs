//! weir: one shared L7 proxy per node, fed by eBPF instead of iptables.
//!
//! The module tree follows the life of a connection; see `docs/architecture.md`.

pub mod config;
pub mod proxy;
