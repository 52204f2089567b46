//! The per-request source identity weir hands from its outbound side to
//! its inbound side (pooled HTTP connections are shared by pods, so the
//! source travels with each request). The header carries no name: it is
//! `<secret>.<n>`, where the secret is drawn at random when the process
//! starts and `n` indexes the pods whose outbound requests weir forwarded.
//! So a value is only believed if weir itself made it in this process, it
//! always names a pod enrolled on this node, it tells nothing to a
//! destination outside the mesh, and the number of identities it can name
//! is bounded by [`MAX_SOURCES`].
//!
//! One table per interceptor: its outbound and inbound sides share it.

use std::collections::HashMap;
use std::sync::RwLock;

use http::HeaderValue;

use super::PodIdentity;

/// Distinct source pods given a token over the interceptor's life; a pod
/// beyond it sends no token and is counted as `unknown` inbound.
pub const MAX_SOURCES: usize = 65_536;

pub(super) struct Sources(RwLock<Table>);

struct Table {
    secret: String,
    ids: HashMap<PodIdentity, HeaderValue>,
    pods: Vec<PodIdentity>,
}

impl Default for Sources {
    fn default() -> Self {
        Self(RwLock::new(Table {
            secret: uuid::Uuid::new_v4().simple().to_string(),
            ids: HashMap::new(),
            pods: Vec::new(),
        }))
    }
}

impl Sources {
    /// The header value that names `pod` (an enrolled pod on this node).
    pub(super) fn token(&self, pod: &PodIdentity) -> Option<HeaderValue> {
        if let Ok(t) = self.0.read()
            && let Some(v) = t.ids.get(pod)
        {
            return Some(v.clone());
        }
        let mut t = self.0.write().ok()?;
        if let Some(v) = t.ids.get(pod) {
            return Some(v.clone());
        }
        if t.pods.len() >= MAX_SOURCES {
            return None;
        }
        let v = HeaderValue::try_from(format!("{}.{}", t.secret, t.pods.len())).ok()?;
        t.pods.push(pod.clone());
        t.ids.insert(pod.clone(), v.clone());
        Some(v)
    }

    /// The pod a token names, if this table made it.
    pub(super) fn pod_of(&self, value: &HeaderValue) -> Option<PodIdentity> {
        let (secret, n) = value.to_str().ok()?.split_once('.')?;
        let n: usize = n.parse().ok()?;
        let t = self.0.read().ok()?;
        if secret != t.secret {
            return None;
        }
        t.pods.get(n).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> PodIdentity {
        PodIdentity {
            namespace: "ns".into(),
            name: name.into(),
            service_account: "default".into(),
            workload: "w".into(),
        }
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let sources = Sources::default();
        let a = sources.token(&pod("source-test-a")).unwrap();
        assert_eq!(sources.token(&pod("source-test-a")), Some(a.clone()));
        assert_eq!(sources.pod_of(&a), Some(pod("source-test-a")));
        // Another interceptor's table (another process) does not read it.
        assert_eq!(Sources::default().pod_of(&a), None);
        let (_, n) = a.to_str().unwrap().split_once('.').unwrap();
        for forged in [
            "ns/source-test-a".to_owned(),
            format!("00000000000000000000000000000000.{n}"),
            "x".to_owned(),
        ] {
            assert_eq!(
                sources.pod_of(&HeaderValue::try_from(forged).unwrap()),
                None
            );
        }
    }
}
