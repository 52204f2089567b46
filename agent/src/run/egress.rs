//! Mirrors each config applied into the connect hooks' destination table
//! (`enroll::egress`), so what the kernel lets through, redirects or
//! refuses follows the config as the proxy does.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::enroll::{EgressInputs, Enroller, system_dns_servers};
use crate::intercept::MeshOptions;
use crate::proxy::runtime::Runtime;

/// How often the kernel's counts of direct and refused connections are
/// exported: the metrics lag the traffic by at most this.
pub const FLOW_INTERVAL: Duration = Duration::from_secs(2);

pub struct EgressSync {
    runtime: Arc<Runtime>,
    applied: tokio::sync::watch::Receiver<u64>,
    mesh_networks: Vec<(IpAddr, u8)>,
    system_dns: Vec<IpAddr>,
}

impl EgressSync {
    pub fn new(runtime: &Arc<Runtime>, mesh: Option<&MeshOptions>) -> Self {
        let mesh_networks = mesh
            .map(|m| m.pod_cidrs.iter().map(|c| c.parts()).collect())
            .unwrap_or_default();
        Self {
            applied: runtime.config_applied(),
            runtime: Arc::clone(runtime),
            mesh_networks,
            system_dns: system_dns_servers(),
        }
    }

    /// Resolves when another config was applied (false: no more will be).
    pub async fn config_applied(&mut self) -> bool {
        self.applied.changed().await.is_ok()
    }

    /// Writes the current config's table and switches. A failure leaves the
    /// previous table in place and is logged: the proxy still applies the
    /// policy to what reaches it.
    pub fn apply(&mut self, enroller: &mut Enroller) {
        self.applied.mark_unchanged();
        let Some(config) = self.runtime.effective.load_full().as_ref().clone() else {
            return;
        };
        let inputs = EgressInputs {
            config: &config,
            mesh_networks: &self.mesh_networks,
            system_dns: &self.system_dns,
        };
        match enroller.apply_egress(&inputs) {
            Ok(changed) if changed != Default::default() => log::info!(
                "connect() destinations: {} added or changed, {} removed (outbound_traffic_policy {:?}, unclaimed {:?})",
                changed.added,
                changed.removed,
                config.outbound_traffic_policy,
                config.egress.unclaimed
            ),
            Ok(_) => {}
            Err(e) => log::error!("updating the connect() destinations from the config: {e}"),
        }
    }
}
