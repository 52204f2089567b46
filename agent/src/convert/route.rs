//! An HTTP connection manager's inline `route_config`: virtual hosts,
//! routes, matches and actions.

use serde_yaml::Value;

use super::common::{headers_to_add, regex_matcher, string_matcher};
use super::walk::{Cx, Field, optional};
use crate::config::{
    ClusterTarget, ConfigDuration, DirectResponseConfig, ForwardActionConfig, HeaderMatcherConfig,
    HeaderValueOptionConfig, PathMatch, QueryParameterMatcherConfig, RedirectConfig,
    RetryBackOffConfig, RetryHostPredicate, RetryOn, RetryPolicyConfig, RouteAction, RouteConfig,
    RouteMatchConfig, ValueMatch, VirtualHostConfig, WeightedClusterConfig,
};

/// Envoy's route timeout when a route sets none.
const ENVOY_ROUTE_TIMEOUT: ConfigDuration = ConfigDuration::from_secs(15);
/// Envoy's retries when a retry policy sets no `num_retries`.
const ENVOY_NUM_RETRIES: u32 = 1;

/// Where the routes are served: the weir path of their listener, and
/// whether it terminates TLS (Envoy's redirects keep the request's scheme).
pub(super) struct Served<'a> {
    pub weir_path: &'a str,
    pub tls: bool,
}

pub(super) fn route_config(cx: &mut Cx, f: &Field<'_>, at: &Served<'_>) -> Vec<VirtualHostConfig> {
    let Some(mut o) = cx.obj(f, "RouteConfiguration") else {
        return Vec::new();
    };
    // The table's name only lets Envoy share it; validate_clusters is what
    // weir always does.
    o.skip(&["name", "validate_clusters"]);
    let mut out = Vec::new();
    if let Some(vhs) = o.get("virtual_hosts") {
        for (j, vh) in cx.seq(&vhs).iter().enumerate() {
            let weir_path = format!("{}.virtual_hosts[{j}]", at.weir_path);
            cx.origin(weir_path.clone(), &vh.path);
            let served = Served {
                weir_path: &weir_path,
                tls: at.tls,
            };
            if let Some(v) = virtual_host(cx, vh, &served) {
                out.push(v);
            }
        }
    }
    o.finish(cx);
    out
}

fn virtual_host(cx: &mut Cx, f: &Field<'_>, at: &Served<'_>) -> Option<VirtualHostConfig> {
    let mut o = cx.obj(f, "VirtualHost")?;
    let name = o.require(cx, "name").and_then(|n| cx.string(&n));
    let domains = o.require(cx, "domains").map(|d| cx.strings(&d));
    let request_headers_to_add = o
        .get("request_headers_to_add")
        .map(|h| headers_to_add(cx, &h))
        .unwrap_or_default();
    // Envoy applies a virtual host's retry policy to its routes that set
    // none; weir has retry policies on routes only.
    let mut ok = true;
    let retry = match o.get("retry_policy") {
        Some(r) => retry_policy(cx, &r).unwrap_or_else(|| {
            ok = false;
            None
        }),
        None => None,
    };
    if let Some(tls) = o.get("require_tls") {
        cx.choice(
            &tls,
            &[("NONE", ())],
            "weir has no require_tls; a redirect route with scheme_redirect: https does it per route",
        );
    }
    let routes_field = o.get("routes");
    o.finish(cx);
    let mut routes = Vec::new();
    if let Some(list) = routes_field {
        for (k, r) in cx.seq(&list).iter().enumerate() {
            cx.origin(format!("{}.routes[{k}]", at.weir_path), &r.path);
            match route(cx, r, at, retry.as_ref(), &request_headers_to_add) {
                Some(r) => routes.push(r),
                None => ok = false,
            }
        }
    }
    if !ok {
        return None;
    }
    Some(VirtualHostConfig {
        name: name?,
        domains: domains?,
        request_headers_to_add,
        routes,
    })
}

