//! What a pod's `weir.dev/*` annotations ask of the agent.
//!
//! Only `weir.dev/enroll: "true"` pods are the agent's business; the other
//! annotations are read for those pods alone, so a mistake on a pod weir leaves
//! alone is never reported.

use std::collections::BTreeMap;
use std::fmt;

use super::spec::PodSpec;

/// `"true"` enrolls the pod; `"false"` or absent leaves it alone.
/// The annotation prefix a namespace passes down to its pods: its
/// `weir.dev/*` annotations (and, in a cluster, labels) are defaults for
/// each of them.
pub const INHERITED_PREFIX: &str = "weir.dev/";

pub const ANNOTATION_ENROLL: &str = "weir.dev/enroll";
/// Comma-separated destination ports whose outbound connections are not redirected.
pub const ANNOTATION_EXCLUDE_OUTBOUND_PORTS: &str = "weir.dev/exclude-outbound-ports";
/// Comma-separated ports steered inbound; absent means every port.
pub const ANNOTATION_INBOUND_PORTS: &str = "weir.dev/inbound-ports";
/// `"open"` (default) or `"closed"`: what the pod's connections do while the proxy is not serving it.
pub const ANNOTATION_FAIL_MODE: &str = "weir.dev/fail-mode";
/// `"reset"` or `"keep"`: what an agent does, once back, with the connections
/// a fail-open pod made directly while no agent served it. Absent: reset
/// under `outbound_traffic_policy: REGISTRY_ONLY`, keep under `ALLOW_ANY`.
pub const ANNOTATION_BYPASSED_CONNECTIONS: &str = "weir.dev/bypassed-connections";
/// `"direct"` or `"proxy"`: where the pod's TCP connections to destinations
/// no listener claims go under `ALLOW_ANY` (straight out, counted in the
/// kernel; or through the proxy). Absent: the config's `egress.unclaimed`.
pub const ANNOTATION_UNCLAIMED_TRAFFIC: &str = "weir.dev/unclaimed-traffic";
/// Intercepted connections the pod may have open at once, per direction.
pub const ANNOTATION_MAX_CONNECTIONS: &str = "weir.dev/max-connections";
/// New intercepted connections the pod may open per second, per direction.
pub const ANNOTATION_MAX_CONNECTION_RATE: &str = "weir.dev/max-connection-rate";
/// HTTP requests the pod may have in flight through the proxy at once
/// (outbound; inbound HTTP is one request per connection).
pub const ANNOTATION_MAX_REQUESTS: &str = "weir.dev/max-requests";

/// Proxy CPU the pod's connections may use, as a Kubernetes CPU quantity
/// (`"500m"`, `"2"`, `"1.5"`); absent: an eighth of the proxy's worker
/// threads, at least 250m.
pub const ANNOTATION_MAX_CPU: &str = "weir.dev/max-cpu";

/// Inbound port slots per pod in the eBPF maps.
pub const MAX_INBOUND_PORTS: usize = weir_common::MAX_INBOUND_PORTS;
/// Excluded outbound port slots per pod in the eBPF maps.
pub const MAX_EXCLUDED_OUTBOUND_PORTS: usize = weir_common::MAX_EXCLUDED_OUTBOUND_PORTS;

/// How the agent treats one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPolicy {
    pub enroll: bool,
    /// Outbound connections to these destination ports go straight out, in the annotation's order.
    pub exclude_outbound_ports: Vec<u16>,
    pub inbound_ports: InboundPorts,
    pub fail_mode: FailMode,
    pub bypassed: BypassedConnections,
    pub limits: ConnectionLimits,
    /// `weir.dev/max-cpu` in millicores; `None`: the node's default.
    pub max_cpu_millicores: Option<u32>,
    /// `weir.dev/unclaimed-traffic`; `None`: the config's default.
    pub unclaimed: Option<Unclaimed>,
}

/// Where a pod's unclaimed TCP goes under `ALLOW_ANY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclaimed {
    Direct,
    Proxy,
}

/// One pod's share of the proxy, per direction (outbound connections it
/// makes, inbound connections to it); beyond it connections are reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open at once.
    pub max_open: u32,
    /// New per second (a burst of one second's worth).
    pub per_second: u32,
    /// HTTP requests in flight at once, from the request head to the
    /// response head (HTTP/2 multiplexes many on one connection).
    pub max_requests: u32,
}

impl Default for ConnectionLimits {
    /// Sized for 500 pods on a node: 500 pods x 2 directions x 4096
    /// connections is more than a node's descriptors, which the node budget
    /// bounds (`enroll::budget`); one pod alone can take at most 1/64th of
    /// a million descriptors. The rate is above what one busy pod opens on
    /// an idle node (a connection-per-request client here opens 18,000 a
    /// second through weir, and a default of 2,000 reset most of them):
    /// by default it bounds churn, and an operator sets it lower per pod.
    /// Requests in flight: Envoy's default `max_requests` circuit breaker
    /// (1024 per cluster), here per pod.
    fn default() -> Self {
        Self {
            max_open: 4096,
            per_second: 50_000,
            max_requests: 1024,
        }
    }
}

