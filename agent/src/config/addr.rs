//! Socket addresses with an error that shows the value and the expected form.

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, de};

/// `deserialize_with` for `ip:port` fields.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "invalid address {text:?}: expected ip:port, e.g. 127.0.0.1:8080 or [::1]:8080"
        ))
    })
}
