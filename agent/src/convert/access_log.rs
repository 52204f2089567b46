//! An HTTP connection manager's `access_log`: Envoy's file, stdout and
//! stderr loggers in Envoy's default text format or Istio's default JSON,
//! which are the two formats weir writes; anything else is refused.

use super::walk::{Cx, Field, type_name};
use crate::config::{AccessLogConfig, AccessLogFormat};

const FILE_TYPES: [&str; 2] = [
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "envoy.config.accesslog.v2.FileAccessLog",
];
const STDOUT_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

/// Envoy's default format string, the one weir's `text` writes.
pub(super) const ENVOY_DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% \
%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \
%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Istio's default JSON access log, the one weir's `json` writes: each key
/// with the command operators Istio's releases have used for it.
pub(super) const ISTIO_JSON: [(&str, &[&str]); 24] = [
    ("start_time", &["%START_TIME%"]),
    ("route_name", &["%ROUTE_NAME%"]),
    ("method", &["%REQ(:METHOD)%"]),
    ("path", &["%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"]),
    ("protocol", &["%PROTOCOL%"]),
    ("response_code", &["%RESPONSE_CODE%"]),
    ("response_flags", &["%RESPONSE_FLAGS%"]),
    ("response_code_details", &["%RESPONSE_CODE_DETAILS%"]),
    (
        "connection_termination_details",
        &["%CONNECTION_TERMINATION_DETAILS%"],
    ),
    (
        "upstream_transport_failure_reason",
        &["%UPSTREAM_TRANSPORT_FAILURE_REASON%"],
    ),
    ("bytes_received", &["%BYTES_RECEIVED%"]),
    ("bytes_sent", &["%BYTES_SENT%"]),
    ("duration", &["%DURATION%"]),
    (
        "upstream_service_time",
        &["%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"],
    ),
    ("x_forwarded_for", &["%REQ(X-FORWARDED-FOR)%"]),
    ("user_agent", &["%REQ(USER-AGENT)%"]),
    ("request_id", &["%REQ(X-REQUEST-ID)%"]),
    ("authority", &["%REQ(:AUTHORITY)%"]),
    ("upstream_host", &["%UPSTREAM_HOST%"]),
    (
        "upstream_cluster",
        &["%UPSTREAM_CLUSTER%", "%UPSTREAM_CLUSTER_RAW%"],
    ),
    ("upstream_local_address", &["%UPSTREAM_LOCAL_ADDRESS%"]),
    ("downstream_local_address", &["%DOWNSTREAM_LOCAL_ADDRESS%"]),
    (
        "downstream_remote_address",
        &["%DOWNSTREAM_REMOTE_ADDRESS%"],
    ),
    ("requested_server_name", &["%REQUESTED_SERVER_NAME%"]),
];

const FORMATS: &str = "weir writes Envoy's default text format and Istio's default JSON only";

/// Every logger of the list; `None` when one was refused.
pub(super) fn access_logs(cx: &mut Cx, f: &Field<'_>) -> Option<Vec<AccessLogConfig>> {
    let mut logs = Some(Vec::new());
    for item in cx.seq(f) {
        match (access_log(cx, &item), logs.as_mut()) {
            (Some(log), Some(all)) => all.push(log),
            _ => logs = None,
        }
    }
    logs
}

fn access_log(cx: &mut Cx, f: &Field<'_>) -> Option<AccessLogConfig> {
    let mut o = cx.obj(f, "AccessLog")?;
    o.skip(&["name"]);
    let config = o.require(cx, "typed_config");
    o.finish(cx);
    let config = config?;
    let kind = type_name(Some(&config));
    let mut t = cx.obj(&config, "FileAccessLog")?;
    t.skip(&["@type"]);
    let path = match kind {
        Some(k) if FILE_TYPES.contains(&k) => t
            .require(cx, "path")
            .and_then(|p| cx.string(&p))
            .map(Into::into),
        Some(STDOUT_TYPE) => Some("/dev/stdout".into()),
        Some(STDERR_TYPE) => Some("/dev/stderr".into()),
        other => {
            cx.refuse(
                &config.path,
                format!(
                    "access logger {} is not supported: weir writes to files, stdout and stderr \
                     (envoy.access_loggers.file, stdout, stderr)",
                    other.unwrap_or("without @type")
                ),
            );
            t.unread_keys();
            None
        }
    };
    let format = match t.get("log_format") {
        Some(lf) => log_format(cx, &lf),
        None => Some(AccessLogFormat::Text),
    };
    t.finish(cx);
    Some(AccessLogConfig {
        path: path?,
        format: format?,
    })
}

/// A `SubstitutionFormatString`: Envoy's default text or Istio's JSON.
fn log_format(cx: &mut Cx, f: &Field<'_>) -> Option<AccessLogFormat> {
    let mut o = cx.obj(f, "SubstitutionFormatString")?;
    let text = match (o.get("text_format"), o.get("text_format_source")) {
        (Some(t), None) => Some(cx.str(&t).map(|s| (s, t.path))),
        (None, Some(src)) => {
            let mut s = cx.obj(&src, "DataSource")?;
            let inline = s.require(cx, "inline_string");
            s.finish(cx);
            Some(inline.and_then(|i| cx.str(&i).map(|s| (s, i.path))))
        }
        (None, None) => None,
        (Some(_), Some(b)) => {
            cx.refuse(&b.path, "one of text_format and text_format_source");
            Some(None)
        }
    };
    let format = match (text, o.get("json_format")) {
        (Some(text), None) => {
            let (s, path) = text?;
            if s != ENVOY_DEFAULT_FORMAT {
                cx.refuse(&path, format!("{FORMATS}; this is another format string"));
                return None;
            }
            Some(AccessLogFormat::Text)
        }
        (None, Some(json)) => json_format(cx, &json),
        (None, None) => Some(AccessLogFormat::Text),
        (Some(_), Some(j)) => {
            cx.refuse(&j.path, "a log_format has one format");
            None
        }
    };
    o.finish(cx);
    format
}

/// `json_format` with exactly Istio's default keys and operators.
fn json_format(cx: &mut Cx, f: &Field<'_>) -> Option<AccessLogFormat> {
    let mut o = cx.obj(f, "Struct")?;
    let mut ok = true;
    for (key, operators) in ISTIO_JSON {
        let Some(v) = o.get(key) else {
            cx.refuse(&o.path, format!("{FORMATS}; this JSON has no {key:?}"));
            ok = false;
            continue;
        };
        if !cx.str(&v).is_some_and(|s| operators.contains(&s)) {
            cx.refuse(
                &v.path,
                format!("{FORMATS}; Istio's {key:?} is {}", operators[0]),
            );
            ok = false;
        }
    }
    for extra in o.unread_keys() {
        cx.refuse(
            &o.path.key(&extra),
            format!("{FORMATS}; Istio's JSON has no {extra:?}"),
        );
        ok = false;
    }
    o.finish(cx);
    ok.then_some(AccessLogFormat::Json)
}
