//! The two line formats: Envoy's default format string (`text`) and
//! Istio's default JSON keys (`json`).

use std::fmt::Write as _;
use std::time::SystemTime;

use super::record::Record;

/// `2026-12-05T19:04:05.123Z`, as Envoy's `%START_TIME%` (UTC, ms).
fn write_time(out: &mut String, t: SystemTime) {
    let t = time::OffsetDateTime::from(t);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
}

fn text_value(out: &mut String, v: Option<&str>) {
    out.push_str(v.unwrap_or("-"));
}

/// Envoy's default format:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
/// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n`.
/// Values are written as they came, as Envoy writes them (hyper refuses
/// a newline in a header, so a value cannot break the line).
pub fn text(r: &Record, out: &mut String) {
    out.push('[');
    match r.start {
        Some(t) => write_time(out, t),
        None => out.push('-'),
    }
    out.push_str("] \"");
    text_value(out, r.method.as_deref());
    out.push(' ');
    text_value(out, r.path.as_deref());
    out.push(' ');
    text_value(out, r.protocol);
    let _ = write!(out, "\" {} ", r.status);
    r.flags.write_short(out);
    let _ = write!(
        out,
        " {} {} {} ",
        r.bytes_received, r.bytes_sent, r.duration_ms
    );
    text_value(out, r.upstream_service_time.as_deref());
    for v in [
        &r.x_forwarded_for,
        &r.user_agent,
        &r.request_id,
        &r.authority,
    ] {
        out.push_str(" \"");
        text_value(out, v.as_deref());
        out.push('"');
    }
    out.push_str(" \"");
    match r.upstream_host {
        Some(a) => {
            let _ = write!(out, "{a}");
        }
        None => out.push('-'),
    }
    out.push_str("\"\n");
}