/// What happens to connections a fail-open pod made directly, outside the
/// mesh, while no agent served it (they are counted either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BypassedConnections {
    /// Reset under `REGISTRY_ONLY` (they may reach what the mesh forbids),
    /// keep under `ALLOW_ANY` (they reach what the mesh would have allowed).
    #[default]
    ByTrafficPolicy,
    /// Reset those still open: the application reconnects, through weir.
    Reset,
    /// Leave them open until they end.
    Keep,
}

/// Which inbound connections go through the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    All,
    /// Only these ports, in the annotation's order; never empty.
    Listed(Vec<u16>),
}

impl InboundPorts {
    /// Whether connections to `port` go through the proxy.
    pub fn covers(&self, port: u16) -> bool {
        match self {
            Self::All => true,
            Self::Listed(ports) => ports.contains(&port),
        }
    }
}

/// What an enrolled pod's connections do while the proxy is not serving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailMode {
    /// Go straight to their destination.
    #[default]
    Open,
    /// Are refused.
    Closed,
}

impl PodPolicy {
    /// The policy of a pod without `weir.dev/*` annotations: not enrolled.
    pub fn not_enrolled() -> Self {
        Self {
            enroll: false,
            exclude_outbound_ports: Vec::new(),
            inbound_ports: InboundPorts::All,
            fail_mode: FailMode::Open,
            bypassed: BypassedConnections::ByTrafficPolicy,
            limits: ConnectionLimits::default(),
            max_cpu_millicores: None,
            unclaimed: None,
        }
    }
}

/// An annotation value weir cannot use; the pod is reported and not enrolled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{subject}: annotation {annotation}: invalid value {value:?}: {reason}")]
    InvalidValue {
        /// `pod <namespace>/<name>`, or `namespace <name>` for a default.
        subject: String,
        annotation: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "{subject}: annotation {annotation} lists {count} ports, more than the {max} that fit (value {value:?})"
    )]
    TooManyPorts {
        subject: String,
        annotation: &'static str,
        value: String,
        count: usize,
        max: usize,
    },
}

impl PolicyError {
    /// The annotation whose value is wrong.
    pub fn annotation(&self) -> &'static str {
        match self {
            Self::InvalidValue { annotation, .. } | Self::TooManyPorts { annotation, .. } => {
                annotation
            }
        }
    }
}

impl PodSpec {
    /// Reads the `weir.dev/*` annotations. A pod that is not enrolled gets
    /// [`PodPolicy::not_enrolled`] whatever its other annotations say.
    pub fn policy(&self) -> Result<PodPolicy, PolicyError> {
        let reader = Reader {
            subject: Subject::Pod(self),
            annotations: &self.annotations,
        };
        if !reader.enroll()? {
            return Ok(PodPolicy::not_enrolled());
        }
        reader.enrolled()
    }
}

/// Checks a namespace's `weir.dev/*` values, which are defaults for its
/// pods: every one of them, whether or not the namespace enrolls its pods
/// (a pod may enroll itself and inherit the rest). Errors name the namespace.
pub fn check_namespace_defaults(
    namespace: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<(), PolicyError> {
    let reader = Reader {
        subject: Subject::Namespace(namespace),
        annotations,
    };
    reader.enroll()?;
    reader.enrolled().map(drop)
}

/// Whose annotations are read, as errors name it.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Pod(&'a PodSpec),
    Namespace(&'a str),
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(pod) => write!(f, "pod {}", pod.qualified_name()),
            Self::Namespace(name) => write!(f, "namespace {name}"),
        }
    }
}

