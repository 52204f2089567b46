//! Envoy messages used all over a bootstrap: addresses, data sources,
//! header additions and string matchers.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::walk::{Cx, Field};
use crate::config::{HeaderValueOptionConfig, ValueMatch};

/// An `Address` holding a `socket_address`: its address text and port.
pub(super) fn socket_address(cx: &mut Cx, f: &Field<'_>) -> Option<(String, u16)> {
    let mut addr = cx.obj(f, "Address")?;
    let socket = addr.get("socket_address");
    let mut other_kind = false;
    for other in ["pipe", "envoy_internal_address"] {
        if let Some(x) = addr.get(other) {
            other_kind = true;
            cx.refuse(&x.path, "weir listens and connects over TCP only");
        }
    }
    let path = addr.path.clone();
    addr.finish(cx);
    let Some(socket) = socket else {
        if !other_kind {
            cx.refuse(&path, "socket_address is required");
        }
        return None;
    };
    let mut o = cx.obj(&socket, "SocketAddress")?;
    let address = o.require(cx, "address").and_then(|a| cx.string(&a));
    let port = match o.get("port_value") {
        Some(p) => cx.u16(&p),
        None => {
            if let Some(named) = o.get("named_port") {
                cx.refuse(&named.path, "weir needs a port number (port_value)");
            } else {
                cx.refuse(&o.path, "port_value is required");
            }
            None
        }
    };
    if let Some(protocol) = o.get("protocol") {
        cx.choice(&protocol, &[("TCP", ())], "weir speaks TCP only");
    }
    o.finish(cx);
    Some((address?, port?))
}

/// A socket address that must be an IP (listeners, admin, DNS servers).
pub(super) fn ip_socket_address(cx: &mut Cx, f: &Field<'_>, what: &str) -> Option<SocketAddr> {
    let (host, port) = socket_address(cx, f)?;
    match host.parse::<IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, port)),
        Err(_) => {
            cx.refuse(
                &f.path.key("socket_address").key("address"),
                format!("{what} must be an IP address, found {host:?}"),
            );
            None
        }
    }
}

/// PEM from a `DataSource`: its `filename`, or its `inline_string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    /// As weir's `<name>_file` and `<name>` fields.
    pub(super) fn split(pem: Option<Self>) -> (Option<PathBuf>, Option<String>) {
        match pem {
            Some(Pem::File(file)) => (Some(file), None),
            Some(Pem::Inline(text)) => (None, Some(text)),
            None => (None, None),
        }
    }
}

/// A `DataSource` holding PEM; `what` names its contents in refusals.
pub(super) fn data_source_pem(cx: &mut Cx, f: &Field<'_>, what: &str) -> Option<Pem> {
    let mut o = cx.obj(f, "DataSource")?;
    let file = o.get("filename");
    let inline = o.get("inline_string");
    let mut other = false;
    for field in ["inline_bytes", "environment_variable"] {
        if let Some(x) = o.get(field) {
            other = true;
            cx.refuse(
                &x.path,
                format!("weir takes the {what} from `filename` or `inline_string` only (PEM text)"),
            );
        }
    }
    let path = o.path.clone();
    o.finish(cx);
    match (file, inline) {
        (Some(_), Some(_)) => {
            cx.refuse(
                &path,
                "a DataSource holds one of filename and inline_string",
            );
            None
        }
        (Some(file), None) if !other => pem_file(cx, &file).map(Pem::File),
        (None, Some(text)) if !other => cx.string(&text).map(Pem::Inline),
        (None, None) if !other => {
            cx.refuse(&path, "filename or inline_string is required");
            None
        }
        _ => None,
    }
}

fn pem_file(cx: &mut Cx, file: &Field<'_>) -> Option<PathBuf> {
    let name = PathBuf::from(cx.string(file)?);
    if !name.is_file() {
        // Converting usually happens away from where weir runs, so a file
        // missing here is worth a word, not a refusal.
        cx.note(
            &file.path,
            format!(
                "{} does not exist on this machine; weir check-config and weir proxy need it where weir runs",
                name.display()
            ),
        );
    }
    Some(name)
}