fn route(
    cx: &mut Cx,
    f: &Field<'_>,
    at: &Served<'_>,
    vh_retry: Option<&RetryPolicyConfig>,
    vh_headers: &[HeaderValueOptionConfig],
) -> Option<RouteConfig> {
    let mut o = cx.obj(f, "Route")?;
    let name = o.get("name").and_then(|n| cx.string(&n));
    let matcher = o.require(cx, "match").and_then(|m| route_match(cx, &m));
    let prefix_match = matches!(
        &matcher,
        Some(RouteMatchConfig {
            path_match: PathMatch::Prefix(_),
            ..
        })
    );
    let mut actions = Vec::new();
    for kind in ["route", "direct_response", "redirect"] {
        if let Some(a) = o.get(kind) {
            actions.push((kind, a));
        }
    }
    let request_headers_to_add = o.get("request_headers_to_add").map(|h| {
        let added = headers_to_add(cx, &h);
        for header in &added {
            // weir applies a virtual host's additions before the route's,
            // Envoy after; with both naming a header the results differ.
            if vh_headers
                .iter()
                .any(|v| v.name.eq_ignore_ascii_case(&header.name))
            {
                cx.refuse(
                    &h.path,
                    format!(
                        "the virtual host also adds {:?}: Envoy applies the virtual host's value after the route's, weir before; set it in one place",
                        header.name
                    ),
                );
            }
        }
        added
    });
    let request_headers_to_remove = o.get("request_headers_to_remove").map(|h| cx.strings(&h));
    let response_headers_to_add = o
        .get("response_headers_to_add")
        .map(|h| headers_to_add(cx, &h));
    let response_headers_to_remove = o.get("response_headers_to_remove").map(|h| cx.strings(&h));
    if let Some(d) = o.get("decorator") {
        cx.refuse(&d.path, "weir does no tracing");
    }
    let path = o.path.clone();
    let mut has_other_action = false;
    for kind in ["filter_action", "non_forwarding_action"] {
        if let Some(a) = o.get(kind) {
            has_other_action = true;
            cx.refuse(&a.path, "weir forwards, answers directly or redirects only");
        }
    }
    o.finish(cx);
    let action = match actions.len() {
        1 => {
            let (kind, a) = actions.remove(0);
            match kind {
                "route" => forward(cx, &a, prefix_match, vh_retry).map(RouteAction::Route),
                "direct_response" => direct_response(cx, &a).map(RouteAction::DirectResponse),
                _ => redirect(cx, &a, prefix_match, at).map(RouteAction::Redirect),
            }
        }
        0 => {
            if !has_other_action {
                cx.refuse(
                    &path,
                    "one of route, direct_response or redirect is required",
                );
            }
            None
        }
        _ => {
            cx.refuse(
                &actions[1].1.path,
                format!(
                    "only one of {} and {} may be set",
                    actions[0].0, actions[1].0
                ),
            );
            None
        }
    };
    Some(RouteConfig {
        name,
        matcher: matcher?,
        action: action?,
        request_headers_to_add: request_headers_to_add.unwrap_or_default(),
        request_headers_to_remove: request_headers_to_remove.unwrap_or_default(),
        response_headers_to_add: response_headers_to_add.unwrap_or_default(),
        response_headers_to_remove: response_headers_to_remove.unwrap_or_default(),
    })
}

fn route_match(cx: &mut Cx, f: &Field<'_>) -> Option<RouteMatchConfig> {
    let mut o = cx.obj(f, "RouteMatch")?;
    let mut kinds = Vec::new();
    if let Some(p) = o.get("prefix") {
        kinds.push(("prefix", cx.string(&p).map(PathMatch::Prefix), p.path));
    }
    if let Some(p) = o.get("path") {
        kinds.push(("path", cx.string(&p).map(PathMatch::Path), p.path));
    }
    if let Some(r) = o.get("safe_regex") {
        kinds.push((
            "safe_regex",
            regex_matcher(cx, &r).map(PathMatch::SafeRegex),
            r.path,
        ));
    }
    let case_sensitive = o
        .get("case_sensitive")
        .and_then(|c| cx.bool(&c))
        .unwrap_or(true);
    let mut headers = Vec::new();
    let mut methods: Vec<String> = Vec::new();
    let mut ok = true;
    if let Some(hs) = o.get("headers") {
        for h in cx.seq(&hs) {
            match header_matcher(cx, &h) {
                Some(HeaderCondition::Header(m)) => headers.push(m),
                Some(HeaderCondition::Method(m)) if methods.is_empty() => methods.push(m),
                Some(HeaderCondition::Method(_)) => {
                    cx.refuse(&h.path, "a second :method match: weir matches one method");
                    ok = false;
                }
                None => ok = false,
            }
        }
    }
    let mut query_parameters = Vec::new();
    if let Some(qs) = o.get("query_parameters") {
        for q in cx.seq(&qs) {
            match query_matcher(cx, &q) {
                Some(m) => query_parameters.push(m),
                None => ok = false,
            }
        }
    }
    let other_kind = [
        "path_separated_prefix",
        "regex",
        "connect_matcher",
        "path_match_policy",
    ]
    .iter()
    .any(|k| o.has(k));
    let path = o.path.clone();
    o.finish(cx);
    let path_match = match kinds.len() {
        1 => kinds.remove(0).1,
        0 => {
            if !other_kind {
                cx.refuse(&path, "one of prefix, path or safe_regex is required");
            }
            None
        }
        _ => {
            cx.refuse(
                &kinds[1].2,
                format!("only one of {} and {} may be set", kinds[0].0, kinds[1].0),
            );
            None
        }
    };
    if !ok {
        return None;
    }
    Some(RouteMatchConfig {
        path_match: path_match?,
        case_sensitive,
        headers,
        methods,
        query_parameters,
    })
}

