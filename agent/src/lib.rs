//! weir: one shared L7 proxy per node, fed by eBPF instead of iptables.
//!
//! The module tree follows the life of a connection; see `docs/architecture.md`.

pub mod addr;
pub mod cli;
pub mod config;
pub mod convert;
pub mod datapath;
pub mod enroll;
/// Stable entry points for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod inpod;
pub mod intercept;
pub mod logging;
pub mod mesh;
pub mod netns;
pub mod node;
pub mod pods;
pub mod privilege;
pub mod proxy;
pub mod run;
pub mod socket;
pub mod tunnel;
