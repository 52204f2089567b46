//! The weir config as YAML: serialized from weir's own types, with the
//! values that equal weir's defaults left out so the file reads like a
//! hand-written one, then loaded back with weir's loader.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use crate::config::{
    ClusterConfig, DownstreamTlsConfig, FileChecks, ForwardActionConfig, HeaderValueOptionConfig,
    InlineKey, Issue, ListenerConfig, OutlierDetectionConfig, ProxyConfig, RedirectConfig,
    RetryPolicyConfig, UpstreamTlsConfig,
};

/// The YAML text of `config`, headed by comments naming `source` and the notes.
pub(super) fn render(
    config: &ProxyConfig,
    source: &str,
    notes: &[Issue],
) -> Result<String, String> {
    let mut value = serde_yaml::to_value(config).map_err(|e| e.to_string())?;
    reveal_keys(&mut value, config);
    Defaults::new()?.prune(&mut value);
    let body = serde_yaml::to_string(&value).map_err(|e| e.to_string())?;
    let mut out = format!(
        "# Converted by `weir convert-envoy` from the Envoy bootstrap {source}.\n\
         # Check it with `weir check-config FILE` where weir runs (docs/envoy.md).\n"
    );
    if !notes.is_empty() {
        out.push_str("# Notes from the conversion:\n");
        for note in notes {
            out.push_str(&format!("# - {note}\n"));
        }
    }
    out.push_str(&body);
    Ok(out)
}

/// Loads `text` with weir's loader (files named in it need not exist here)
/// and checks it is `config`, the config the converter built.
pub(super) fn load_back(text: &str, origin: &str, config: &ProxyConfig) -> Result<(), LoadBack> {
    let loaded = crate::config::parse_str_with(text, origin, FileChecks::Skip)
        .map_err(|e| LoadBack::Rejected(e.issues().to_vec(), e.to_string()))?;
    if loaded != *config {
        return Err(LoadBack::Differs);
    }
    Ok(())
}

pub(super) enum LoadBack {
    /// weir's loader refused it: its issues, and its whole message.
    Rejected(Vec<Issue>, String),
    /// It loaded as something else than was built.
    Differs,
}

/// weir's defaults, serialized from its own types, to leave out.
struct Defaults {
    top: Value,
    listener: Value,
    downstream_tls: Value,
    forward: Value,
    retry: Value,
    redirect: Value,
    header: Value,
    cluster: Value,
    upstream_tls: Value,
    outlier: Value,
}

impl Defaults {
    fn new() -> Result<Self, String> {
        Ok(Self {
            top: default_of::<ProxyConfig>("{}")?,
            listener: default_of::<ListenerConfig>(
                "{name: n, address: '127.0.0.1:1', virtual_hosts: []}",
            )?,
            downstream_tls: default_of::<DownstreamTlsConfig>("{certificates: []}")?,
            forward: default_of::<ForwardActionConfig>("{cluster: c}")?,
            retry: default_of::<RetryPolicyConfig>("{retry_on: [5xx]}")?,
            redirect: default_of::<RedirectConfig>("{}")?,
            header: default_of::<HeaderValueOptionConfig>("{name: n, value: v}")?,
            cluster: default_of::<ClusterConfig>("{name: c}")?,
            upstream_tls: to_value(&UpstreamTlsConfig::default())?,
            outlier: to_value(&OutlierDetectionConfig::default())?,
        })
    }

    fn prune(&self, config: &mut Value) {
        prune(config, &self.top, &[]);
        for listener in items(config, "listeners") {
            prune(
                listener,
                &self.listener,
                &["name", "address", "virtual_hosts"],
            );
            if let Some(tls) = get_mut(listener, "tls") {
                prune(tls, &self.downstream_tls, &["certificates"]);
            }
            for vh in items(listener, "virtual_hosts") {
                for header in items(vh, "request_headers_to_add") {
                    prune(header, &self.header, &["name", "value"]);
                }
                for route in items(vh, "routes") {
                    for list in ["request_headers_to_add", "response_headers_to_add"] {
                        for header in items(route, list) {
                            prune(header, &self.header, &["name", "value"]);
                        }
                    }
                    if let Some(forward) = get_mut(route, "route") {
                        prune(forward, &self.forward, &["cluster", "weighted_clusters"]);
                        if let Some(retry) = get_mut(forward, "retry_policy") {
                            prune(retry, &self.retry, &["retry_on"]);
                        }
                    }
                    if let Some(redirect) = get_mut(route, "redirect") {
                        prune(redirect, &self.redirect, &[]);
                    }
                }
            }
        }
        for cluster in items(config, "clusters") {
            prune(cluster, &self.cluster, &["name"]);
            if let Some(tls) = get_mut(cluster, "tls") {
                prune(tls, &self.upstream_tls, &[]);
            }
            if let Some(outlier) = get_mut(cluster, "outlier_detection") {
                prune(outlier, &self.outlier, &[]);
            }
        }
    }
}