enum HeaderCondition {
    Header(HeaderMatcherConfig),
    /// Envoy matches the method as the `:method` header.
    Method(String),
}

fn header_matcher(cx: &mut Cx, f: &Field<'_>) -> Option<HeaderCondition> {
    let mut o = cx.obj(f, "HeaderMatcher")?;
    let name = o.require(cx, "name").and_then(|n| cx.string(&n));
    let invert_match = o
        .get("invert_match")
        .and_then(|i| cx.bool(&i))
        .unwrap_or(false);
    let mut found = Vec::new();
    for kind in [
        "exact_match",
        "safe_regex_match",
        "present_match",
        "prefix_match",
        "suffix_match",
        "contains_match",
        "string_match",
    ] {
        if let Some(x) = o.get(kind) {
            found.push((kind, x));
        }
    }
    if let Some(r) = o.get("regex_match") {
        cx.refuse(
            &r.path,
            "unsafe regex matching was removed from Envoy: use safe_regex_match",
        );
        o.finish(cx);
        return None;
    }
    let other_kind = o.has("range_match");
    o.finish(cx);
    let value_match = match found.len() {
        // Envoy: no value condition means the header must be present.
        0 if !other_kind => Some(ValueMatch::Present(true)),
        0 => None,
        1 => {
            let (kind, x) = found.remove(0);
            header_value_match(cx, kind, &x)
        }
        _ => {
            cx.refuse(
                &found[1].1.path,
                format!("only one of {} and {} may be set", found[0].0, found[1].0),
            );
            None
        }
    }?;
    let name = name?;
    if name == ":method" {
        return match (value_match, invert_match) {
            (ValueMatch::Exact(m), false) => Some(HeaderCondition::Method(m)),
            _ => {
                cx.refuse(
                    &f.path,
                    "weir matches the method exactly (match.methods): use an exact, not inverted, :method match",
                );
                None
            }
        };
    }
    if name.starts_with(':') {
        cx.refuse(
            &f.path.key("name"),
            format!(
                "weir matches no pseudo-header ({name}): match the path with prefix, path or safe_regex and the host with the virtual host's domains"
            ),
        );
        return None;
    }
    Some(HeaderCondition::Header(HeaderMatcherConfig {
        name,
        value_match,
        invert_match,
    }))
}

fn header_value_match(cx: &mut Cx, kind: &str, x: &Field<'_>) -> Option<ValueMatch> {
    match kind {
        "exact_match" => cx.string(x).map(ValueMatch::Exact),
        "safe_regex_match" => regex_matcher(cx, x).map(ValueMatch::SafeRegex),
        "present_match" => cx.bool(x).map(ValueMatch::Present),
        "string_match" => string_matcher(cx, x),
        // The v3 single-purpose fields, as the StringMatcher of that kind.
        _ => {
            let text = cx.string(x)?;
            let kind = kind.trim_end_matches("_match");
            let mut map = serde_yaml::Mapping::new();
            map.insert(Value::from(kind), Value::from(text));
            string_matcher(cx, &Field::new(x.path.clone(), &Value::Mapping(map)))
        }
    }
}

