//! Rules across the pods of one document: every field filled in, each pod
//! and each address on the node once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Component;

use crate::config::DocPath;

use super::policy::{INHERITED_PREFIX, check_namespace_defaults};
use super::spec::{NamespaceSpec, PodLocation, PodSpec};

/// Every rule violation, as (document path, message).
pub(super) fn validate(pods: &[PodSpec]) -> Vec<(DocPath, String)> {
    let list = DocPath::root().key("pods");
    let mut problems = Vec::new();
    let mut uids: HashMap<&str, usize> = HashMap::new();
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    let mut ips: HashMap<IpAddr, (usize, usize)> = HashMap::new();
    for (i, pod) in pods.iter().enumerate() {
        let path = list.index(i);
        for (field, value) in [
            ("namespace", &pod.namespace),
            ("name", &pod.name),
            ("uid", &pod.uid),
        ] {
            if value.trim().is_empty() {
                problems.push((path.key(field), format!("{field} must not be empty")));
            }
        }
        if !pod.uid.is_empty()
            && let Some(first) = uids.insert(&pod.uid, i)
        {
            uids.insert(&pod.uid, first);
            problems.push((
                path.key("uid"),
                format!(
                    "uid {:?} is already used by {}",
                    pod.uid,
                    describe(&list, first, pods)
                ),
            ));
        }
        if !pod.name.is_empty()
            && let Some(first) = names.insert((&pod.namespace, &pod.name), i)
        {
            names.insert((&pod.namespace, &pod.name), first);
            problems.push((
                path.key("name"),
                format!(
                    "pod {} is already listed at {}",
                    pod.qualified_name(),
                    list.index(first)
                ),
            ));
        }
        if pod.ips.is_empty() {
            problems.push((path.key("ips"), "a pod needs at least one IP".to_owned()));
        }
        for (j, ip) in pod.ips.iter().enumerate() {
            if let Some(&(first, first_j)) = ips.get(ip) {
                let owner = if first == i {
                    format!(
                        "is listed twice (first at {})",
                        list.index(i).key("ips").index(first_j)
                    )
                } else {
                    format!("is already used by {}", describe(&list, first, pods))
                };
                problems.push((path.key("ips").index(j), format!("IP {ip} {owner}")));
            } else {
                ips.insert(*ip, (i, j));
            }
        }
        location(&path, &pod.location, &mut problems);
    }
    problems
}

/// The namespaces' defaults: each namespace once, only `weir.dev/` keys,
/// and values a pod could use. An invalid default is refused with the
/// file, not passed on: it would take every pod of the namespace that does
/// not override it out of the mesh.
pub(super) fn validate_namespaces(namespaces: &[NamespaceSpec]) -> Vec<(DocPath, String)> {
    let list = DocPath::root().key("namespaces");
    let mut problems = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, namespace) in namespaces.iter().enumerate() {
        let path = list.index(i);
        if namespace.name.trim().is_empty() {
            problems.push((path.key("name"), "name must not be empty".to_owned()));
        } else if let Some(first) = names.insert(&namespace.name, i) {
            names.insert(&namespace.name, first);
            problems.push((
                path.key("name"),
                format!(
                    "namespace {} is already listed at {}",
                    namespace.name,
                    list.index(first)
                ),
            ));
        }
        let annotations = path.key("annotations");
        for key in namespace.annotations.keys() {
            if !key.starts_with(INHERITED_PREFIX) {
                problems.push((
                    annotations.key(key),
                    format!(
                        "only {INHERITED_PREFIX}* annotations are defaults for a namespace's pods"
                    ),
                ));
            }
        }
        if let Err(e) = check_namespace_defaults(&namespace.name, &namespace.annotations) {
            problems.push((annotations.key(e.annotation()), e.to_string()));
        }
    }
    problems
}

fn location(path: &DocPath, location: &PodLocation, problems: &mut Vec<(DocPath, String)>) {
    match location {
        PodLocation::Cgroup(dir) => {
            let path = path.key("cgroup");
            if dir.as_os_str().is_empty() {
                problems.push((path, "cgroup must not be empty".to_owned()));
            } else if dir.components().any(|c| c == Component::ParentDir) {
                problems.push((
                    path,
                    format!("cgroup {} must not contain `..`", dir.display()),
                ));
            }
        }
        PodLocation::Pid(0) => {
            problems.push((
                path.key("pid"),
                "pid must be a process id, not 0".to_owned(),
            ));
        }
        // Only the Kubernetes source makes these; the file has no way to say it.
        PodLocation::Pid(_) | PodLocation::Kubelet { .. } => {}
    }
}

/// `pod ns/name (pods[i])`.
fn describe(list: &DocPath, index: usize, pods: &[PodSpec]) -> String {
    format!(
        "pod {} ({})",
        pods[index].qualified_name(),
        list.index(index)
    )
}