/// `request_headers_to_add` / `response_headers_to_add`: `HeaderValueOption`s.
pub(super) fn headers_to_add(cx: &mut Cx, f: &Field<'_>) -> Vec<HeaderValueOptionConfig> {
    cx.seq(f)
        .iter()
        .filter_map(|item| header_value_option(cx, item))
        .collect()
}

fn header_value_option(cx: &mut Cx, f: &Field<'_>) -> Option<HeaderValueOptionConfig> {
    let mut o = cx.obj(f, "HeaderValueOption")?;
    let header = o.require(cx, "header");
    let append = o
        .get("append")
        .and_then(|a| cx.bool(&a).map(|b| (a.path, b)));
    let mut refused = false;
    let action = o.get("append_action").and_then(|a| {
        let choice = cx.choice(
            &a,
            &[
                ("APPEND_IF_EXISTS_OR_ADD", true),
                ("OVERWRITE_IF_EXISTS_OR_ADD", false),
            ],
            "weir adds a value (APPEND_IF_EXISTS_OR_ADD) or replaces the header's values (OVERWRITE_IF_EXISTS_OR_ADD)",
        );
        refused |= choice.is_none();
        choice.map(|c| (a.path, c))
    });
    if let Some(keep) = o.get("keep_empty_value")
        && cx.bool(&keep) == Some(true)
    {
        cx.refuse(&keep.path, "weir has no keep_empty_value");
    }
    o.finish(cx);
    let append = match (append, action) {
        (Some((path, _)), Some(_)) => {
            cx.refuse(&path, "append and append_action cannot both be set");
            return None;
        }
        (Some((_, a)), None) | (None, Some((_, a))) => a,
        // Envoy's default, APPEND_IF_EXISTS_OR_ADD.
        (None, None) => true,
    };
    let mut h = cx.obj(&header?, "HeaderValue")?;
    let name = h.require(cx, "key").and_then(|k| cx.string(&k));
    let value = match h.get("value") {
        Some(v) => cx.str(&v).and_then(|text| header_value(cx, &v, text)),
        None => {
            if let Some(raw) = h.get("raw_value") {
                cx.refuse(&raw.path, "weir takes header values as text: use value");
                None
            } else {
                Some(String::new())
            }
        }
    };
    h.finish(cx);
    if refused {
        return None;
    }
    Some(HeaderValueOptionConfig {
        name: name?,
        value: value?,
        append,
    })
}

/// Envoy expands `%COMMAND%` in added header values and writes a literal
/// `%` as `%%`; weir adds values as written.
fn header_value(cx: &mut Cx, f: &Field<'_>, text: &str) -> Option<String> {
    let literal = text.replace("%%", "");
    if literal.contains('%') {
        cx.refuse(
            &f.path,
            format!(
                "weir adds header values as written: Envoy's %...% substitutions in {text:?} are not supported"
            ),
        );
        return None;
    }
    Some(text.replace("%%", "%"))
}

/// Envoy's `StringMatcher` as weir's value match. Kinds weir lacks become
/// an equivalent full-match regex (weir anchors `safe_regex`).
pub(super) fn string_matcher(cx: &mut Cx, f: &Field<'_>) -> Option<ValueMatch> {
    let mut o = cx.obj(f, "StringMatcher")?;
    let ignore_case = o
        .get("ignore_case")
        .and_then(|i| cx.bool(&i))
        .unwrap_or(false);
    let mut found = Vec::new();
    for kind in ["exact", "prefix", "suffix", "contains", "safe_regex"] {
        if let Some(x) = o.get(kind) {
            found.push((kind, x));
        }
    }
    o.finish(cx);
    let (kind, x) = match found.len() {
        1 => found.remove(0),
        0 => {
            cx.refuse(
                &f.path,
                "one of exact, prefix, suffix, contains or safe_regex is required",
            );
            return None;
        }
        _ => {
            cx.refuse(
                &found[1].1.path,
                format!("only one of {} and {} may be set", found[0].0, found[1].0),
            );
            return None;
        }
    };
    if kind == "safe_regex" {
        // Envoy ignores ignore_case for a regex.
        return regex_matcher(cx, &x).map(ValueMatch::SafeRegex);
    }
    let text = cx.string(&x)?;
    let escaped = regex::escape(&text);
    let flags = if ignore_case { "(?is)" } else { "(?s)" };
    Some(match kind {
        "exact" if !ignore_case => ValueMatch::Exact(text),
        "exact" => ValueMatch::SafeRegex(format!("(?i){escaped}")),
        "prefix" => ValueMatch::SafeRegex(format!("{flags}{escaped}.*")),
        "suffix" => ValueMatch::SafeRegex(format!("{flags}.*{escaped}")),
        _ => ValueMatch::SafeRegex(format!("{flags}.*{escaped}.*")),
    })
}

