//! Rules that span fields, checked after the document fits the types.
//!
//! Each check records the document path of the offending value and a message
//! naming the value and the reason; lines are looked up at the end.

mod cluster;
mod listener;
mod route;
mod syntax;
mod tls;

use std::collections::{HashMap, HashSet};

use super::error::{DocPath, Issue};
use super::locate::line_of;
use super::parse::FileChecks;
use super::root::ProxyConfig;

/// Every rule violation in `config`; `text` is the document, to find lines.
pub(super) fn validate(config: &ProxyConfig, text: &str, files: FileChecks) -> Vec<Issue> {
    let mut checker = Checker {
        cluster_names: config.clusters.iter().map(|c| c.name.as_str()).collect(),
        files,
        problems: Vec::new(),
    };
    checker.top_level(config);
    checker
        .problems
        .into_iter()
        .map(|(path, message)| Issue {
            line: line_of(text, &path),
            path: path.to_string(),
            message,
        })
        .collect()
}

/// Walks the config, collecting problems.
pub(super) struct Checker<'c> {
    cluster_names: HashSet<&'c str>,
    files: FileChecks,
    problems: Vec<(DocPath, String)>,
}

impl<'c> Checker<'c> {
    fn report(&mut self, path: DocPath, message: impl Into<String>) {
        self.problems.push((path, message.into()));
    }

    fn top_level(&mut self, config: &'c ProxyConfig) {
        let root = DocPath::root();
        let listeners = root.key("listeners");
        if config.listeners.is_empty() {
            self.report(listeners.clone(), "a config needs at least one listener");
        }
        let mut addresses = HashMap::new();
        if let Some(admin) = &config.admin
            && admin.address.port() != 0
        {
            addresses.insert(admin.address, "admin".to_owned());
        }
        if let Some(stats) = &config.stats
            && stats.address.port() != 0
            && let Some(first) = addresses.insert(stats.address, "stats".to_owned())
        {
            addresses.insert(stats.address, first.clone());
            self.report(
                root.key("stats").key("address"),
                format!("address {} is already used by {first}", stats.address),
            );
        }
        self.unique_names(
            &listeners,
            config.listeners.iter().map(|l| l.name.as_str()),
            "listener",
        );
        // Original destinations claimed by listeners that are not bound.
        let mut claimed = HashMap::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            let path = listeners.index(i);
            if !listener.bind_to_port {
                self.virtual_listener(&path, listener, &mut claimed);
            } else if listener.address.port() != 0 {
                // Port 0 lets the kernel pick, so two of them never clash.
                let here = format!("listener {:?} ({path})", listener.name);
                if let Some(first) = addresses.insert(listener.address, here.clone()) {
                    addresses.insert(listener.address, first.clone());
                    self.report(
                        path.key("address"),
                        format!("address {} is already used by {first}", listener.address),
                    );
                }
            }
            self.listener(&path, listener);
        }
        let clusters = root.key("clusters");
        self.unique_names(
            &clusters,
            config.clusters.iter().map(|c| c.name.as_str()),
            "cluster",
        );
        for (i, cluster) in config.clusters.iter().enumerate() {
            self.cluster(&clusters.index(i), cluster);
        }
        self.dns(&root.key("dns"), &config.dns);
        self.authorization(&root.key("authorization_policies"), config);
    }

    fn authorization(&mut self, path: &DocPath, config: &'c ProxyConfig) {
        let policies = &config.authorization_policies;
        self.unique_names(path, policies.iter().map(|p| p.name.as_str()), "policy");
        for (i, policy) in policies.iter().enumerate() {
            let at = path.index(i);
            if let Err(reason) = crate::config::check_namespace(&policy.namespace) {
                self.report(at.key("namespace"), reason);
            }
            if let Some(sa) = &policy.service_account
                && let Err(reason) = crate::config::check_service_account(sa)
            {
                self.report(at.key("service_account"), reason);
            }
            for (r, rule) in policy.rules.iter().enumerate() {
                let rule_at = at.key("rules").index(r);
                for (f, from) in rule.from.iter().enumerate() {
                    let source = &from.source;
                    let source_at = rule_at.key("from").index(f).key("source");
                    if source.principals.is_empty() && source.namespaces.is_empty() {
                        self.report(
                            source_at.clone(),
                            "a source lists principals or namespaces (leave `from` out to allow any source)",
                        );
                    }
                    self.patterns(&source_at.key("principals"), &source.principals);
                    self.patterns(&source_at.key("namespaces"), &source.namespaces);
                }
                for (t, to) in rule.to.iter().enumerate() {
                    let op = &to.operation;
                    let op_at = rule_at.key("to").index(t).key("operation");
                    if op.ports.is_empty() && op.paths.is_empty() && op.methods.is_empty() {
                        self.report(
                            op_at.clone(),
                            "an operation lists ports, paths or methods (leave `to` out to allow any)",
                        );
                    }
                    for (p, port) in op.ports.iter().enumerate() {
                        if *port == 0 {
                            self.report(op_at.key("ports").index(p), "port 0 is no port");
                        }
                    }
                    self.patterns(&op_at.key("paths"), &op.paths);
                    for (m, method) in op.methods.iter().enumerate() {
                        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                            self.report(
                                op_at.key("methods").index(m),
                                format!(
                                    "{method:?} is not an HTTP method (upper case, as sent: GET)"
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    fn patterns(&mut self, path: &DocPath, patterns: &[String]) {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Some(problem) = crate::config::authz::pattern_problem(pattern) {
                self.report(path.index(i), format!("{pattern:?} {problem}"));
            }
        }
    }

    fn dns(&mut self, path: &DocPath, dns: &crate::config::DnsConfig) {
        if dns.timeout.is_zero() {
            self.report(path.key("timeout"), "timeout must be > 0");
        }
        if dns.attempts == 0 {
            self.report(path.key("attempts"), "attempts must be at least 1");
        }
        // resolv.conf caps ndots at 15.
        if dns.ndots.is_some_and(|n| n > 15) {
            self.report(path.key("ndots"), "ndots must be at most 15");
        }
        for (i, domain) in dns.search_domains.iter().flatten().enumerate() {
            let valid = !domain.is_empty()
                && domain.len() <= 253
                && domain.trim_end_matches('.').split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !valid {
                self.report(
                    path.key("search_domains").index(i),
                    format!("{domain:?} is not a domain name"),
                );
            }
        }
    }

    /// Names must be non-empty and unique in the list at `list`.
    fn unique_names<'n>(
        &mut self,
        list: &DocPath,
        names: impl Iterator<Item = &'n str>,
        what: &str,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let path = list.index(i).key("name");
            if name.is_empty() {
                self.report(path, format!("{what} name must not be empty"));
            } else if let Some(first) = seen.get(name) {
                let first = list.index(*first);
                self.report(
                    path,
                    format!("duplicate {what} name {name:?} (first defined at {first})"),
                );
            } else {
                seen.insert(name, i);
            }
        }
    }

    /// A route target must name a cluster defined in `clusters`.
    fn known_cluster(&mut self, path: DocPath, name: &str) {
        if !self.cluster_names.contains(name) {
            let mut known: Vec<&str> = self.cluster_names.iter().copied().collect();
            known.sort_unstable();
            let known = if known.is_empty() {
                "none are defined".to_owned()
            } else {
                format!("defined: {}", known.join(", "))
            };
            self.report(path, format!("unknown cluster {name:?} ({known})"));
        }
    }
}

#[cfg(test)]
mod tests;
