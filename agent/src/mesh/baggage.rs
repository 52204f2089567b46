//! What a tunnel stream says about its source beyond its certificate: the
//! source workload's name, in a W3C `baggage` header as ztunnel sends it
//! (`k8s.namespace.name=...,k8s.workload.name=...`). The certificate
//! names a namespace and a service account; Istio's metrics name the
//! workload (`source_workload`), which many service accounts may share
//! and the certificate cannot say. So the receiver believes the workload
//! only for the namespace the certificate proved, only as a Kubernetes
//! name, and only as a metric label: never for authorization.

use hyper::header::HeaderValue;

use crate::config::{check_namespace, check_service_account};

const NAMESPACE_KEY: &str = "k8s.namespace.name";
const WORKLOAD_KEY: &str = "k8s.workload.name";

/// The header value for a source of `namespace` running as `workload`;
/// `None` when either is not a Kubernetes name (then nothing is said).
pub fn encode(namespace: &str, workload: &str) -> Option<HeaderValue> {
    check_namespace(namespace).ok()?;
    check_service_account(workload).ok()?;
    HeaderValue::from_str(&format!(
        "{NAMESPACE_KEY}={namespace},{WORKLOAD_KEY}={workload}"
    ))
    .ok()
}

/// The workload `baggage` names, when it names it in `proven_namespace`
/// (the peer certificate's) and as a Kubernetes name; else `None`.
pub fn workload_in<'b>(baggage: &'b str, proven_namespace: &str) -> Option<&'b str> {
    let mut namespace = None;
    let mut workload = None;
    for member in baggage.split(',') {
        // W3C baggage: `key=value;properties`; properties are not used.
        let pair = member.split(';').next().unwrap_or_default();
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        match key.trim() {
            NAMESPACE_KEY => namespace = Some(value.trim()),
            WORKLOAD_KEY => workload = Some(value.trim()),
            _ => {}
        }
    }
    if namespace != Some(proven_namespace) {
        return None;
    }
    workload.filter(|w| check_service_account(w).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_side_says_the_other_reads() {
        let header = encode("shop", "frontend").unwrap();
        let text = header.to_str().unwrap();
        assert_eq!(text, "k8s.namespace.name=shop,k8s.workload.name=frontend");
        assert_eq!(workload_in(text, "shop"), Some("frontend"));
    }

    #[test]
    fn a_workload_is_believed_only_in_the_proven_namespace() {
        let other = "k8s.namespace.name=payments,k8s.workload.name=ledger";
        assert_eq!(workload_in(other, "shop"), None);
        // Without a namespace it is nobody's.
        assert_eq!(workload_in("k8s.workload.name=ledger", "shop"), None);
    }

    #[test]
    fn only_kubernetes_names_become_labels() {
        for bad in [
            "Frontend",
            "front end",
            "a\u{7f}",
            "",
            "-x",
            "x".repeat(254).as_str(),
        ] {
            let header = format!("k8s.namespace.name=shop,k8s.workload.name={bad}");
            assert_eq!(workload_in(&header, "shop"), None, "{bad:?}");
        }
        assert_eq!(encode("shop", "Frontend"), None);
        assert_eq!(encode("Shop", "frontend"), None);
    }

    #[test]
    fn other_members_and_properties_are_ignored() {
        let header =
            "k8s.cluster.name=c1, k8s.namespace.name=shop;p=1, k8s.workload.name=frontend;q";
        assert_eq!(workload_in(header, "shop"), Some("frontend"));
    }
}