/// Puts back the inline private keys that serializing redacts: the file
/// written is the config weir runs, so it must hold them, as the Envoy
/// bootstrap did.
fn reveal_keys(value: &mut Value, config: &ProxyConfig) {
    for (listener, l) in items(value, "listeners").zip(&config.listeners) {
        let (Some(tls), Some(t)) = (get_mut(listener, "tls"), &l.tls) else {
            continue;
        };
        for (cert, c) in items(tls, "certificates").zip(&t.certificates) {
            reveal(cert, "private_key", c.private_key.as_ref());
        }
    }
    for (cluster, c) in items(value, "clusters").zip(&config.clusters) {
        if let (Some(tls), Some(t)) = (get_mut(cluster, "tls"), &c.tls) {
            reveal(tls, "client_key", t.client_key.as_ref());
        }
    }
}

fn reveal(value: &mut Value, key: &str, secret: Option<&InlineKey>) {
    if let (Some(map), Some(secret)) = (value.as_mapping_mut(), secret) {
        map.insert(key.into(), secret.expose().into());
    }
}

fn default_of<T: DeserializeOwned + Serialize>(minimal: &str) -> Result<Value, String> {
    let typed: T = serde_yaml::from_str(minimal).map_err(|e| e.to_string())?;
    to_value(&typed)
}

fn to_value<T: Serialize>(typed: &T) -> Result<Value, String> {
    serde_yaml::to_value(typed).map_err(|e| e.to_string())
}

/// Removes the entries of `value` equal to those of `defaults`, mappings
/// key by key (a mapping left empty goes too), except the `keep` keys. A
/// key the defaults lack (an optional block such as `tls`) stays whole:
/// its presence means something.
fn prune(value: &mut Value, defaults: &Value, keep: &[&str]) {
    let (Value::Mapping(map), Value::Mapping(defaults)) = (value, defaults) else {
        return;
    };
    let mut pruned = Mapping::new();
    for (key, mut v) in std::mem::take(map) {
        let kept = key.as_str().is_some_and(|k| keep.contains(&k));
        let drop = !kept
            && match defaults.get(&key) {
                None => false,
                Some(d @ Value::Mapping(_)) if v.is_mapping() => {
                    prune(&mut v, d, &[]);
                    v.as_mapping().is_some_and(Mapping::is_empty)
                }
                Some(d) => v == *d,
            };
        if !drop {
            pruned.insert(key, v);
        }
    }
    *map = pruned;
}

fn get_mut<'v>(value: &'v mut Value, key: &str) -> Option<&'v mut Value> {
    value.as_mapping_mut()?.get_mut(key)
}

fn items<'v>(value: &'v mut Value, key: &str) -> impl Iterator<Item = &'v mut Value> {
    get_mut(value, key)
        .and_then(Value::as_sequence_mut)
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_leaves_out_defaults_but_keeps_required_and_optional_blocks() {
        let mut v: Value = serde_yaml::from_str(
            "{name: c, connect_timeout: 5s, lb_policy: RANDOM, circuit_breakers: {max_connections: 1024, max_requests: 7}, tls: {}}",
        )
        .unwrap();
        let d: Value = serde_yaml::from_str(
            "{name: c, connect_timeout: 5s, lb_policy: ROUND_ROBIN, circuit_breakers: {max_connections: 1024, max_requests: 1024}}",
        )
        .unwrap();
        prune(&mut v, &d, &["name"]);
        assert_eq!(
            v,
            serde_yaml::from_str::<Value>(
                "{name: c, lb_policy: RANDOM, circuit_breakers: {max_requests: 7}, tls: {}}"
            )
            .unwrap()
        );
    }
}
