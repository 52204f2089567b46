//! `egress`: what becomes of enrolled pods' connections to destinations no
//! listener claims, enforced in the kernel at `connect()` (`docs/egress.md`).

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, de};

/// Intercepted outbound connections no listener claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Under `ALLOW_ANY`: `proxy` (default) sends a pod's TCP connections
    /// to destinations no listener claims through weir (passthrough, with
    /// its metrics); `direct` lets them go straight out without the proxy
    /// hop, counted per pod and destination in the kernel. A pod's
    /// `weir.dev/unclaimed-traffic` annotation wins.
    #[serde(default)]
    pub unclaimed: UnclaimedTraffic,
    /// Under `REGISTRY_ONLY`: destinations enrolled pods may reach
    /// directly, outside the proxy; the rest no listener claims fail at
    /// `connect()` with EPERM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<EgressAllowConfig>,
    /// Under `REGISTRY_ONLY`: the cluster's DNS servers, which pods reach
    /// on port 53 (UDP and TCP); absent: the nameservers of the agent's
    /// `/etc/resolv.conf` (in the DaemonSet, the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<IpAddr>>,
}

impl EgressConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where unclaimed TCP goes under `ALLOW_ANY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnclaimedTraffic {
    #[default]
    Proxy,
    Direct,
}

/// Addresses (and ports) reached directly under `REGISTRY_ONLY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressAllowConfig {
    /// An address or a network: `198.51.100.7`, `198.51.100.0/24`, `2001:db8::/32`.
    pub cidr: NetPrefix,
    /// Destination ports; empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// An IP network: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(into = "String")]
#[schemars(with = "String")]
pub struct NetPrefix {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl From<NetPrefix> for String {
    fn from(n: NetPrefix) -> String {
        format!("{}/{}", n.ip, n.prefix)
    }
}

impl std::str::FromStr for NetPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid network {text:?}: expected an IP or ip/prefix, e.g. 198.51.100.7, 198.51.100.0/24 or 2001:db8::/32"
            )
        };
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
        };
        Ok(Self { ip, prefix })
    }
}

impl<'de> Deserialize<'de> for NetPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_with_or_without_a_prefix() {
        let n: NetPrefix = "198.51.100.0/24".parse().unwrap();
        assert_eq!((n.ip.to_string().as_str(), n.prefix), ("198.51.100.0", 24));
        let n: NetPrefix = "2001:db8::1".parse().unwrap();
        assert_eq!(n.prefix, 128);
        for bad in ["198.51.100.0/33", "example.com", "10.0.0.0/", "::/129"] {
            let e = bad.parse::<NetPrefix>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
