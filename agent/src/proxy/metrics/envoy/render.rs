//! Envoy's three forms of the stats: `/stats` text (histograms as
//! quantiles), `?format=json`, and the Prometheus exposition.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{EnvoyStat, Histogram, Value};

/// The quantiles Envoy's `/stats` text and JSON give for a histogram.
const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

impl Histogram {
    /// The `q` quantile, interpolated within the bucket that holds it (an
    /// estimate: weir keeps bucket counts, not samples). Observations above
    /// the last bound are reported at that bound.
    pub(super) fn quantile(&self, q: f64) -> f64 {
        let rank = (q * self.count as f64).max(1.0);
        let mut lower = (0.0, 0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative as f64 >= rank {
                let (low, below) = lower;
                let within = (cumulative - below) as f64;
                return low + (bound - low) * (rank - below as f64) / within;
            }
            lower = (bound, cumulative);
        }
        lower.0
    }
}

/// A number as Envoy's text shows it: integers bare, else up to 3 decimals.
pub(super) fn short(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `name: value` lines, Envoy's `/stats` text; histograms as Envoy's
/// `P0(interval,cumulative) ...` (weir keeps no interval: `nan`).
pub fn text(stats: &[EnvoyStat]) -> String {
    let mut s = String::with_capacity(stats.len() * 48);
    for stat in stats {
        match &stat.value {
            Value::Counter(v) | Value::Gauge(v) => {
                let _ = writeln!(s, "{}: {v}", stat.name);
            }
            Value::Histogram(h) if h.count == 0 => {
                let _ = writeln!(s, "{}: No recorded values", stat.name);
            }
            Value::Histogram(h) => {
                let parts: Vec<String> = QUANTILES
                    .iter()
                    .map(|q| format!("P{}(nan,{})", short(q * 100.0), short(h.quantile(*q))))
                    .collect();
                let _ = writeln!(s, "{}: {}", stat.name, parts.join(" "));
            }
        }
    }
    s
}

/// Envoy's `/stats?format=json`: counters and gauges as `{name, value}`,
/// histograms in one trailing `{"histograms": ...}` element.
pub fn json(stats: &[EnvoyStat]) -> String {
    let mut list = Vec::with_capacity(stats.len() + 1);
    let mut computed = Vec::new();
    for stat in stats {
        match &stat.value {
            Value::Counter(v) | Value::Gauge(v) => {
                list.push(serde_json::json!({"name": stat.name, "value": v}));
            }
            Value::Histogram(h) => {
                let values: Vec<_> = QUANTILES
                    .iter()
                    .map(|q| {
                        let cumulative =
                            (h.count > 0).then(|| (h.quantile(*q) * 1000.0).round() / 1000.0);
                        serde_json::json!({"interval": null, "cumulative": cumulative})
                    })
                    .collect();
                computed.push(serde_json::json!({"name": stat.name, "values": values}));
            }
        }
    }
    if !computed.is_empty() {
        let supported: Vec<f64> = QUANTILES.iter().map(|q| q * 100.0).collect();
        list.push(serde_json::json!({"histograms": {
            "supported_quantiles": supported,
            "computed_quantiles": computed,
        }}));
    }
    serde_json::json!({ "stats": list }).to_string()
}

/// Envoy's Prometheus form: counters, then gauges, then histograms (as
/// Envoy orders them), families sorted within each, one `# TYPE` each;
/// untagged series printed with `{}` as Envoy prints them.
pub fn prometheus(stats: &[EnvoyStat]) -> String {
    let mut by_family: [BTreeMap<&str, Vec<&EnvoyStat>>; 3] = Default::default();
    for stat in stats {
        let kind = match stat.value {
            Value::Counter(_) => 0,
            Value::Gauge(_) => 1,
            Value::Histogram(_) => 2,
        };
        by_family[kind].entry(&stat.family).or_default().push(stat);
    }
    let mut s = String::with_capacity(stats.len() * 96);
    for (kind, families) in ["counter", "gauge", "histogram"].iter().zip(&by_family) {
        for (family, members) in families {
            let _ = writeln!(s, "# TYPE {family} {kind}");
            for stat in members {
                let tags: Vec<String> = stat
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let tags = tags.join(",");
                match &stat.value {
                    Value::Counter(v) | Value::Gauge(v) => {
                        let _ = writeln!(s, "{family}{{{tags}}} {v}");
                    }
                    Value::Histogram(h) => {
                        let sep = if tags.is_empty() { "" } else { "," };
                        for (bound, n) in &h.buckets {
                            let _ = writeln!(s, "{family}_bucket{{{tags}{sep}le=\"{bound}\"}} {n}");
                        }
                        let _ =
                            writeln!(s, "{family}_bucket{{{tags}{sep}le=\"+Inf\"}} {}", h.count);
                        let _ = writeln!(s, "{family}_sum{{{tags}}} {}", h.sum_ms);
                        let _ = writeln!(s, "{family}_count{{{tags}}} {}", h.count);
                    }
                }
            }
        }
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
