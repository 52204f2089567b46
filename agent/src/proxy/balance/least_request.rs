//! Least request: Envoy's power of two choices over healthy endpoints,
//! comparing in-flight request counts.

use std::sync::Arc;

use crate::proxy::cluster::endpoint::Endpoint;

pub fn pick(eps: &[Arc<Endpoint>], healthy: impl Fn(&Endpoint) -> bool) -> Option<&Arc<Endpoint>> {
    let a = super::scan_from(eps, fastrand::usize(..eps.len()), &healthy)?;
    let Some(b) = super::scan_from(eps, fastrand::usize(..eps.len()), &healthy) else {
        return Some(a);
    };
    Some(if b.active() < a.active() { b } else { a })
}
