//! Name resolution for STRICT_DNS clusters and the forward proxy's DNS
//! cache (Envoy's c-ares resolver settings): hickory, on the node's
//! `/etc/resolv.conf` (name servers, search domains, `ndots`, as a pod's
//! resolver reads them) with what the config overrides: name servers with
//! ports (UDP, then TCP when a reply is truncated or UDP fails), timeout,
//! attempts, search domains, `ndots`. `/etc/hosts` is read first, as
//! `getaddrinfo` reads it.
//!
//! No answer is cached here: a STRICT_DNS cluster asks again every
//! `dns_refresh_rate` and sees a service scale at once, as Envoy's
//! resolver does; the record TTL is handed back for `respect_dns_ttl`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name;

/// Address families a cluster takes from resolution (`dns_lookup_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Auto,
    V4Only,
    V6Only,
}

impl Family {
    /// Whether a resolved address is of this family.
    pub fn admits(self, addr: &SocketAddr) -> bool {
        match self {
            Self::Auto => true,
            Self::V4Only => addr.is_ipv4(),
            Self::V6Only => addr.is_ipv6(),
        }
    }
}

/// What the config says about resolution, merged (top-level `dns`, then the
/// cluster's own `dns_resolvers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Empty: the name servers of `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: usize,
    /// `None`: the search domains of `/etc/resolv.conf`.
    pub search: Option<Vec<String>>,
    /// `None`: the `ndots` of `/etc/resolv.conf` (1 when unset there).
    pub ndots: Option<usize>,
    pub family: Family,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("reading /etc/resolv.conf (set dns.resolvers to do without it): {0}")]
    SystemConfig(String),
    #[error("search domain {0:?}: {1}")]
    SearchDomain(String, String),
    #[error("building the resolver: {0}")]
    Build(String),
}

/// Why a name has no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no such name")]
    NotFound,
    #[error("no address of the cluster's dns_lookup_family")]
    NoAddress,
    #[error("{0}")]
    Failed(String),
}

/// Addresses of one name, and how long the records say they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addrs: Vec<IpAddr>,
    pub ttl: Duration,
}

pub struct Resolver {
    inner: TokioResolver,
    family: Family,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    pub fn new(settings: &ResolverSettings) -> Result<Self, ResolverError> {
        let (system, mut opts) = match system_conf(Path::new(RESOLV_CONF)) {
            Ok(found) => found,
            // Name servers of its own need nothing from the system.
            Err(_) if !settings.servers.is_empty() => (
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
            ),
            Err(e) => return Err(e),
        };
        let (domain, system_search, system_servers) = system.into_parts();
        let servers = if settings.servers.is_empty() {
            system_servers
        } else {
            settings.servers.iter().map(|a| name_server(*a)).collect()
        };
        let search = match &settings.search {
            None => system_search,
            Some(list) => list
                .iter()
                .map(|d| {
                    Name::from_str_relaxed(d)
                        .map_err(|e| ResolverError::SearchDomain(d.clone(), e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        opts.timeout = settings.timeout;
        opts.attempts = settings.attempts;
        if let Some(n) = settings.ndots {
            opts.ndots = n;
        }
        opts.cache_size = 0;
        opts.try_tcp_on_error = true;
        opts.ip_strategy = match settings.family {
            Family::Auto => LookupIpStrategy::Ipv4AndIpv6,
            Family::V4Only => LookupIpStrategy::Ipv4Only,
            Family::V6Only => LookupIpStrategy::Ipv6Only,
        };
        let config = ResolverConfig::from_parts(domain, search, servers);
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverError::Build(e.to_string()))?;
        Ok(Self {
            inner,
            family: settings.family,
        })
    }

    /// Every address of `name` in the cluster's family (an IP literal is
    /// its own answer, valid for ever).
    pub async fn lookup(&self, name: &str) -> Result<Resolved, ResolveError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            if !self.family.admits(&SocketAddr::new(ip, 0)) {
                return Err(ResolveError::NoAddress);
            }
            return Ok(Resolved {
                addrs: vec![ip],
                ttl: Duration::MAX,
            });
        }
        let found = self.inner.lookup_ip(name).await.map_err(|e| {
            if e.is_nx_domain() {
                ResolveError::NotFound
            } else if e.is_no_records_found() {
                ResolveError::NoAddress
            } else {
                ResolveError::Failed(e.to_string())
            }
        })?;
        let ttl = found
            .valid_until()
            .saturating_duration_since(Instant::now());
        let family = self.family;
        let addrs: Vec<IpAddr> = found
            .iter()
            .filter(|ip| family.admits(&SocketAddr::new(*ip, 0)))
            .collect();
        if addrs.is_empty() {
            return Err(ResolveError::NoAddress);
        }
        Ok(Resolved { addrs, ttl })
    }
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The node's settings as libc reads them: `path`, or when there is no
/// such file libc's defaults (the name server on 127.0.0.1, no search
/// domain, ndots 1): a static binary in a minimal image has none.
fn system_conf(path: &Path) -> Result<(ResolverConfig, ResolverOpts), ResolverError> {
    match std::fs::read(path) {
        Ok(data) => hickory_resolver::system_conf::parse_resolv_conf(data)
            .map_err(|e| ResolverError::SystemConfig(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            ResolverConfig::from_parts(
                None,
                Vec::new(),
                vec![NameServerConfig::udp_and_tcp(IpAddr::from([127, 0, 0, 1]))],
            ),
            ResolverOpts::default(),
        )),
        Err(e) => Err(ResolverError::SystemConfig(e.to_string())),
    }
}

/// A name server at `addr`: UDP, and TCP on the same port.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_resolv_conf_means_libc_defaults() {
        let (config, opts) = system_conf(Path::new("/nonexistent/weir/resolv.conf")).unwrap();
        let servers: Vec<IpAddr> = config.name_servers().iter().map(|n| n.ip).collect();
        assert_eq!(servers, [IpAddr::from([127, 0, 0, 1])]);
        assert!(config.search().is_empty());
        assert_eq!(opts.ndots, 1);
    }

    #[test]
    fn resolv_conf_is_read_as_a_pod_reads_it() {
        let dir = std::env::temp_dir().join(format!("weir-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        std::fs::write(
            &path,
            "nameserver 192.0.2.53\nsearch ns1.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
        )
        .unwrap();
        let (config, opts) = system_conf(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(config.name_servers()[0].ip, IpAddr::from([192, 0, 2, 53]));
        assert_eq!(config.search().len(), 2);
        assert_eq!(opts.ndots, 5);
    }
}
