//! The Grafana dashboard shipped in `daemonset/dashboards/` checked against
//! what a running weir exports: every panel's PromQL parses (`promtool
//! check rules`), and every metric, label and label value it names is on
//! the scrape page, so no panel sits on a series that does not exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The dashboard file, from the repository root.
pub fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemonset/dashboards/weir-node.json")
}

/// Every target expression of the dashboard, Grafana's variables replaced
/// by what Prometheus would see (`$__rate_interval` -> `1m`, `$job` -> `.*`).
pub fn expressions(dashboard: &serde_json::Value) -> Result<Vec<(String, String)>> {
    let panels = dashboard["panels"].as_array().context("no panels")?;
    let mut out = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().context("a panel without a title")?;
        for target in panel["targets"]
            .as_array()
            .context("a panel without targets")?
        {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let expr = expr.replace("$__rate_interval", "1m").replace("$job", ".*");
            out.push((title.to_owned(), expr));
        }
    }
    Ok(out)
}

/// Sample name -> the label sets it has on the page.
fn samples(scrape: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, _value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut set = BTreeMap::new();
        // Label values here hold no `",`: config names and fixed sets.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                set.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
            }
        }
        out.entry(name.to_owned()).or_default().push(set);
    }
    out
}

/// Labels Prometheus adds at scrape time or histograms carry.
const NOT_ON_THE_PAGE: [&str; 3] = ["job", "instance", "le"];

/// Labels of a fixed set of values whose series appear only once counted
/// (Istio's way: no `response_code_class="5xx"` before a 5xx): a matcher on
/// one needs the label on the page and a value of the set.
const SHOWN_ONCE_COUNTED: [(&str, &[&str]); 1] =
    [("response_code_class", &["1xx", "2xx", "3xx", "4xx", "5xx"])];

/// Check the dashboard against `scrape` (a `/stats/prometheus` page).
pub fn check(scrape: &str) -> Result<()> {
    let text = std::fs::read_to_string(path()).context("reading the dashboard")?;
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).context("the dashboard is not JSON")?;
    let exprs = expressions(&dashboard)?;
    ensure!(exprs.len() >= 10, "only {} expressions", exprs.len());
    promtool_parses(&exprs)?;
    on_the_page(&exprs, scrape)
}

/// Every metric, grouping label and matcher of `exprs` is on `scrape`.
fn on_the_page(exprs: &[(String, String)], scrape: &str) -> Result<()> {
    let page = samples(scrape);
    let metric = regex_lite(r"\b(?:weir|envoy|process)_[a-z0-9_]+\b");
    let by = regex_lite(r"by \(([^)]*)\)");
    let matcher = regex_lite(r#"([a-z_]+)(=~|!=|=)"([^"]*)""#);
    for (title, expr) in exprs {
        // Label names look like metric names (`envoy_cluster_name`): leave
        // out what is grouped by or matched on.
        let labels: BTreeSet<&str> = by
            .captures_iter(expr)
            .flat_map(|g| {
                let list = g.get(1).map_or("", |m| m.as_str());
                list.split(',').map(str::trim).collect::<Vec<_>>()
            })
            .chain(
                matcher
                    .captures_iter(expr)
                    .filter_map(|m| m.get(1))
                    .map(|m| m.as_str()),
            )
            .collect();
        let names: BTreeSet<&str> = metric
            .find_iter(expr)
            .map(|m| m.as_str())
            .filter(|n| !labels.contains(n))
            .collect();
        ensure!(!names.is_empty(), "{title}: no metric in {expr}");
        let mut sets = Vec::new();
        for name in &names {
            let Some(found) = page.get(*name) else {
                bail!("{title}: {name} is not on the scrape page ({expr})");
            };
            sets.extend(found);
        }
        let has = |label: &str, value: Option<&str>| {
            sets.iter().any(|s| {
                s.get(label)
                    .is_some_and(|v| value.is_none_or(|want| v == want))
            })
        };
        for group in by.captures_iter(expr) {
            for label in group[1].split(',').map(str::trim) {
                if !NOT_ON_THE_PAGE.contains(&label) {
                    ensure!(
                        has(label, None),
                        "{title}: no series has label {label} ({expr})"
                    );
                }
            }
        }
        for m in matcher.captures_iter(expr) {
            let (label, op, value) = (&m[1], &m[2], &m[3]);
            if NOT_ON_THE_PAGE.contains(&label) {
                continue;
            }
            let mut value = (op == "=").then_some(value);
            if let Some((_, set)) = SHOWN_ONCE_COUNTED.iter().find(|(l, _)| *l == label) {
                ensure!(
                    value.is_none_or(|v| set.contains(&v)),
                    "{title}: {label} has no value {value:?} ({expr})"
                );
                value = None;
            }
            ensure!(
                has(label, value),
                "{title}: no series has {label}{op}\"{}\" ({expr})",
                value.unwrap_or("")
            );
        }
    }
    Ok(())
}

fn regex_lite(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("a valid pattern")
}

/// `promtool check rules` on every expression as a recording rule.
fn promtool_parses(exprs: &[(String, String)]) -> Result<()> {
    // One directory per call: the tests of one binary run in parallel, and
    // a shared one was removed under another test's promtool.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("weir-dashboard-{}-{call}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = dir.join("rules.yaml");
    let mut text = String::from("groups:\n  - name: weir-dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(expr)?;
        text.push_str(&format!(
            "      - record: weir_dashboard:panel_{i}\n        expr: {quoted}\n"
        ));
    }
    std::fs::write(&rules, text)?;
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .context("running promtool (Debian package prometheus; cargo xtask test installs it)")?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        out.status.success(),
        "promtool check rules refused the dashboard's expressions:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_labels_are_read_from_the_page() {
        let page = samples("# TYPE a counter\na{x=\"1\",y=\"two\"} 3\nb 4\nenvoy_c{} 5\n");
        assert_eq!(page["a"][0]["y"], "two");
        assert!(page["b"][0].is_empty());
        assert!(page.contains_key("envoy_c"));
    }

    #[test]
    fn a_panel_on_a_missing_metric_label_or_value_fails() {
        let scrape = "weir_x_total{cluster=\"c\",class=\"5xx\"} 1\n";
        let one = |expr: &str| on_the_page(&[("p".to_owned(), expr.to_owned())], scrape);
        assert!(
            one("sum by (cluster) (rate(weir_x_total{class=\"5xx\", job=~\".*\"}[1m]))").is_ok()
        );
        let err = one("rate(weir_y_total[1m])").unwrap_err().to_string();
        assert!(
            err.contains("weir_y_total is not on the scrape page"),
            "{err}"
        );
        let err = one("sum by (pod) (weir_x_total)").unwrap_err().to_string();
        assert!(err.contains("no series has label pod"), "{err}");
        let err = one("weir_x_total{class=\"2xx\"}").unwrap_err().to_string();
        assert!(err.contains("class=\"2xx\""), "{err}");
        // A label named like a metric is a label.
        let scrape = "envoy_cluster_membership_healthy{envoy_cluster_name=\"c\"} 1\n";
        let expr = "sum by (envoy_cluster_name) (envoy_cluster_membership_healthy)";
        assert!(on_the_page(&[("p".to_owned(), expr.to_owned())], scrape).is_ok());
    }
}
