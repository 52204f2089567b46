//! The real `weir run` agent on a simulated node: started in the node's router
//! namespace (a DaemonSet pod with hostNetwork), fed a proxy config and a pods
//! file, killed or stopped by its PID.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::pod::spawn_in;
use crate::{PodProcess, SimNode, SimPod, wait};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `cargo xtask kernels` names the binary it built on the host: in a guest
/// under emulation, cargo's freshness check is slow and can see the shared
/// tree as stale, and a rebuild there takes many minutes.
pub const PREBUILT_WEIR_ENV: &str = "WEIR_TEST_PREBUILT_WEIR";

/// The `weir` binary of this checkout, built first (once per test process):
/// the tests crate does not depend on the binary, so without this a test could
/// run a stale one. `$WEIR_TEST_PREBUILT_WEIR` names one built already.
pub fn weir_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(PREBUILT_WEIR_ENV) {
        let bin = PathBuf::from(bin);
        anyhow::ensure!(
            bin.is_file(),
            "{PREBUILT_WEIR_ENV}={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_weir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_weir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> or target/<profile>/<bin> (the benchmark):
    // the binary goes to target/<profile>/weir.
    let profile_dir = exe
        .parent()
        .and_then(|dir| {
            if dir.file_name().is_some_and(|name| name == "deps") {
                dir.parent()
            } else {
                Some(dir)
            }
        })
        .context("test binary outside a cargo target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "--package",
        "weir-agent",
        "--bin",
        "weir",
    ]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build
        .status()
        .context("running cargo build for the weir binary")?;
    anyhow::ensure!(
        status.success(),
        "cargo build -p weir-agent --bin weir failed"
    );
    let bin = profile_dir.join("weir");
    anyhow::ensure!(bin.is_file(), "{} missing after building it", bin.display());
    Ok(bin)
}

/// How `weir run` is started, beyond its config and pods file.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--workers N` (tokio worker threads); `None` leaves weir's default.
    pub workers: Option<usize>,
    /// Further arguments after `weir run`'s own.
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of the agent.
    pub log: String,
    /// A cgroup v2 directory to run the agent in (created beforehand, not
    /// above any pod's); `None`: the caller's. Two agents on one node each
    /// need their own, since sk_msg's sockops attaches to the agent's cgroup.
    pub cgroup: Option<PathBuf>,
    /// Run the agent with exactly these capabilities (names as `setpriv`
    /// spells them: `bpf`, `net_admin`), as a container that drops ALL and adds
    /// them would; `None`: the caller's.
    pub capabilities: Option<Vec<String>>,
    /// Pods from the Kubernetes API instead of the pods file.
    pub kubernetes: Option<KubernetesSource>,
    /// More environment for the agent.
    pub env: Vec<(String, String)>,
    /// The arguments that replace `run --config <written file>` (a DaemonSet's
    /// container args, with its config path); the config text passed to
    /// `start` is then not written.
    pub run_args: Option<Vec<String>>,
    /// The admin address the agent's config names, when `run_args` bring
    /// their own config.
    pub admin: Option<SocketAddr>,
}

/// `weir run --kubernetes` as the DaemonSet runs it, with a kubeconfig in
/// place of the in-cluster service account files.
#[derive(Debug, Clone)]
pub struct KubernetesSource {
    pub kubeconfig: PathBuf,
    /// `NODE_NAME`, as the downward API gives it.
    pub node_name: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            workers: None,
            extra_args: Vec::new(),
            log: "info".to_owned(),
            cgroup: None,
            capabilities: None,
            kubernetes: None,
            env: Vec::new(),
            run_args: None,
            admin: None,
        }
    }
}

pub struct AgentProcess {
    process: Option<PodProcess>,
    options: AgentOptions,
    pub dir: PathBuf,
    pub admin: SocketAddr,
    pub pods_file: PathBuf,
    pub config_file: PathBuf,
}

impl AgentProcess {
    /// Writes `config` (with `{admin}` replaced by a free admin address in the
    /// router namespace) and `pods`, and starts `weir run` with them.
    pub fn start(node: &SimNode, config: &str, pods: &str, pin_root: &Path) -> Result<Self> {
        Self::start_with(node, config, pods, pin_root, &[])
    }

    /// Like [`AgentProcess::start`], with more `weir run` arguments.
    pub fn start_with(
        node: &SimNode,
        config: &str,
        pods: &str,
        pin_root: &Path,
        extra_args: &[&str],
    ) -> Result<Self> {
        let options = AgentOptions {
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            ..AgentOptions::default()
        };
        Self::start_with_options(node, config, pods, pin_root, options)
    }

