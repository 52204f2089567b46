//! Listener and virtual host rules.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::super::error::DocPath;
use super::super::listener::{AccessLogConfig, ListenerConfig, MAX_ACCESS_LOGS, VirtualHostConfig};
use super::super::parse::FileChecks;
use super::Checker;
use super::syntax::check_domain;

/// Envoy's upper bound for `max_request_headers_kb`.
const MAX_REQUEST_HEADERS_KB: u32 = 8192;

impl<'c> Checker<'c> {
    /// A `bind_to_port: false` listener matches original destinations: it
    /// needs a port, and no two of them may claim the same address.
    pub(super) fn virtual_listener(
        &mut self,
        path: &DocPath,
        listener: &ListenerConfig,
        claimed: &mut HashMap<SocketAddr, String>,
    ) {
        if listener.address.port() == 0 {
            self.report(
                path.key("address"),
                format!(
                    "address {}: a listener with bind_to_port: false matches original \
                     destinations and needs a non-zero port",
                    listener.address
                ),
            );
            return;
        }
        let here = format!("listener {:?} ({path})", listener.name);
        if let Some(first) = claimed.get(&listener.address) {
            self.report(
                path.key("address"),
                format!(
                    "original destination {} is already claimed by {first}",
                    listener.address
                ),
            );
        } else {
            claimed.insert(listener.address, here);
        }
    }

    pub(super) fn listener(&mut self, path: &DocPath, listener: &'c ListenerConfig) {
        let server = &listener.server_name;
        if server.is_empty() || http::HeaderValue::from_str(server).is_err() {
            self.report(
                path.key("server_name"),
                format!(
                    "server_name {server:?} is not a valid header value (non-empty, visible ASCII)"
                ),
            );
        }
        let limits = path.key("limits");
        let kb = listener.limits.max_request_headers_kb;
        if !(1..=MAX_REQUEST_HEADERS_KB).contains(&kb) {
            self.report(
                limits.key("max_request_headers_kb"),
                format!("max_request_headers_kb {kb} is out of range 1..={MAX_REQUEST_HEADERS_KB}"),
            );
        }
        if listener.limits.max_headers_count == 0 {
            self.report(
                limits.key("max_headers_count"),
                "max_headers_count must be at least 1",
            );
        }
        if listener.limits.max_connections_per_client == 0 {
            self.report(
                limits.key("max_connections_per_client"),
                "max_connections_per_client must be at least 1",
            );
        }
        if let Some(tls) = &listener.tls {
            self.downstream_tls(&path.key("tls"), tls);
        }
        for (i, token) in listener.upgrade_types.iter().flatten().enumerate() {
            let is_token = !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
            if !is_token {
                self.report(
                    path.key("upgrade_types").index(i),
                    format!("invalid upgrade type {token:?}: expected an Upgrade header token such as websocket"),
                );
            }
        }
        if !listener.server_names.is_empty() {
            if listener.bind_to_port {
                self.report(
                    path.key("server_names"),
                    "server_names selects intercepted TLS by SNI and needs bind_to_port: false",
                );
            }
            self.server_names(&path.key("server_names"), &listener.server_names);
        }
        self.access_logs(&path.key("access_log"), &listener.access_log);
        let vhosts = path.key("virtual_hosts");
        if listener.virtual_hosts.is_empty() {
            self.report(vhosts.clone(), "a listener needs at least one virtual host");
        }
        self.unique_names(
            &vhosts,
            listener.virtual_hosts.iter().map(|v| v.name.as_str()),
            "virtual host",
        );
        // Lower-cased domain -> the virtual host index that serves it first.
        let mut served: HashMap<String, usize> = HashMap::new();
        for (i, vhost) in listener.virtual_hosts.iter().enumerate() {
            let vh_path = vhosts.index(i);
            self.domains(&vh_path, i, vhost, &listener.virtual_hosts, &mut served);
            self.virtual_host(&vh_path, vhost);
        }
    }

    /// At most [`MAX_ACCESS_LOGS`], each path once, in a directory that
    /// exists (the file itself is created when the log opens).
    fn access_logs(&mut self, path: &DocPath, logs: &[AccessLogConfig]) {
        if logs.len() > MAX_ACCESS_LOGS {
            self.report(
                path.clone(),
                format!(
                    "{} access logs: a listener has at most {MAX_ACCESS_LOGS}",
                    logs.len()
                ),
            );
        }
        for (i, log) in logs.iter().enumerate() {
            let at = path.index(i).key("path");
            let file = &log.path;
            if file.as_os_str().is_empty() || file.file_name().is_none() {
                self.report(at, format!("access log path {file:?} does not name a file"));
                continue;
            }
            if logs[..i].iter().any(|l| l.path == *file) {
                self.report(
                    at,
                    format!("access log path {} is listed twice", file.display()),
                );
                continue;
            }
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if self.files == FileChecks::MustExist && !dir.is_dir() {
                self.report(
                    at,
                    format!(
                        "access log path {}: directory {} does not exist",
                        file.display(),
                        dir.display()
                    ),
                );
            }
        }
    }

    fn domains(
        &mut self,
        vh_path: &DocPath,
        index: usize,
        vhost: &VirtualHostConfig,
        all: &[VirtualHostConfig],
        served: &mut HashMap<String, usize>,
    ) {
        if vhost.domains.is_empty() {
            self.report(
                vh_path.key("domains"),
                "domains must list at least one domain (use \"*\" for any host)",
            );
        }
        for (d, domain) in vhost.domains.iter().enumerate() {
            let path = vh_path.key("domains").index(d);
            if let Err(reason) = check_domain(domain) {
                self.report(path, format!("invalid domain {domain:?}: {reason}"));
                continue;
            }
            let key = domain.to_ascii_lowercase();
            match served.get(&key) {
                Some(&first) if domain == "*" => {
                    self.report(
                        path,
                        format!(
                            "more than one catch-all \"*\" virtual host on this listener \
                             (first: virtual host {:?})",
                            all[first].name
                        ),
                    );
                }
                Some(&first) if first == index => {
                    self.report(path, format!("domain {domain:?} is listed twice"));
                }
                Some(&first) => {
                    self.report(
                        path,
                        format!(
                            "domain {domain:?} is already served by virtual host {:?} on this listener",
                            all[first].name
                        ),
                    );
                }
                None => {
                    served.insert(key, index);
                }
            }
        }
    }

    fn virtual_host(&mut self, path: &DocPath, vhost: &'c VirtualHostConfig) {
        self.headers_to_add(
            &path.key("request_headers_to_add"),
            &vhost.request_headers_to_add,
        );
        let routes = path.key("routes");
        for (i, route) in vhost.routes.iter().enumerate() {
            self.route(&routes.index(i), route);
        }
    }
}
