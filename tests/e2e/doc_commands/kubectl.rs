//! `kubectl ...` as the docs show it, checked as far as it can be without a
//! cluster: the directories (`-k`) hold a kustomization, the files (`-f`)
//! exist, the namespace (`-n`) and the DaemonSets it names are the ones
//! `daemonset/` creates, and a command run in the agent's pod (`exec ...
//! -- weir status`) is handed back to be checked itself. Applying it needs a
//! cluster; the daemonset_manifests e2e test applies `daemonset/` to a real
//! API server.

use std::path::Path;

use anyhow::{Result, bail};

use crate::Verdict;

/// What a kubectl line names, and the command it runs in a pod, if any.
pub fn check(root: &Path, args: &[String]) -> Result<(Verdict, Option<Vec<String>>)> {
    let (own, in_pod) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], Some(args[i + 1..].to_vec())),
        None => (args, None),
    };
    let manifests = manifests(root)?;
    let mut checked = Vec::new();
    let mut words = own.iter().peekable();
    while let Some(word) = words.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (flag, Some(value.to_owned())),
            _ => (word.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| words.next().cloned());
        match flag {
            "-k" | "--kustomize" => {
                let Some(dir) = value() else {
                    bail!("-k without a directory")
                };
                if !root.join(&dir).join("kustomization.yaml").is_file() {
                    bail!("{dir} has no kustomization.yaml");
                }
                checked.push(format!("{dir} is a kustomization"));
            }
            "-f" | "--filename" => {
                let Some(file) = value() else {
                    bail!("-f without a file")
                };
                if !root.join(&file).exists() {
                    bail!("{file} does not exist");
                }
                checked.push(format!("{file} exists"));
            }
            "-n" | "--namespace" => {
                let Some(ns) = value() else {
                    bail!("-n without a namespace")
                };
                if !manifests.contains(&("Namespace".to_owned(), ns.clone())) {
                    bail!("daemonset/ creates no namespace {ns}");
                }
                checked.push(format!("namespace {ns}"));
            }
            "daemonset" | "ds" if words.peek().is_some_and(|n| !n.starts_with('-')) => {
                let name = words.next().cloned().unwrap_or_default();
                daemonset(&manifests, &name)?;
                checked.push(format!("DaemonSet {name}"));
            }
            _ => {
                if let Some(name) = word.strip_prefix("ds/").or(word.strip_prefix("daemonset/"))
                    && !name.is_empty()
                    && !word.ends_with('/')
                {
                    daemonset(&manifests, name)?;
                    checked.push(format!("DaemonSet {name}"));
                }
            }
        }
    }
    let what = if checked.is_empty() {
        "needs a cluster".to_owned()
    } else {
        format!("{}; the rest needs a cluster", checked.join(", "))
    };
    Ok((Verdict::Checked(what), in_pod))
}

fn daemonset(manifests: &[(String, String)], name: &str) -> Result<()> {
    if !manifests.contains(&("DaemonSet".to_owned(), name.to_owned())) {
        bail!("daemonset/ has no DaemonSet {name}");
    }
    Ok(())
}

/// (kind, metadata.name) of every object in `daemonset/`'s YAML files,
/// read by their layout (a `kind:` line, then the first `name:` under
/// `metadata:`) rather than by a YAML parser this crate does not have.
fn manifests(root: &Path) -> Result<Vec<(String, String)>> {
    let mut objects = Vec::new();
    for dir in ["daemonset", "daemonset/uninstall"] {
        for entry in std::fs::read_dir(root.join(dir))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for doc in text.split("\n---") {
                let kind = field(doc, "kind:");
                let name = doc
                    .split_once("\nmetadata:")
                    .and_then(|(_, meta)| field(meta, "name:"));
                if let (Some(kind), Some(name)) = (kind, name) {
                    objects.push((kind, name));
                }
            }
        }
    }
    Ok(objects)
}

/// The value of the first line that is `key value` once trimmed.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().trim_matches('"').to_owned())
}