    /// [`AgentProcess::start`] with `options`.
    pub fn start_with_options(
        node: &SimNode,
        config: &str,
        pods: &str,
        pin_root: &Path,
        options: AgentOptions,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "weir-agent-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)?;
        let admin = match options.admin {
            Some(addr) => addr,
            None => node
                .router()
                .run(|| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))??,
        };
        let config_file = dir.join("config.yaml");
        let pods_file = dir.join("pods.yaml");
        std::fs::write(&config_file, config.replace("{admin}", &admin.to_string()))?;
        std::fs::write(&pods_file, pods)?;
        let mut agent = Self {
            process: None,
            options,
            dir,
            admin,
            pods_file,
            config_file,
        };
        agent.spawn(node, pin_root)?;
        Ok(agent)
    }

    fn spawn(&mut self, node: &SimNode, pin_root: &Path) -> Result<()> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))?;
        let mut cmd = match &self.options.capabilities {
            Some(caps) => {
                let mut cmd = Command::new("setpriv");
                let keep: String = caps.iter().map(|c| format!(",+{c}")).collect();
                cmd.arg(format!("--bounding-set=-all{keep}"))
                    .arg("--inh-caps=-all")
                    .arg("--")
                    .arg(weir_bin()?);
                cmd
            }
            None => Command::new(weir_bin()?),
        };
        match &self.options.run_args {
            Some(args) => cmd.args(args),
            None => cmd.arg("run").arg("--config").arg(&self.config_file),
        };
        match &self.options.kubernetes {
            Some(source) => {
                if !cmd.get_args().any(|a| a == "--kubernetes") {
                    cmd.arg("--kubernetes");
                }
                cmd.arg("--kubeconfig")
                    .arg(&source.kubeconfig)
                    .env("NODE_NAME", &source.node_name);
            }
            None => {
                cmd.arg("--pods").arg(&self.pods_file);
            }
        }
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .arg("--pin-root")
            .arg(pin_root)
            .args(self.options.workers.map(|n| format!("--workers={n}")))
            .args(&self.options.extra_args)
            .env("RUST_LOG", &self.options.log)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        self.process = Some(spawn_in(
            node.router(),
            self.options.cgroup.as_deref(),
            cmd,
        )?);
        Ok(())
    }

    /// Starts the agent again after [`AgentProcess::kill`], on the same files.
    pub fn restart(&mut self, node: &SimNode, pin_root: &Path) -> Result<()> {
        anyhow::ensure!(self.process.is_none(), "the agent is still running");
        self.spawn(node, pin_root)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(PodProcess::pid)
    }

    /// Waits until the admin listener answers `/ready` with 200.
    pub fn wait_ready(&self, node: &SimNode, timeout: Duration) -> Result<()> {
        let ready = wait::until(timeout, || {
            self.admin_get(node, "/ready")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
        });
        if !ready {
            bail!(
                "weir did not become ready within {timeout:?}; log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// Waits until the agent has answered at least `at_least` outbound
    /// requests of pod `pod` with a 2xx (its interception metrics).
    pub fn wait_outbound_answers(
        &self,
        node: &SimNode,
        pod: &str,
        at_least: f64,
        timeout: Duration,
    ) -> Result<()> {
        let labels = [
            ("direction", "outbound"),
            ("source_pod", pod),
            ("response_code_class", "2xx"),
        ];
        let answered = wait::until(timeout, || {
            self.admin_get(node, "/stats/prometheus")
                .ok()
                .and_then(|(_, text)| {
                    metric_sample(&text, "weir_intercept_requests_total", &labels)
                })
                .is_some_and(|n| n >= at_least)
        });
        if !answered {
            bail!(
                "weir did not answer {at_least} requests of pod {pod} within {timeout:?}; log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// GET on the admin listener (from inside the router namespace).
    pub fn admin_get(&self, node: &SimNode, path: &str) -> Result<(u16, String)> {
        let admin = self.admin;
        let path = path.to_owned();
        node.router().run(move || http_get(admin, &path))?
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// How many lines of the log end in `suffix` (`: enrolled`, `: un-enrolled`).
    pub fn logged(&self, suffix: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.trim_end().ends_with(suffix))
            .count()
    }

    /// Replaces the pods file atomically, as a ConfigMap update would.
    pub fn write_pods(&self, pods: &str) -> Result<()> {
        let tmp = self.dir.join("pods.yaml.tmp");
        std::fs::write(&tmp, pods)?;
        std::fs::rename(&tmp, &self.pods_file).context("replacing the pods file")
    }

    /// SIGKILL, by PID, and reap.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }

    /// SIGTERM, by PID, and wait up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<()> {
        let Some(process) = self.process.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(process.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let out = process
            .wait_output(timeout)
            .with_context(|| format!("weir on SIGTERM; log:\n{}", self.log()))?;
        anyhow::ensure!(
            out.status.success(),
            "weir exited with {} on SIGTERM; log:\n{}",
            out.status,
            self.log()
        );
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A one-shot HTTP/1.1 GET with `connection: close`, in the caller's network namespace.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The `weir run` config of the demo and the node-traffic test: a
/// `bind_to_port: false` listener claims `service` (an address nothing
/// serves) and splits `/` 80/20 between two backends on :8080. `{admin}` is
/// left for [`AgentProcess`] to fill in.
pub fn split_service_config(service: &str, v1: &SimPod, v2: &SimPod) -> String {
    weighted_service_config(service, v1, v2, (80, 20))
}

/// [`split_service_config`] with other weights for v1 and v2.
pub fn weighted_service_config(
    service: &str,
    v1: &SimPod,
    v2: &SimPod,
    weights: (u32, u32),
) -> String {
    format!(
        r#"admin:
  address: "{{admin}}"
# The demo's and the tests' clients speak first; a loaded machine must not
# make one look server-first (the default waits 100 ms).
protocol_detection_timeout: 5s
listeners:
  - name: backend            # claims the service address for intercepted traffic
    address: {service}
    bind_to_port: false
    virtual_hosts:
      - name: backend
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            route:
              weighted_clusters:
                - {{ name: backend_v1, weight: {} }}
                - {{ name: backend_v2, weight: {} }}
clusters:
  # 1s, not seed 002's 0.25s: under QEMU (5.10) a connect to a pod once
  # took longer than 0.25s and a request of node_traffic's 1000 got a 503.
  - name: backend_v1
    connect_timeout: 1s
    endpoints: [{{ address: "{}", port: 8080 }}]
  - name: backend_v2
    connect_timeout: 1s
    endpoints: [{{ address: "{}", port: 8080 }}]
"#,
        weights.0, weights.1, v1.ip4, v2.ip4
    )
}

/// A `weir run` config in which each `(name, claimed, endpoint)` is a
/// `bind_to_port: false` listener claiming the address `claimed` and sending
/// every request to a cluster of the same name whose one endpoint is
/// `endpoint` (connect timeout 1 s); `{admin}` as in [`AgentProcess::start`].
pub fn claiming_config(routes: &[(&str, &str, SocketAddr)]) -> String {
    let mut listeners = String::new();
    let mut clusters = String::new();
    for (name, claimed, endpoint) in routes {
        listeners.push_str(&format!(
            "  - name: {name}\n    address: {claimed}\n    bind_to_port: false\n    virtual_hosts:\n      - name: {name}\n        domains: [\"*\"]\n        routes:\n          - match: {{ prefix: \"/\" }}\n            route: {{ cluster: {name} }}\n"
        ));
        clusters.push_str(&format!(
            "  - name: {name}\n    connect_timeout: 1s\n    endpoints: [{{ address: \"{}\", port: {} }}]\n",
            endpoint.ip(),
            endpoint.port()
        ));
    }
    format!(
        "admin:\n  address: \"{{admin}}\"\nprotocol_detection_timeout: 5s\nlisteners:\n{listeners}clusters:\n{clusters}"
    )
}

/// An agent config with one listener that answers itself: enough for tests
/// of the agent's life rather than its routing (`{admin}` as in [`AgentProcess::start`]).
pub const MINIMAL_CONFIG: &str = r#"
admin:
  address: "{admin}"
# Every client here speaks first: a loaded machine must not make one opaque.
protocol_detection_timeout: 5s
listeners:
  - name: unused
    address: 127.0.0.1:0
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { prefix: "/" }
            direct_response: { status: 200, body: "weir" }
clusters: []
"#;

/// One GET from `pod` to `target` on a new connection: the body (`server
/// from <source>` for sim-server), or `error: ...`.
pub fn get_once(pod: &SimPod, target: SocketAddr) -> String {
    let mut cmd = Command::new(crate::support::sim_client());
    cmd.args(["http", &target.to_string(), "server", "/", "1"]);
    match pod
        .spawn(cmd)
        .and_then(|p| p.wait_output(Duration::from_secs(15)))
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("1 200 ")
            .to_owned(),
        Ok(out) => format!("error: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("error: {e}"),
    }
}

/// The value of the first sample of `name` in a Prometheus exposition whose
/// labels contain every `labels` pair.
pub fn metric_sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
