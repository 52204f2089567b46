//! `weir status`: asks a running agent's admin listener for `/status` and
//! prints it for people (tables, as `cilium status` does) or as the JSON it
//! came as (`-o json`). The admin listener is on loopback (the DaemonSet's
//! is 127.0.0.1:15000), so this runs on the node or in the agent's pod:
//! `kubectl -n weir-system exec ds/weir -- weir status`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// The DaemonSet's admin address (daemonset/configmap.yaml).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

/// How long the agent has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Largest `/status` document read (a node's pods, listeners and clusters).
const MAX_BODY: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot reach the agent's admin listener at {0}: {1} (is `weir run` up, and is this its admin address? see `admin.address` in its config)"
    )]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("reading /status from {0}: {1}")]
    Read(SocketAddr, #[source] std::io::Error),
    #[error("{0} answered /status with {1:?}: not a weir agent, or too old for `weir status`")]
    Status(SocketAddr, String),
    #[error("{0}: /status is not JSON: {1}")]
    Json(SocketAddr, #[source] serde_json::Error),
}

/// `/status` from the agent at `admin`.
pub fn fetch(admin: SocketAddr) -> Result<Value, StatusError> {
    let mut stream =
        TcpStream::connect_timeout(&admin, TIMEOUT).map_err(|e| StatusError::Connect(admin, e))?;
    let read = |e| StatusError::Read(admin, e);
    stream.set_read_timeout(Some(TIMEOUT)).map_err(read)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(read)?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .map_err(read)?;
    let mut response = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut response)
        .map_err(read)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(StatusError::Status(admin, status_line.to_owned()));
    }
    serde_json::from_str(body).map_err(|e| StatusError::Json(admin, e))
}

/// The status as tables for people.
pub fn render(s: &Value) -> String {
    let mut out = String::new();
    let ready = if s["ready"].as_bool() == Some(true) {
        "ready"
    } else {
        "NOT READY"
    };
    let _ = writeln!(
        out,
        "weir {}, up {}, {ready}",
        text(&s["version"]),
        duration(s["uptime_seconds"].as_u64().unwrap_or(0))
    );
    config(&mut out, &s["config"]);
    datapath(&mut out, &s["datapath"]);
    pods(&mut out, &s["pods"]);
    let policy = &s["outbound_traffic_policy"];
    if !policy.is_null() {
        let _ = writeln!(
            out,
            "\nOutbound traffic no listener claims: {}",
            text(policy)
        );
    }
    listeners(&mut out, &s["listeners"]);
    clusters(&mut out, &s["clusters"]);
    out
}

fn config(out: &mut String, c: &Value) {
    let now = crate::proxy::runtime::unix_now();
    let _ = write!(
        out,
        "Config: generation {}, applied {} ago",
        c["generation"].as_u64().unwrap_or(0),
        duration(now.saturating_sub(c["applied_at_unix"].as_u64().unwrap_or(now)))
    );
    match c["last_refused"].as_object() {
        Some(r) => {
            let at = r.get("at_unix").and_then(Value::as_u64).unwrap_or(now);
            let _ = writeln!(
                out,
                "; a reload was refused {} ago (the generation above keeps serving):\n  {}",
                duration(now.saturating_sub(at)),
                r.get("error").map(text).unwrap_or_default()
            );
        }
        None => out.push('\n'),
    }
}

fn datapath(out: &mut String, d: &Value) {
    if d.is_null() {
        out.push_str("Data path: none (the proxy alone)\n");
        return;
    }
    let programs: Vec<String> = list(&d["programs"]).iter().map(text).collect();
    let _ = writeln!(
        out,
        "Data path: cgroup {}; programs {}",
        text(&d["cgroup"]["layout"]),
        programs.join(", ")
    );
    for f in list(&d["features"]) {
        let on = if f["on"].as_bool() == Some(true) {
            "on "
        } else {
            "off"
        };
        let _ = writeln!(out, "  {on} {}: {}", text(&f["name"]), text(&f["why"]));
    }
}

fn pods(out: &mut String, p: &Value) {
    if p.is_null() {
        return;
    }
    let pods = list(p);
    let enrolled = pods
        .iter()
        .filter(|p| p["state"].as_str() == Some("enrolled"))
        .count();
    let _ = writeln!(
        out,
        "\nPods on this node: {} listed, {enrolled} enrolled",
        pods.len()
    );
    let rows: Vec<Vec<String>> = pods
        .iter()
        .map(|p| {
            let policy = &p["policy"];
            let ips: Vec<String> = list(&p["ips"]).iter().map(text).collect();
            vec![
                text(&p["pod"]),
                text(&p["state"]),
                ips.join(","),
                if policy.is_null() {
                    String::new()
                } else {
                    text(&policy["fail_mode"])
                },
                text(&p["reason"]),
            ]
        })
        .collect();
    table(out, &["POD", "STATE", "IPS", "FAIL MODE", "WHY"], &rows);
}