/// A `RegexMatcher` (`{google_re2: {}, regex: ...}`): its regex.
pub(super) fn regex_matcher(cx: &mut Cx, f: &Field<'_>) -> Option<String> {
    let mut o = cx.obj(f, "RegexMatcher")?;
    let regex = o.require(cx, "regex").and_then(|r| cx.string(&r));
    if let Some(engine) = o.get("google_re2")
        && let Some(mut re2) = cx.obj(&engine, "GoogleRE2")
    {
        re2.skip(&["max_program_size"]);
        re2.finish(cx);
    }
    o.finish(cx);
    regex
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DocPath;

    fn run<T>(yaml: &str, read: impl FnOnce(&mut Cx, &Field<'_>) -> T) -> (T, Cx) {
        let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let mut cx = Cx::default();
        let out = read(&mut cx, &Field::new(DocPath::root().key("x"), &value));
        (out, cx)
    }

    fn refusals(cx: &Cx) -> Vec<String> {
        cx.refusals
            .iter()
            .map(|(p, m)| format!("{p}: {m}"))
            .collect()
    }

    #[test]
    fn socket_addresses() {
        let (a, cx) = run(
            "{socket_address: {address: 0.0.0.0, port_value: 80, protocol: TCP}}",
            |cx, f| ip_socket_address(cx, f, "a listener address"),
        );
        assert_eq!(a, Some("0.0.0.0:80".parse().unwrap()));
        assert!(cx.refusals.is_empty());
        let (a, cx) = run(
            "{socket_address: {address: '::', port_value: 80}}",
            |cx, f| ip_socket_address(cx, f, "a listener address"),
        );
        assert_eq!(a, Some("[::]:80".parse().unwrap()));
        assert!(cx.refusals.is_empty());
        let (_, cx) = run(
            "{socket_address: {address: example.com, port_value: 80}}",
            |cx, f| ip_socket_address(cx, f, "a listener address"),
        );
        assert_eq!(
            refusals(&cx),
            [
                "x.socket_address.address: a listener address must be an IP address, found \"example.com\""
            ]
        );
        let (_, cx) = run(
            "{socket_address: {address: 1.2.3.4, port_value: 53, protocol: UDP}}",
            socket_address,
        );
        assert_eq!(
            refusals(&cx),
            ["x.socket_address.protocol: \"UDP\" is not supported: weir speaks TCP only"]
        );
        let (_, cx) = run("{pipe: {path: /tmp/s}}", socket_address);
        assert_eq!(
            refusals(&cx),
            ["x.pipe: weir listens and connects over TCP only"]
        );
        let (_, cx) = run("{}", socket_address);
        assert_eq!(refusals(&cx), ["x: socket_address is required"]);
    }

    #[test]
    fn data_sources_are_files_or_inline_pem() {
        let pem = |yaml: &str| run(yaml, |cx, f| data_source_pem(cx, f, "certificate"));
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, "x").unwrap();
        let (file, cx) = pem(&format!("{{filename: {}}}", cert.display()));
        assert_eq!(file, Some(Pem::File(cert)));
        assert!(cx.refusals.is_empty() && cx.notes.is_empty());
        let (file, cx) = pem("{filename: /nonexistent/c.pem}");
        assert_eq!(file, Some(Pem::File(PathBuf::from("/nonexistent/c.pem"))));
        assert_eq!(
            cx.notes[0].1,
            "/nonexistent/c.pem does not exist on this machine; weir check-config and weir proxy need it where weir runs"
        );
        let (inline, cx) = pem("{inline_string: \"-----BEGIN CERTIFICATE-----\\n\"}");
        assert_eq!(
            inline,
            Some(Pem::Inline("-----BEGIN CERTIFICATE-----\n".into()))
        );
        assert!(cx.refusals.is_empty() && cx.notes.is_empty());
        for (yaml, refusal) in [
            (
                "{inline_bytes: LS0t}",
                "x.inline_bytes: weir takes the certificate from `filename` or `inline_string` only (PEM text)",
            ),
            (
                "{environment_variable: CERT}",
                "x.environment_variable: weir takes the certificate from `filename` or `inline_string` only (PEM text)",
            ),
            (
                "{filename: /c.pem, inline_string: x}",
                "x: a DataSource holds one of filename and inline_string",
            ),
            ("{}", "x: filename or inline_string is required"),
        ] {
            let (got, cx) = pem(yaml);
            assert_eq!(got, None, "{yaml}");
            assert_eq!(refusals(&cx), [refusal], "{yaml}");
        }
    }

    #[test]
    fn header_additions() {
        let (h, cx) = run(
            "[{header: {key: x-a, value: '1'}}, {header: {key: x-b, value: '100%%'}, append: false},
              {header: {key: x-c, value: v}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]",
            headers_to_add,
        );
        assert!(cx.refusals.is_empty(), "{:?}", cx.refusals);
        let h: Vec<_> = h
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str(), h.append))
            .collect();
        assert_eq!(
            h,
            [
                ("x-a", "1", true),
                ("x-b", "100%", false),
                ("x-c", "v", false)
            ]
        );
        let (h, cx) = run(
            "[{header: {key: x-client, value: '%DOWNSTREAM_REMOTE_ADDRESS%'}},
              {header: {key: x-d, value: v}, append_action: ADD_IF_ABSENT}]",
            headers_to_add,
        );
        assert!(h.is_empty());
        assert_eq!(
            refusals(&cx),
            [
                "x[0].header.value: weir adds header values as written: Envoy's %...% substitutions in \"%DOWNSTREAM_REMOTE_ADDRESS%\" are not supported",
                "x[1].append_action: \"ADD_IF_ABSENT\" is not supported: weir adds a value (APPEND_IF_EXISTS_OR_ADD) or replaces the header's values (OVERWRITE_IF_EXISTS_OR_ADD)"
            ]
        );
    }

    #[test]
    fn string_matchers_become_weir_value_matches() {
        let cases = [
            ("{exact: a.b}", ValueMatch::Exact("a.b".into())),
            (
                "{exact: a.b, ignore_case: true}",
                ValueMatch::SafeRegex("(?i)a\\.b".into()),
            ),
            ("{prefix: a.}", ValueMatch::SafeRegex("(?s)a\\..*".into())),
            ("{suffix: .b}", ValueMatch::SafeRegex("(?s).*\\.b".into())),
            (
                "{contains: x, ignore_case: true}",
                ValueMatch::SafeRegex("(?is).*x.*".into()),
            ),
            (
                "{safe_regex: {google_re2: {}, regex: 'v[0-9]+'}}",
                ValueMatch::SafeRegex("v[0-9]+".into()),
            ),
        ];
        for (yaml, want) in cases {
            let (got, cx) = run(yaml, string_matcher);
            assert_eq!(got, Some(want), "{yaml}");
            assert!(cx.refusals.is_empty(), "{yaml}: {:?}", cx.refusals);
        }
        let (_, cx) = run("{exact: a, prefix: b}", string_matcher);
        assert_eq!(
            refusals(&cx),
            ["x.prefix: only one of exact and prefix may be set"]
        );
    }

    #[test]
    fn regexes_from_prefix_suffix_contains_match_as_envoy_does() {
        let matches =
            |re: &str, s: &str| crate::config::compile_full_match(re).unwrap().is_match(s);
        let (Some(ValueMatch::SafeRegex(re)), _) = run("{prefix: 'a.'}", string_matcher) else {
            panic!()
        };
        assert!(matches(&re, "a.xyz") && !matches(&re, "abxyz") && !matches(&re, "xa.y"));
        let (Some(ValueMatch::SafeRegex(re)), _) =
            run("{contains: 'B', ignore_case: true}", string_matcher)
        else {
            panic!()
        };
        assert!(matches(&re, "abc") && !matches(&re, "ac"));
    }
}
