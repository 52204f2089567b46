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

/// Where the admin listener binds when the config names only a port, or
/// nothing: loopback, since it serves the whole config (Istio's 15000).
pub const ADMIN_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

/// `deserialize_with` for the admin address: `ip:port`, or a port alone
/// (`15000`, `":15000"`), which binds loopback.
pub(super) fn deserialize_admin<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    if let Ok(port) = text.strip_prefix(':').unwrap_or(&text).parse::<u16>() {
        return Ok(SocketAddr::new(ADMIN_DEFAULT.ip(), port));
    }
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "invalid address {text:?}: expected ip:port or a port alone (loopback), e.g. 127.0.0.1:15000 or 15000"
        ))
    })
}

/// A DNS server: `ip:port`, or an IP alone (port 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(into = "String")]
#[schemars(with = "String")]
pub struct ResolverAddress(pub SocketAddr);

impl From<ResolverAddress> for String {
    fn from(a: ResolverAddress) -> String {
        a.0.to_string()
    }
}

impl<'de> Deserialize<'de> for ResolverAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Ok(ip) = text.parse::<std::net::IpAddr>() {
            return Ok(Self(SocketAddr::new(ip, 53)));
        }
        text.parse().map(Self).map_err(|_| {
            de::Error::custom(format!(
                "invalid DNS server {text:?}: expected an IP or ip:port, e.g. 10.96.0.10, 127.0.0.1:5353 or [::1]:5353"
            ))
        })
    }
}
