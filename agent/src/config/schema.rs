//! JSON Schema of the format, generated from the Rust types.
//!
//! The committed copy is `config/schema.json`; regenerate it with
//! `cargo run -p weir-agent --bin weir -- config-schema > config/schema.json`.

use super::root::ProxyConfig;

/// The JSON Schema (draft 2020-12) of the config document.
pub fn json_schema() -> schemars::Schema {
    schemars::schema_for!(ProxyConfig)
}

/// [`json_schema`] pretty-printed, as committed in `config/schema.json`.
pub fn json_schema_string() -> String {
    serde_json::to_string_pretty(&json_schema())
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed.trim_end() == json_schema_string(),
            "config/schema.json differs from the Rust types; regenerate it with\n  \
             cargo run -p weir-agent --bin weir -- config-schema > config/schema.json"
        );
    }
}