fn query_matcher(cx: &mut Cx, f: &Field<'_>) -> Option<QueryParameterMatcherConfig> {
    let mut o = cx.obj(f, "QueryParameterMatcher")?;
    let name = o.require(cx, "name").and_then(|n| cx.string(&n));
    let string_match = o.get("string_match");
    let present = o.get("present_match");
    let v2_value = o.get("value");
    if let Some(r) = o.get("regex")
        && cx.bool(&r) == Some(true)
    {
        cx.refuse(
            &r.path,
            "v2's regex query matching used ECMAScript regexes: use string_match.safe_regex",
        );
    }
    o.finish(cx);
    let value_match = match (string_match, present, v2_value) {
        (Some(s), None, None) => string_matcher(cx, &s),
        (None, Some(p), None) => match cx.bool(&p)? {
            true => Some(ValueMatch::Present(true)),
            false => {
                cx.refuse(&p.path, "weir has present_match: true only");
                None
            }
        },
        (None, None, Some(v)) => cx.string(&v).map(ValueMatch::Exact),
        // Envoy: no condition means the parameter must be present.
        (None, None, None) => Some(ValueMatch::Present(true)),
        _ => {
            cx.refuse(
                &f.path,
                "only one of string_match and present_match may be set",
            );
            None
        }
    };
    Some(QueryParameterMatcherConfig {
        name: name?,
        value_match: value_match?,
    })
}

fn forward(
    cx: &mut Cx,
    f: &Field<'_>,
    prefix_match: bool,
    vh_retry: Option<&RetryPolicyConfig>,
) -> Option<ForwardActionConfig> {
    let mut o = cx.obj(f, "RouteAction")?;
    let cluster = o.get("cluster");
    let weighted = o.get("weighted_clusters");
    let timeout = o.get("timeout").map(|t| cx.duration(&t));
    let prefix_rewrite = o.get("prefix_rewrite").and_then(|p| {
        if !prefix_match {
            cx.refuse(
                &p.path,
                "weir applies prefix_rewrite only to a prefix match",
            );
        }
        cx.string(&p)
    });
    let host = o
        .get("host_rewrite_literal")
        .or_else(|| o.get("host_rewrite"))
        .map(|h| cx.string(&h));
    let retry = match o.get("retry_policy") {
        Some(r) => retry_policy(cx, &r),
        None => Some(vh_retry.cloned()),
    };
    if let Some(p) = o.get("priority") {
        cx.choice(&p, &[("DEFAULT", ())], "weir has one priority, DEFAULT");
    }
    // weir refuses a route to an undefined cluster when it loads the file.
    o.skip(&["cluster_not_found_response_code"]);
    let path = o.path.clone();
    o.finish(cx);
    let target = match (cluster, weighted) {
        (Some(c), None) => cx.string(&c).map(ClusterTarget::Single),
        (None, Some(w)) => weighted_clusters(cx, &w).map(ClusterTarget::Weighted),
        (Some(_), Some(w)) => {
            cx.refuse(
                &w.path,
                "only one of cluster and weighted_clusters may be set",
            );
            None
        }
        (None, None) => {
            cx.refuse(&path, "one of cluster or weighted_clusters is required");
            None
        }
    };
    Some(ForwardActionConfig {
        target: target?,
        timeout: timeout.unwrap_or(Some(ENVOY_ROUTE_TIMEOUT))?,
        prefix_rewrite,
        host_rewrite_literal: optional(host)?,
        retry_policy: retry?,
    })
}

fn weighted_clusters(cx: &mut Cx, f: &Field<'_>) -> Option<Vec<WeightedClusterConfig>> {
    let mut o = cx.obj(f, "WeightedCluster")?;
    let clusters = o.require(cx, "clusters");
    let total = o
        .get("total_weight")
        .and_then(|t| cx.u32(&t).map(|n| (t.path, n)));
    if let Some(runtime) = o.get("runtime_key_prefix") {
        cx.note(
            &runtime.path,
            "weir has no runtime: the weights stay as written; to shift traffic, edit them (weir reloads the file when it changes)",
        );
    }
    o.finish(cx);
    let mut out = Vec::new();
    let mut ok = true;
    for c in cx.seq(&clusters?) {
        let Some(mut w) = cx.obj(&c, "ClusterWeight") else {
            ok = false;
            continue;
        };
        let name = w.require(cx, "name").and_then(|n| cx.string(&n));
        let weight = w.require(cx, "weight").and_then(|n| cx.u32(&n));
        w.finish(cx);
        match (name, weight) {
            (Some(name), Some(weight)) => out.push(WeightedClusterConfig { name, weight }),
            _ => ok = false,
        }
    }
    if let Some((path, total)) = total {
        let sum: u64 = out.iter().map(|w| u64::from(w.weight)).sum();
        if u64::from(total) != sum {
            cx.refuse(
                &path,
                format!("weir's weights are relative: total_weight {total} must be their sum ({sum}), or left out"),
            );
        }
    }
    ok.then_some(out)
}