/// A JSON string: quotes, backslashes and control characters escaped;
/// everything else (non-ASCII included) as is, which JSON allows.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_opt(out: &mut String, v: Option<&str>) {
    match v {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

/// Istio's default JSON access log (its `accessLogEncoding: JSON`), keys
/// in its order. Numbers are JSON numbers, an unknown value `null`, the
/// flags `-` when none and `upstream_service_time` a string, as Envoy's
/// `json_format` writes them. Keys weir cannot fill are `null`.
pub fn json(r: &Record, out: &mut String) {
    out.push_str("{\"start_time\":");
    match r.start {
        Some(t) => {
            out.push('"');
            write_time(out, t);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"route_name\":null,\"method\":");
    json_opt(out, r.method.as_deref());
    out.push_str(",\"path\":");
    json_opt(out, r.path.as_deref());
    out.push_str(",\"protocol\":");
    json_opt(out, r.protocol);
    let _ = write!(out, ",\"response_code\":{},\"response_flags\":\"", r.status);
    r.flags.write_short(out);
    let _ = write!(
        out,
        "\",\"response_code_details\":null,\"connection_termination_details\":null,\
         \"upstream_transport_failure_reason\":null,\
         \"bytes_received\":{},\"bytes_sent\":{},\"duration\":{},\"upstream_service_time\":",
        r.bytes_received, r.bytes_sent, r.duration_ms
    );
    json_opt(out, r.upstream_service_time.as_deref());
    let headers = [
        ("x_forwarded_for", &r.x_forwarded_for),
        ("user_agent", &r.user_agent),
        ("request_id", &r.request_id),
        ("authority", &r.authority),
    ];
    for (key, v) in headers {
        let _ = write!(out, ",\"{key}\":");
        json_opt(out, v.as_deref());
    }
    let addr = |out: &mut String, a: Option<std::net::SocketAddr>| match a {
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => out.push_str("null"),
    };
    out.push_str(",\"upstream_host\":");
    addr(out, r.upstream_host);
    out.push_str(",\"upstream_cluster\":");
    json_opt(out, r.upstream_cluster.as_deref());
    out.push_str(
        ",\"upstream_local_address\":null,\"downstream_local_address\":null,\
         \"downstream_remote_address\":",
    );
    addr(out, r.downstream_remote);
    out.push_str(",\"requested_server_name\":null}\n");
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::flags::ResponseFlags;
    use super::*;

    fn full() -> Record {
        Record {
            // 2026-12-05T19:04:05.123Z
            start: Some(UNIX_EPOCH + Duration::from_millis(1_796_497_445_123)),
            method: Some("GET".into()),
            path: Some("/api/v1?x=1".into()),
            protocol: Some("HTTP/1.1"),
            status: 200,
            flags: ResponseFlags::NONE,
            bytes_received: 12,
            bytes_sent: 345,
            duration_ms: 7,
            upstream_service_time: Some("5".into()),
            x_forwarded_for: Some("10.0.0.1".into()),
            user_agent: Some("curl/8.5.0".into()),
            request_id: Some("6b4f2c1e-0000-4000-8000-000000000001".into()),
            authority: Some("example.com".into()),
            upstream_host: Some("127.0.0.1:8080".parse().unwrap()),
            upstream_cluster: Some("backend".into()),
            downstream_remote: Some("127.0.0.1:40000".parse().unwrap()),
        }
    }

    fn line(r: &Record, f: fn(&Record, &mut String)) -> String {
        let mut s = String::new();
        f(r, &mut s);
        s
    }

    #[test]
    fn text_is_envoys_default_format() {
        assert_eq!(
            line(&full(), text),
            "[2026-12-05T19:04:05.123Z] \"GET /api/v1?x=1 HTTP/1.1\" 200 - 12 345 7 5 \
             \"10.0.0.1\" \"curl/8.5.0\" \"6b4f2c1e-0000-4000-8000-000000000001\" \
             \"example.com\" \"127.0.0.1:8080\"\n"
        );
    }

    #[test]
    fn text_writes_a_dash_for_what_is_missing() {
        let r = Record {
            flags: ResponseFlags::NO_ROUTE_FOUND,
            status: 404,
            ..Record::default()
        };
        assert_eq!(
            line(&r, text),
            "[-] \"- - -\" 404 NR 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\"\n"
        );
    }

    #[test]
    fn json_has_istios_keys_numbers_and_nulls() {
        let s = line(&full(), json);
        assert!(s.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["start_time"], "2026-12-05T19:04:05.123Z");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["bytes_sent"], 345);
        assert_eq!(v["duration"], 7);
        assert_eq!(v["response_flags"], "-");
        assert_eq!(v["upstream_service_time"], "5");
        assert_eq!(v["upstream_host"], "127.0.0.1:8080");
        assert_eq!(v["upstream_cluster"], "backend");
        assert_eq!(v["downstream_remote_address"], "127.0.0.1:40000");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut istio = vec![
            "start_time",
            "route_name",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "response_code_details",
            "connection_termination_details",
            "upstream_transport_failure_reason",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_service_time",
            "x_forwarded_for",
            "user_agent",
            "request_id",
            "authority",
            "upstream_host",
            "upstream_cluster",
            "upstream_local_address",
            "downstream_local_address",
            "downstream_remote_address",
            "requested_server_name",
        ];
        istio.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, istio);
        let empty: serde_json::Value =
            serde_json::from_str(&line(&Record::default(), json)).unwrap();
        assert_eq!(empty["upstream_host"], serde_json::Value::Null);
        assert_eq!(empty["user_agent"], serde_json::Value::Null);
        assert_eq!(empty["response_code"], 0);
    }

    #[test]
    fn json_escapes_untrusted_values() {
        let r = Record {
            user_agent: Some("a \"quoted\" \\ agent\u{1}, naïve ☃".into()),
            ..Record::default()
        };
        let s = line(&r, json);
        assert!(
            s.contains(r#""user_agent":"a \"quoted\" \\ agent\u0001, naïve ☃""#),
            "{s}"
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["user_agent"], "a \"quoted\" \\ agent\u{1}, naïve ☃");
        assert_eq!(s.matches('\n').count(), 1);
    }
}
