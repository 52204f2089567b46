//! Random: uniform over healthy endpoints.

use std::sync::Arc;

use crate::proxy::cluster::endpoint::Endpoint;

pub fn pick(eps: &[Arc<Endpoint>], healthy: impl Fn(&Endpoint) -> bool) -> Option<&Arc<Endpoint>> {
    super::scan_from(eps, fastrand::usize(..eps.len()), &healthy)
}
