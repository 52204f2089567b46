//! Route rules: matchers, actions, targets, header manipulation.

use std::collections::HashSet;

use super::super::compile_full_match;
use super::super::error::DocPath;
use super::super::matcher::{HeaderMatcherConfig, PathMatch, RouteMatchConfig, ValueMatch};
use super::super::route::{
    ClusterTarget, DirectResponseConfig, ForwardActionConfig, HeaderValueOptionConfig,
    RedirectConfig, RetryPolicyConfig, RouteAction, RouteConfig, WeightedClusterConfig,
};
use super::Checker;
use super::syntax::{check_header_name, check_header_value, check_host, check_method};

/// Bounds the picks one retry may make (each is a balancer pass).
const MAX_HOST_SELECTION_ATTEMPTS: u32 = 100;

/// Redirect codes Envoy supports.
const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];

impl Checker<'_> {
    pub(super) fn route(&mut self, path: &DocPath, route: &RouteConfig) {
        if route.name.as_deref() == Some("") {
            self.report(path.key("name"), "route name must not be empty when given");
        }
        let is_prefix = matches!(route.matcher.path_match, PathMatch::Prefix(_));
        self.route_match(&path.key("match"), &route.matcher);
        match &route.action {
            RouteAction::Route(forward) => self.forward(&path.key("route"), forward, is_prefix),
            RouteAction::DirectResponse(direct) => {
                self.direct_response(&path.key("direct_response"), direct)
            }
            RouteAction::Redirect(redirect) => {
                self.redirect(&path.key("redirect"), redirect, is_prefix)
            }
        }
        self.headers_to_add(
            &path.key("request_headers_to_add"),
            &route.request_headers_to_add,
        );
        self.headers_to_add(
            &path.key("response_headers_to_add"),
            &route.response_headers_to_add,
        );
        self.headers_to_remove(
            &path.key("request_headers_to_remove"),
            &route.request_headers_to_remove,
        );
        self.headers_to_remove(
            &path.key("response_headers_to_remove"),
            &route.response_headers_to_remove,
        );
    }

    fn route_match(&mut self, path: &DocPath, matcher: &RouteMatchConfig) {
        match &matcher.path_match {
            PathMatch::Prefix(prefix) if !prefix.starts_with('/') => self.report(
                path.key("prefix"),
                format!("prefix {prefix:?} must start with \"/\""),
            ),
            PathMatch::Path(exact) if !exact.starts_with('/') => self.report(
                path.key("path"),
                format!("path {exact:?} must start with \"/\""),
            ),
            PathMatch::SafeRegex(regex) => self.regex(path.key("safe_regex"), regex),
            _ => {}
        }
        for (i, header) in matcher.headers.iter().enumerate() {
            self.header_matcher(&path.key("headers").index(i), header);
        }
        for (i, method) in matcher.methods.iter().enumerate() {
            if let Err(reason) = check_method(method) {
                self.report(path.key("methods").index(i), reason);
            }
        }
        for (i, param) in matcher.query_parameters.iter().enumerate() {
            let q_path = path.key("query_parameters").index(i);
            if param.name.is_empty() {
                self.report(q_path.key("name"), "query parameter name must not be empty");
            }
            self.value_match(&q_path, &param.value_match);
        }
    }

    fn header_matcher(&mut self, path: &DocPath, header: &HeaderMatcherConfig) {
        if let Err(reason) = check_header_name(&header.name) {
            self.report(path.key("name"), reason);
        }
        self.value_match(path, &header.value_match);
    }

    fn value_match(&mut self, path: &DocPath, value_match: &ValueMatch) {
        if let ValueMatch::SafeRegex(regex) = value_match {
            self.regex(path.key("safe_regex"), regex);
        }
    }

    fn regex(&mut self, path: DocPath, regex: &str) {
        if let Err(err) = compile_full_match(regex) {
            // regex's message spans lines (a caret under the pattern); keep the last.
            let err = err.to_string();
            let reason = err.lines().last().unwrap_or("invalid").trim();
            self.report(path, format!("invalid regex {regex:?}: {reason}"));
        }
    }

    fn forward(&mut self, path: &DocPath, forward: &ForwardActionConfig, is_prefix: bool) {
        match &forward.target {
            ClusterTarget::Single(name) => self.known_cluster(path.key("cluster"), name),
            ClusterTarget::Weighted(list) => self.weighted(&path.key("weighted_clusters"), list),
        }
        if forward.prefix_rewrite.is_some() && !is_prefix {
            self.report(
                path.key("prefix_rewrite"),
                "prefix_rewrite needs a `prefix` match on this route",
            );
        }
        if let Some(host) = &forward.host_rewrite_literal
            && let Err(reason) = check_host(host)
        {
            self.report(
                path.key("host_rewrite_literal"),
                format!("invalid host {host:?}: {reason}"),
            );
        }
        if let Some(policy) = &forward.retry_policy {
            self.retry_policy(&path.key("retry_policy"), policy);
        }
    }

    fn weighted(&mut self, path: &DocPath, list: &[WeightedClusterConfig]) {
        if list.is_empty() {
            self.report(
                path.clone(),
                "weighted_clusters must list at least one cluster",
            );
            return;
        }
        let mut seen = HashSet::new();
        for (i, choice) in list.iter().enumerate() {
            let name_path = path.index(i).key("name");
            if !seen.insert(choice.name.as_str()) {
                let msg = format!(
                    "cluster {:?} is listed twice in weighted_clusters",
                    choice.name
                );
                self.report(name_path, msg);
            } else {
                self.known_cluster(name_path, &choice.name);
            }
        }
        let total: u64 = list.iter().map(|c| u64::from(c.weight)).sum();
        if total == 0 {
            self.report(
                path.clone(),
                "weighted_clusters weights sum to 0; at least one must be > 0",
            );
        } else if total > u64::from(u32::MAX) {
            self.report(
                path.clone(),
                format!(
                    "weighted_clusters weights sum to {total}, over {}",
                    u32::MAX
                ),
            );
        }
    }

    fn retry_policy(&mut self, path: &DocPath, policy: &RetryPolicyConfig) {
        if policy.retry_on.is_empty() {
            self.report(
                path.key("retry_on"),
                "retry_on must list at least one condition",
            );
        }
        for (i, code) in policy.retriable_status_codes.iter().enumerate() {
            if !(100..=599).contains(code) {
                self.report(
                    path.key("retriable_status_codes").index(i),
                    format!("invalid status code {code}: expected 100..=599"),
                );
            }
        }
        if policy.host_selection_retry_max_attempts > MAX_HOST_SELECTION_ATTEMPTS {
            self.report(
                path.key("host_selection_retry_max_attempts"),
                format!(
                    "host_selection_retry_max_attempts {} is over {MAX_HOST_SELECTION_ATTEMPTS}",
                    policy.host_selection_retry_max_attempts
                ),
            );
        }
        for (i, h) in policy.retriable_headers.iter().enumerate() {
            self.header_matcher(&path.key("retriable_headers").index(i), h);
        }
        let back_off = &policy.retry_back_off;
        let bo_path = path.key("retry_back_off");
        if back_off.base_interval.is_zero() {
            self.report(bo_path.key("base_interval"), "base_interval must be > 0");
        }
        if let Some(max) = back_off.max_interval
            && max < back_off.base_interval
        {
            self.report(
                bo_path.key("max_interval"),
                format!(
                    "max_interval {max} is shorter than base_interval {}",
                    back_off.base_interval
                ),
            );
        }
    }

    fn direct_response(&mut self, path: &DocPath, direct: &DirectResponseConfig) {
        if !(200..=599).contains(&direct.status) {
            self.report(
                path.key("status"),
                format!("invalid status code {}: expected 200..=599", direct.status),
            );
        }
    }

    fn redirect(&mut self, path: &DocPath, redirect: &RedirectConfig, is_prefix: bool) {
        if !REDIRECT_CODES.contains(&redirect.response_code) {
            self.report(
                path.key("response_code"),
                format!(
                    "invalid redirect response_code {}: expected one of 301, 302, 303, 307, 308",
                    redirect.response_code
                ),
            );
        }
        if let Some(scheme) = &redirect.scheme_redirect
            && scheme != "http"
            && scheme != "https"
        {
            self.report(
                path.key("scheme_redirect"),
                format!("invalid scheme {scheme:?}: expected http or https"),
            );
        }
        if let Some(host) = &redirect.host_redirect
            && let Err(reason) = check_host(host)
        {
            self.report(
                path.key("host_redirect"),
                format!("invalid host {host:?}: {reason}"),
            );
        }
        if redirect.port_redirect == Some(0) {
            self.report(path.key("port_redirect"), "port_redirect must not be 0");
        }
        if let Some(new_path) = &redirect.path_redirect
            && !new_path.starts_with('/')
        {
            self.report(
                path.key("path_redirect"),
                format!("path_redirect {new_path:?} must start with \"/\""),
            );
        }
        if redirect.prefix_rewrite.is_some() {
            if redirect.path_redirect.is_some() {
                self.report(
                    path.key("prefix_rewrite"),
                    "prefix_rewrite and path_redirect exclude each other",
                );
            } else if !is_prefix {
                self.report(
                    path.key("prefix_rewrite"),
                    "prefix_rewrite needs a `prefix` match on this route",
                );
            }
        }
    }

    pub(super) fn headers_to_add(&mut self, path: &DocPath, headers: &[HeaderValueOptionConfig]) {
        for (i, header) in headers.iter().enumerate() {
            if let Err(reason) = check_header_name(&header.name) {
                self.report(path.index(i).key("name"), reason);
            }
            if let Err(reason) = check_header_value(&header.value) {
                self.report(path.index(i).key("value"), reason);
            }
        }
    }

    fn headers_to_remove(&mut self, path: &DocPath, names: &[String]) {
        for (i, name) in names.iter().enumerate() {
            if let Err(reason) = check_header_name(name) {
                self.report(path.index(i), reason);
            }
        }
    }
}