/// `Some(None)`: a policy without conditions, which never retries.
fn retry_policy(cx: &mut Cx, f: &Field<'_>) -> Option<Option<RetryPolicyConfig>> {
    let mut o = cx.obj(f, "RetryPolicy")?;
    let conditions = o.get("retry_on").map(|r| retry_on(cx, &r));
    let num_retries = o.get("num_retries").map(|n| cx.u32(&n));
    let per_try_timeout = o.get("per_try_timeout").map(|t| cx.duration(&t));
    let codes = o.get("retriable_status_codes").map(|c| {
        cx.seq(&c)
            .iter()
            .map(|code| cx.u16(code))
            .collect::<Option<Vec<u16>>>()
    });
    let back_off = o.get("retry_back_off").map(|b| retry_back_off(cx, &b));
    let headers = o.get("retriable_headers").map(|h| {
        cx.seq(&h)
            .iter()
            .map(|m| match header_matcher(cx, m)? {
                HeaderCondition::Header(m) => Some(m),
                HeaderCondition::Method(_) => {
                    cx.refuse(&m.path, "a response has no :method to match");
                    None
                }
            })
            .collect::<Option<Vec<_>>>()
    });
    let predicates = o
        .get("retry_host_predicate")
        .map(|p| retry_host_predicates(cx, &p));
    let max_attempts = o
        .get("host_selection_retry_max_attempts")
        .map(|n| cx.u32(&n));
    let path = o.path.clone();
    o.finish(cx);
    let retry_on = conditions.unwrap_or(Some(Vec::new()))?;
    let policy = RetryPolicyConfig {
        retry_on,
        retriable_status_codes: codes.unwrap_or(Some(Vec::new()))?,
        retriable_headers: headers.unwrap_or(Some(Vec::new()))?,
        retry_host_predicate: predicates.unwrap_or(Some(Vec::new()))?,
        host_selection_retry_max_attempts: max_attempts.unwrap_or(Some(1))?,
        num_retries: num_retries.unwrap_or(Some(ENVOY_NUM_RETRIES))?,
        per_try_timeout: optional(per_try_timeout)?,
        retry_back_off: back_off.unwrap_or(Some(RetryBackOffConfig::default()))?,
    };
    if policy.retry_on.is_empty() {
        cx.note(
            &path,
            "a retry policy without retry_on never retries: left out",
        );
        return Some(None);
    }
    Some(Some(policy))
}