/// Reads one pod's (or namespace's) annotations; errors name it.
struct Reader<'a> {
    subject: Subject<'a>,
    annotations: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    /// Every annotation but `weir.dev/enroll`, for an enrolled pod.
    fn enrolled(&self) -> Result<PodPolicy, PolicyError> {
        let defaults = ConnectionLimits::default();
        let exclude_outbound_ports = match self.get(ANNOTATION_EXCLUDE_OUTBOUND_PORTS) {
            None => Vec::new(),
            Some(value) => self.ports(
                ANNOTATION_EXCLUDE_OUTBOUND_PORTS,
                value,
                MAX_EXCLUDED_OUTBOUND_PORTS,
            )?,
        };
        let inbound_ports = match self.get(ANNOTATION_INBOUND_PORTS) {
            None => InboundPorts::All,
            Some(value) => InboundPorts::Listed(self.ports(
                ANNOTATION_INBOUND_PORTS,
                value,
                MAX_INBOUND_PORTS,
            )?),
        };
        Ok(PodPolicy {
            enroll: true,
            exclude_outbound_ports,
            inbound_ports,
            fail_mode: self.fail_mode()?,
            bypassed: self.bypassed()?,
            limits: ConnectionLimits {
                max_open: self.count(ANNOTATION_MAX_CONNECTIONS, defaults.max_open)?,
                per_second: self.count(ANNOTATION_MAX_CONNECTION_RATE, defaults.per_second)?,
                max_requests: self.count(ANNOTATION_MAX_REQUESTS, defaults.max_requests)?,
            },
            max_cpu_millicores: self.cpu(ANNOTATION_MAX_CPU)?,
            unclaimed: self.unclaimed()?,
        })
    }

    fn get(&self, annotation: &str) -> Option<&str> {
        self.annotations.get(annotation).map(String::as_str)
    }

    fn invalid(&self, annotation: &'static str, value: &str, reason: String) -> PolicyError {
        PolicyError::InvalidValue {
            subject: self.subject.to_string(),
            annotation,
            value: value.to_owned(),
            reason,
        }
    }

    fn enroll(&self) -> Result<bool, PolicyError> {
        self.one_of(
            ANNOTATION_ENROLL,
            false,
            &[("true", true), ("false", false)],
        )
    }

    fn fail_mode(&self) -> Result<FailMode, PolicyError> {
        self.one_of(
            ANNOTATION_FAIL_MODE,
            FailMode::Open,
            &[("open", FailMode::Open), ("closed", FailMode::Closed)],
        )
    }

    fn unclaimed(&self) -> Result<Option<Unclaimed>, PolicyError> {
        self.one_of(
            ANNOTATION_UNCLAIMED_TRAFFIC,
            None,
            &[
                ("direct", Some(Unclaimed::Direct)),
                ("proxy", Some(Unclaimed::Proxy)),
            ],
        )
    }

    fn bypassed(&self) -> Result<BypassedConnections, PolicyError> {
        self.one_of(
            ANNOTATION_BYPASSED_CONNECTIONS,
            BypassedConnections::ByTrafficPolicy,
            &[
                ("reset", BypassedConnections::Reset),
                ("keep", BypassedConnections::Keep),
            ],
        )
    }

    /// The value `annotation` names among `choices` (exact, case-sensitive
    /// spelling), `absent` without it; anything else is an error listing
    /// the choices.
    fn one_of<T: Copy>(
        &self,
        annotation: &'static str,
        absent: T,
        choices: &[(&str, T)],
    ) -> Result<T, PolicyError> {
        let Some(value) = self.get(annotation) else {
            return Ok(absent);
        };
        match choices.iter().find(|(name, _)| *name == value) {
            Some((_, chosen)) => Ok(*chosen),
            None => {
                let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                Err(self.invalid(
                    annotation,
                    value,
                    format!("expected {}", names.join(" or ")),
                ))
            }
        }
    }

    /// A positive count, `default` when the annotation is absent.
    fn count(&self, annotation: &'static str, default: u32) -> Result<u32, PolicyError> {
        match self.get(annotation) {
            None => Ok(default),
            Some(value) => match value.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(self.invalid(
                    annotation,
                    value,
                    "expected a whole number from 1 to 4294967295".to_owned(),
                )),
            },
        }
    }

    /// A Kubernetes CPU quantity in millicores: `"250m"`, `"2"`, `"0.5"`;
    /// from 1m to 1024 cores, at most millicore precision.
    fn cpu(&self, annotation: &'static str) -> Result<Option<u32>, PolicyError> {
        let Some(value) = self.get(annotation) else {
            return Ok(None);
        };
        let text = value.trim();
        let millicores = match text.strip_suffix('m') {
            Some(milli) => milli.parse::<u32>().ok(),
            None => cores_to_millicores(text),
        };
        match millicores {
            Some(m) if (1..=1024 * 1000).contains(&m) => Ok(Some(m)),
            _ => Err(self.invalid(
                annotation,
                value,
                "expected a CPU quantity from \"1m\" to \"1024\" (\"250m\", \"2\", \"1.5\")"
                    .to_owned(),
            )),
        }
    }

    /// `"5432, 6379"` -> `[5432, 6379]`: ports 1-65535, each once, at most `max`.
    fn ports(
        &self,
        annotation: &'static str,
        value: &str,
        max: usize,
    ) -> Result<Vec<u16>, PolicyError> {
        if value.trim().is_empty() {
            return Err(self.invalid(
                annotation,
                value,
                "no ports listed; remove the annotation instead".to_owned(),
            ));
        }
        let mut ports = Vec::new();
        for item in value.split(',').map(str::trim) {
            let port = match item.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ if item.is_empty() => {
                    return Err(self.invalid(
                        annotation,
                        value,
                        "empty item in the list".to_owned(),
                    ));
                }
                _ => {
                    return Err(self.invalid(
                        annotation,
                        value,
                        format!("{item:?} is not a port (1-65535)"),
                    ));
                }
            };
            if ports.contains(&port) {
                return Err(self.invalid(
                    annotation,
                    value,
                    format!("port {port} is listed twice"),
                ));
            }
            ports.push(port);
        }
        if ports.len() > max {
            return Err(PolicyError::TooManyPorts {
                subject: self.subject.to_string(),
                annotation,
                value: value.to_owned(),
                count: ports.len(),
                max,
            });
        }
        Ok(ports)
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;

/// `"1.5"` -> 1500: whole cores with up to three decimals.
fn cores_to_millicores(text: &str) -> Option<u32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || fraction.len() > 3
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: u32 = format!("{fraction:0<3}").parse().ok()?;
    whole.checked_mul(1000)?.checked_add(fraction)
}
