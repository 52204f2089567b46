//! The `weir` command line, in the library so that what documents it can be
//! checked against it: the docs' commands test parses every `weir ...` line
//! of README.md and docs/ with [`Cli`], so a stale flag fails a test.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// weir node agent: eBPF interception into one shared L7 proxy per node.
#[derive(Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// Log level: `error`, `warn`, `info`, `debug`, `trace`, or per module
    /// (`info,weir::proxy=debug`). Default: `RUST_LOG` if set, else `info`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// `text` for people, `json` (one object per line) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Parse and validate a proxy config file, print a summary.
    CheckConfig { file: PathBuf },
    /// Print the JSON Schema of the proxy config format.
    ConfigSchema,
    /// Convert an Envoy static bootstrap (YAML or JSON) into a weir config,
    /// printed on stdout; refuses, listing every field weir cannot carry
    /// over, and writes nothing (docs/envoy.md).
    ConvertEnvoy {
        file: PathBuf,
        /// Write the config to this file instead of stdout (whole or not at all).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run the node agent: the proxy, the eBPF data path, and enrollment of the
    /// node's pods annotated `weir.dev/enroll: "true"`, from the Kubernetes API
    /// (`--kubernetes`) or a pods file (`--pods`).
    Run {
        /// Proxy config (reloaded on SIGHUP and on change).
        #[arg(long)]
        config: PathBuf,
        /// Pods on this node, from a file (watched for changes; docs/pods.md).
        #[arg(
            long,
            required_unless_present = "kubernetes",
            conflicts_with = "kubernetes"
        )]
        pods: Option<PathBuf>,
        /// Pods on this node, from the Kubernetes API (watched).
        #[arg(long)]
        kubernetes: bool,
        /// The node's name, as pods' `spec.nodeName` says it (the DaemonSet sets
        /// NODE_NAME from the downward API).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// A kubeconfig file; without it, the in-cluster service account.
        #[arg(long, requires = "kubernetes")]
        kubeconfig: Option<PathBuf>,
        /// bpffs directory where the data path is pinned, to outlive the agent.
        #[arg(long, default_value = crate::datapath::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
        /// Tokio worker threads; 1 runs everything on one thread.
        #[arg(long)]
        workers: Option<usize>,
        /// Splice app-to-proxy data with sockops + sk_msg instead of the
        /// loopback TCP stack.
        #[arg(long, value_enum, default_value_t = Switch::Off)]
        sk_msg: Switch,
        /// Open an enrolled pod's upstream connections inside its network
        /// namespace, so they leave with the pod's address and follow its
        /// routes, pooled per pod; off: from the agent's namespace (the
        /// node's address), pooled across pods.
        #[arg(long, value_enum, default_value_t = Switch::On)]
        pod_egress: Switch,
        /// On SIGTERM: how long connections may finish (HTTP/1 closes after
        /// its next response, HTTP/2 gets a GOAWAY, opaque TCP runs on) and
        /// how long a successor agent has to take the pods over. Fit it in
        /// the pod's terminationGracePeriodSeconds.
        #[arg(long, default_value = "25s", value_parser = crate::config::parse_duration)]
        drain_time: std::time::Duration,
        #[command(flatten)]
        mesh: Box<MeshArgs>,
    },
    /// Remove everything weir left in the kernel: detach every program, remove
    /// every pin (run after the agent is gone, e.g. the DaemonSet deleted).
    Uninstall {
        /// bpffs directory where the data path is pinned.
        #[arg(long, default_value = crate::datapath::DEFAULT_PIN_ROOT)]
        pin_root: PathBuf,
        /// Then wait for SIGTERM (the uninstall DaemonSet's pods stay Ready).
        #[arg(long)]
        wait: bool,
    },
    /// Print the Linux capabilities `weir run` needs, and why.
    Capabilities,
    /// Ask a running agent what it is doing: data path, the node's pods
    /// (enrolled, or why not), listeners, clusters and their health, the
    /// config's generation and the last reload refused.
    Status {
        /// The agent's admin address (its config's `admin.address`).
        #[arg(long, default_value = crate::cli::status::DEFAULT_ADMIN)]
        admin: std::net::SocketAddr,
        /// `table` for people, `json` for tools (the admin's `/status` as it came).
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run the L7 proxy with a config file (reloaded on SIGHUP and on change).
    Proxy {
        #[arg(long)]
        config: PathBuf,
        /// Tokio worker threads; 1 runs everything on one thread.
        #[arg(long)]
        workers: Option<usize>,
        /// On SIGTERM/SIGINT: how long open connections may finish.
        #[arg(long, default_value = "5s", value_parser = crate::config::parse_duration)]
        drain_time: std::time::Duration,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// The mesh between nodes (docs/mesh.md): off unless a trust domain is given.
#[derive(clap::Args, Debug)]
pub struct MeshArgs {
    /// Trust domain of the mesh's SPIFFE identities
    /// (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>); turns
    /// on the mutual-TLS tunnel between nodes' agents (port 15008).
    #[arg(
        long,
        requires_all = ["mesh_trust_bundle", "mesh_node_ca_cert", "mesh_node_ca_key", "mesh_pod_cidrs"]
    )]
    pub mesh_trust_domain: Option<String>,
    /// PEM: the mesh root CA certificate(s) peers must chain to.
    #[arg(long, requires = "mesh_trust_domain")]
    pub mesh_trust_bundle: Option<PathBuf>,
    /// PEM: this node's CA certificate (signed by a mesh root), from which
    /// the agent issues its pods' workload certificates.
    #[arg(long, requires = "mesh_trust_domain")]
    pub mesh_node_ca_cert: Option<PathBuf>,
    /// PEM (PKCS#8): this node's CA key.
    #[arg(long, requires = "mesh_trust_domain")]
    pub mesh_node_ca_key: Option<PathBuf>,
    /// Lifetime of a workload certificate (reissued at half of it).
    #[arg(long, default_value = "1h", value_parser = crate::config::parse_duration)]
    pub mesh_workload_cert_ttl: std::time::Duration,
    /// The cluster's pod networks, comma-separated CIDRs: connections to
    /// these addresses try the tunnel.
    #[arg(long, value_delimiter = ',', requires = "mesh_trust_domain")]
    pub mesh_pod_cidrs: Vec<crate::intercept::Cidr>,
    /// Never send a connection to a pod address in plain text: where
    /// nothing answers the pod's port 15008 (no weir serves it, or a forged
    /// TCP reset says so) the connection fails (503 for HTTP) instead of
    /// falling back. For clusters whose every pod is enrolled.
    #[arg(long, requires = "mesh_trust_domain")]
    pub mesh_require_tunnel: bool,
}

impl MeshArgs {
    pub fn options(self) -> Option<crate::intercept::MeshOptions> {
        let (Some(trust_domain), Some(trust_bundle), Some(node_ca_cert), Some(node_ca_key)) = (
            self.mesh_trust_domain,
            self.mesh_trust_bundle,
            self.mesh_node_ca_cert,
            self.mesh_node_ca_key,
        ) else {
            return None;
        };
        Some(crate::intercept::MeshOptions {
            config: crate::mesh::MeshConfig {
                trust_domain,
                trust_bundle,
                node_ca_cert,
                node_ca_key,
                workload_cert_ttl: self.mesh_workload_cert_ttl,
            },
            pod_cidrs: self.mesh_pod_cidrs,
            require_tunnel: self.mesh_require_tunnel,
        })
    }
}