/// `retry_host_predicate`: the predicates weir has (`previous_hosts`).
fn retry_host_predicates(cx: &mut Cx, f: &Field<'_>) -> Option<Vec<RetryHostPredicate>> {
    let mut out = Vec::new();
    let mut ok = true;
    for item in cx.seq(f) {
        let Some(mut o) = cx.obj(&item, "RetryHostPredicate") else {
            ok = false;
            continue;
        };
        let name = o.require(cx, "name").and_then(|n| cx.string(&n));
        // PreviousHostsPredicate has no fields: its typed_config names only the type.
        o.skip(&["typed_config"]);
        o.finish(cx);
        match name.as_deref() {
            Some("envoy.retry_host_predicates.previous_hosts") => {
                out.push(RetryHostPredicate::PreviousHosts)
            }
            Some(other) => {
                ok = false;
                cx.refuse(
                    &item.path.key("name"),
                    format!(
                        "retry host predicate {other:?} is not supported: weir has envoy.retry_host_predicates.previous_hosts"
                    ),
                );
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Envoy's comma-separated conditions, each one weir has by the same name.
fn retry_on(cx: &mut Cx, f: &Field<'_>) -> Option<Vec<RetryOn>> {
    let text = cx.str(f)?;
    let mut out = Vec::new();
    let mut ok = true;
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match serde_yaml::from_value::<RetryOn>(Value::from(item)) {
            Ok(c) => out.push(c),
            Err(_) => {
                ok = false;
                cx.refuse(
                    &f.path,
                    format!(
                        "retry condition {item:?} is not supported: weir has {}",
                        weir_retry_conditions()
                    ),
                );
            }
        }
    }
    ok.then_some(out)
}

/// weir's retry condition names, read from its own type.
fn weir_retry_conditions() -> String {
    const CANDIDATES: [&str; 16] = [
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ];
    CANDIDATES
        .iter()
        .filter(|c| serde_yaml::from_value::<RetryOn>(Value::from(**c)).is_ok())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

fn retry_back_off(cx: &mut Cx, f: &Field<'_>) -> Option<RetryBackOffConfig> {
    let mut o = cx.obj(f, "RetryBackOff")?;
    let base = o.require(cx, "base_interval").and_then(|b| cx.duration(&b));
    let max = o.get("max_interval").map(|m| cx.duration(&m));
    o.finish(cx);
    Some(RetryBackOffConfig {
        base_interval: base?,
        max_interval: optional(max)?,
    })
}

fn direct_response(cx: &mut Cx, f: &Field<'_>) -> Option<DirectResponseConfig> {
    let mut o = cx.obj(f, "DirectResponseAction")?;
    let status = o.require(cx, "status").and_then(|s| cx.u16(&s));
    let body = match o.get("body") {
        Some(b) => Some(inline_body(cx, &b)?),
        None => None,
    };
    o.finish(cx);
    Some(DirectResponseConfig {
        status: status?,
        body,
    })
}

fn inline_body(cx: &mut Cx, f: &Field<'_>) -> Option<String> {
    let mut o = cx.obj(f, "DataSource")?;
    let text = o.get("inline_string");
    for other in ["filename", "inline_bytes", "environment_variable"] {
        if let Some(x) = o.get(other) {
            cx.refuse(
                &x.path,
                "weir takes a direct response body inline: body.inline_string",
            );
        }
    }
    o.finish(cx);
    cx.string(&text?)
}

fn redirect(
    cx: &mut Cx,
    f: &Field<'_>,
    prefix_match: bool,
    at: &Served<'_>,
) -> Option<RedirectConfig> {
    let mut o = cx.obj(f, "RedirectAction")?;
    let mut scheme = o.get("scheme_redirect").map(|s| cx.string(&s));
    if let Some(h) = o.get("https_redirect")
        && cx.bool(&h) == Some(true)
    {
        if scheme.is_some() {
            cx.refuse(
                &h.path,
                "only one of https_redirect and scheme_redirect may be set",
            );
        }
        scheme = Some(Some("https".to_owned()));
    }
    let host = o.get("host_redirect").map(|h| cx.string(&h));
    let port = o.get("port_redirect").map(|p| cx.u16(&p));
    let path = o.get("path_redirect").map(|p| cx.string(&p));
    let prefix = o.get("prefix_rewrite").map(|p| {
        if !prefix_match {
            cx.refuse(
                &p.path,
                "weir applies prefix_rewrite only to a prefix match",
            );
        }
        cx.string(&p)
    });
    let code = match o.get("response_code") {
        Some(c) => cx.choice(
            &c,
            &[
                ("MOVED_PERMANENTLY", 301),
                ("FOUND", 302),
                ("SEE_OTHER", 303),
                ("TEMPORARY_REDIRECT", 307),
                ("PERMANENT_REDIRECT", 308),
            ],
            "weir redirects with 301, 302, 303, 307 or 308",
        ),
        None => Some(301),
    };
    if let Some(s) = o.get("strip_query")
        && cx.bool(&s) == Some(true)
    {
        cx.refuse(&s.path, "weir has no strip_query");
    }
    let here = o.path.clone();
    o.finish(cx);
    if at.tls && scheme.is_none() {
        cx.note(
            &here,
            "on this TLS listener Envoy redirects to https (the request's scheme); weir redirects to http unless scheme_redirect is set",
        );
    }
    Some(RedirectConfig {
        scheme_redirect: optional(scheme)?,
        host_redirect: optional(host)?,
        port_redirect: optional(port)?,
        path_redirect: optional(path)?,
        prefix_rewrite: optional(prefix)?,
        response_code: code?,
    })
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