fn listeners(out: &mut String, l: &Value) {
    let rows: Vec<Vec<String>> = list(l)
        .iter()
        .map(|l| {
            let how = if l["bind_to_port"].as_bool() == Some(false) {
                "claims (bind_to_port: false)"
            } else {
                "bound"
            };
            vec![text(&l["name"]), text(&l["address"]), how.to_owned()]
        })
        .collect();
    let _ = writeln!(out, "\nListeners: {}", rows.len());
    table(out, &["NAME", "ADDRESS", ""], &rows);
}

fn clusters(out: &mut String, c: &Value) {
    let rows: Vec<Vec<String>> = list(c)
        .iter()
        .map(|c| {
            let (n, healthy) = (
                c["endpoints"].as_u64().unwrap_or(0),
                c["healthy"].as_u64().unwrap_or(0),
            );
            let health = if c["initialized"].as_bool() == Some(false) {
                "resolving".to_owned()
            } else if text(&c["type"]) == "DYNAMIC_FORWARD_PROXY" {
                format!("{n} hosts cached")
            } else if n == 0 {
                "NO ENDPOINTS".to_owned()
            } else if healthy < n {
                format!("{healthy}/{n} healthy ({} ejected)", n - healthy)
            } else {
                format!("{healthy}/{n} healthy")
            };
            vec![text(&c["name"]), text(&c["type"]), health]
        })
        .collect();
    let _ = writeln!(out, "\nClusters: {}", rows.len());
    table(out, &["NAME", "TYPE", "ENDPOINTS"], &rows);
}

/// Rows under a header, columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::from(" ");
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(l, " {cell:<w$} ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A JSON string without quotes; other values as JSON; null as nothing.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(250), "4m10s");
        assert_eq!(duration(7500), "2h5m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 59), "3d4h");
    }

    #[test]
    fn a_status_renders_as_tables() {
        let now = crate::proxy::runtime::unix_now();
        let s = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 75, "ready": true,
            "config": {"generation": 2, "applied_at_unix": now - 10,
                       "last_refused": {"at_unix": now - 5, "error": "c.yaml: clusters[0].name (line 3): empty"}},
            "datapath": {"cgroup": {"layout": "v2"}, "programs": ["weir_connect4"],
                         "features": [{"name": "egress redirect", "on": true, "why": "on each pod's cgroup"}]},
            "pods": [
                {"pod": "default/a", "uid": "1", "state": "enrolled", "ips": ["192.0.2.2"], "policy": {"fail_mode": "open"}},
                {"pod": "default/b", "uid": "2", "state": "invalid_annotation", "reason": "weir.dev/max-cpu: \"x\" is not a quantity", "ips": ["192.0.2.3"]}
            ],
            "outbound_traffic_policy": "ALLOW_ANY",
            "listeners": [{"name": "http", "address": "0.0.0.0:80", "bind_to_port": false}],
            "clusters": [
                {"name": "up", "type": "STATIC", "endpoints": 2, "healthy": 1, "initialized": true},
                {"name": "dns", "type": "STRICT_DNS", "endpoints": 0, "healthy": 0, "initialized": false}
            ]
        });
        let out = render(&s);
        for want in [
            "weir 0.1.0, up 1m15s, ready",
            "Config: generation 2, applied 10s ago; a reload was refused 5s ago (the generation above keeps serving):\n  c.yaml: clusters[0].name (line 3): empty",
            "Data path: cgroup v2; programs weir_connect4",
            "  on  egress redirect: on each pod's cgroup",
            "Pods on this node: 2 listed, 1 enrolled",
            "  default/a  enrolled            192.0.2.2  open",
            "  default/b  invalid_annotation  192.0.2.3             weir.dev/max-cpu: \"x\" is not a quantity",
            "Outbound traffic no listener claims: ALLOW_ANY",
            "  http  0.0.0.0:80  claims (bind_to_port: false)",
            "  up    STATIC      1/2 healthy (1 ejected)",
            "  dns   STRICT_DNS  resolving",
        ] {
            assert!(out.contains(want), "{want:?} not in:\n{out}");
        }
    }
}
