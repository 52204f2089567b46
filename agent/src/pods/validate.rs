//! Rules across the pods of one document: every field filled in, each pod
//! and each address on the node once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Component;

use crate::config::DocPath;

use super::spec::{PodLocation, PodSpec};

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
