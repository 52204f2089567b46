//! Namespace-wide defaults: a namespace's `weir.dev/*` annotations (or
//! labels: `kubectl label namespace shop weir.dev/enroll=true` is how Istio
//! users enrol a namespace) apply to every pod in it that does not set the
//! same annotation itself.
//!
//! This is how a platform team enrols a whole namespace at once
//! (`weir.dev/enroll: "true"` on the Namespace, as Istio's
//! `istio-injection=enabled` label does) or sets a namespace's default
//! `weir.dev/unclaimed-traffic`, `weir.dev/fail-mode` or share; a pod still
//! opts out or overrides with its own annotation (`weir.dev/enroll:
//! "false"`). Only `weir.dev/` keys are kept: the rest of a namespace's
//! annotations are not weir's business and would cost memory per namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher;

use super::super::policy::{INHERITED_PREFIX, check_namespace_defaults};
use super::super::spec::PodSpec;
use super::health::WatchHealth;

/// One namespace's inherited annotations.
pub type Defaults = BTreeMap<String, String>;

/// The namespaces' defaults as the watch has shown them; only namespaces
/// with at least one `weir.dev/` annotation are kept.
#[derive(Debug, Default)]
pub struct NamespaceDefaults {
    by_name: BTreeMap<String, Defaults>,
    /// A relist in progress, swapped in whole when complete (as for pods:
    /// a half-listed cluster must never read as "no namespace enrols").
    relist: Option<BTreeMap<String, Defaults>>,
    /// Whether a complete list has been seen.
    pub listed: bool,
    health: WatchHealth,
}

impl NamespaceDefaults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one watch item; true when the defaults in force changed.
    pub fn apply(&mut self, item: Result<watcher::Event<Namespace>, watcher::Error>) -> bool {
        if let Err(e) = &item
            && forbidden(e)
            && !self.listed
        {
            // A ClusterRole from before namespaces were read (the binary
            // upgraded before `daemonset/rbac.yaml`): waiting would keep the
            // agent from ever starting, so it goes on without namespace
            // defaults, and takes them up if the watch is allowed later.
            self.listed = true;
            log::error!(
                "Kubernetes API: listing namespaces is forbidden ({e}): namespaces' weir.dev/ defaults are off, pods are enrolled by their own annotations only; apply daemonset/rbac.yaml (get, list and watch on namespaces)"
            );
        }
        let event = self.health.event(
            item,
            |e| {
                log::warn!(
                    "Kubernetes API: watching namespaces failed: {e}; keeping the last known namespace defaults and retrying (the agent's ClusterRole needs get, list and watch on namespaces)"
                );
            },
            || log::info!("Kubernetes API: watching namespaces again"),
        );
        let Some(event) = event else {
            return false;
        };
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(namespace) => {
                if let (Some(listed), Some((name, defaults))) =
                    (self.relist.as_mut(), inherited(&namespace))
                {
                    listed.insert(name, defaults);
                }
                false
            }
            watcher::Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                for (name, defaults) in &listed {
                    if self.by_name.get(name) != Some(defaults) {
                        report_invalid(name, defaults);
                    }
                }
                self.listed = true;
                let changed = listed != self.by_name;
                self.by_name = listed;
                changed
            }
            watcher::Event::Apply(namespace) => {
                let Some(name) = namespace.metadata.name.clone() else {
                    return false;
                };
                let now = inherited(&namespace).map(|(_, defaults)| defaults);
                let before = match now {
                    Some(defaults) => self.by_name.insert(name.clone(), defaults),
                    None => self.by_name.remove(&name),
                };
                let changed = before.as_ref() != self.by_name.get(&name);
                if let (true, Some(defaults)) = (changed, self.by_name.get(&name)) {
                    report_invalid(&name, defaults);
                }
                changed
            }
            watcher::Event::Delete(namespace) => namespace
                .metadata
                .name
                .as_ref()
                .is_some_and(|name| self.by_name.remove(name).is_some()),
        }
    }

    /// The value `key` has for a pod of `namespace` with `own` annotations:
    /// its own, else its namespace's.
    pub fn effective<'a>(
        &'a self,
        namespace: &str,
        own: Option<&'a BTreeMap<String, String>>,
        key: &str,
    ) -> Option<&'a str> {
        own.and_then(|a| a.get(key))
            .or_else(|| self.by_name.get(namespace).and_then(|d| d.get(key)))
            .map(String::as_str)
    }

    /// `spec` with its namespace's defaults added under its own annotations.
    pub fn inherit(&self, spec: &PodSpec) -> PodSpec {
        let mut spec = spec.clone();
        if let Some(defaults) = self.by_name.get(&spec.namespace) {
            spec.inherit(defaults);
        }
        spec
    }

    /// How many namespaces set defaults (for the startup log).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
}

/// Whether the API server refused the watch for want of permission.
fn forbidden(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 403,
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

/// Logs a namespace default that no pod could use, naming the namespace:
/// each pod inheriting it is refused with an error naming the pod and the
/// annotation, which alone would send its owner looking at the pod.
fn report_invalid(namespace: &str, defaults: &Defaults) -> bool {
    match check_namespace_defaults(namespace, defaults) {
        Ok(()) => false,
        Err(e) => {
            log::warn!(
                "{e}; it is a default for the namespace's pods, and those that do not override it are not enrolled"
            );
            true
        }
    }
}

/// The namespace's name and its `weir.dev/` labels and annotations (an
/// annotation wins over a label of the same key), if it has any.
fn inherited(namespace: &Namespace) -> Option<(String, Defaults)> {
    let meta = &namespace.metadata;
    let name = meta.name.clone()?;
    let defaults: Defaults = meta
        .labels
        .iter()
        .flatten()
        .chain(meta.annotations.iter().flatten())
        .filter(|(key, _)| key.starts_with(INHERITED_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    (!defaults.is_empty()).then_some((name, defaults))
}

#[cfg(test)]
#[path = "namespaces_tests.rs"]
mod tests;
