//! A real Kubernetes API server for tests: etcd and kube-apiserver v1.20.2 on
//! 127.0.0.1, RBAC on, a static admin token, service-account tokens through the
//! TokenRequest API. There is no kubelet, scheduler or controller manager: tests
//! create Pods with `spec.nodeName` themselves and play the kubelet
//! ([`ConfigMapVolume`] for ConfigMap volumes, [`Cluster`] for pods and the
//! agent as the DaemonSet runs it).
//!
//! `cargo xtask kube-apiserver` builds and caches the server binary (`cargo
//! xtask test` does it first and passes its path in `WEIR_KUBE_APISERVER`).

mod cluster;
mod configmap_volume;
mod forward;
mod kubeconfig;
mod pki;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;

pub use cluster::{ADMIN, Cluster, DaemonSetAgent, KubePod, NAMESPACE, report_running};
pub use configmap_volume::ConfigMapVolume;
pub use forward::NodeForward;
pub use kubeconfig::client as client_from_kubeconfig;
use pki::Pki;
use process::{Process, free_port, require_binary};

use crate::support::TempDir;

const DEFAULT_APISERVER: &str = "/var/cache/weir/kube-apiserver-v1.20.2/kube-apiserver";
const ETCD: &str = "/usr/bin/etcd";
/// A port taken between our probe and the server's bind is retried this often.
const PORT_ATTEMPTS: usize = 3;
/// Startup on a loaded 2-core machine, RBAC bootstrap included, takes 10 to 40 s.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const ADMIN_USER: &str = "weir-test-admin";
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// etcd + kube-apiserver, both killed and their files removed on drop.
static RENDERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct ApiServer {
    // Dropped in this order: the server before its storage, both before their files.
    apiserver: Option<Process>,
    #[expect(
        dead_code,
        reason = "held for its Drop, which ends etcd after the server"
    )]
    etcd: Process,
    dir: TempDir,
    port: u16,
    etcd_port: u16,
    binary: PathBuf,
    pki: Pki,
    admin_kubeconfig: PathBuf,
    client: Client,
}

impl ApiServer {
    /// Starts etcd and the API server and waits until `/readyz` answers ok.
    pub async fn start() -> Result<ApiServer> {
        let binary = apiserver_binary();
        require_binary(&binary, "kube-apiserver")?;
        require_binary(Path::new(ETCD), "etcd")?;
        let dir = TempDir::new("weir-kube")?;
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs)?;
        let pki = Pki::create(&certs)?;
        let token = random_token()?;
        // The token file's form: token,user,uid,"group1,group2".
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n"),
        )?;
        let (etcd, etcd_port) = start_etcd(dir.path())?;
        let admin_kubeconfig = dir.path().join("kubeconfig-admin");
        let port = free_port()?;
        kubeconfig::write(
            &admin_kubeconfig,
            &url(port),
            &pki.ca_cert,
            ADMIN_USER,
            &token,
        )?;
        let client = kubeconfig::client(&admin_kubeconfig).await?;
        let mut server = ApiServer {
            apiserver: None,
            etcd,
            dir,
            port,
            etcd_port,
            binary,
            pki,
            admin_kubeconfig,
            client,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            match server.start_apiserver().await {
                Ok(()) => return Ok(server),
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && server
                            .apiserver
                            .as_mut()
                            .is_some_and(Process::lost_port_race) =>
                {
                    // Another process took the port between our probe and the
                    // server's bind: try another one.
                    server.apiserver = None;
                    server.port = free_port()?;
                    kubeconfig::write(
                        &server.admin_kubeconfig,
                        &server.url(),
                        &server.pki.ca_cert,
                        ADMIN_USER,
                        &token,
                    )?;
                    server.client = kubeconfig::client(&server.admin_kubeconfig).await?;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// An admin client (group system:masters, which RBAC lets do everything).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin kubeconfig, for kubectl and for an agent run against this server.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    pub fn url(&self) -> String {
        url(self.port)
    }

    /// The CA that signs the server's certificate (what a pod's service-account
    /// volume carries as `ca.crt`).
    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// A kubeconfig authenticating as the service account `namespace/name` with a
    /// token from the TokenRequest API, as a pod of that account holds one. What it
    /// may do is what RBAC grants the account.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let token = kubeconfig::service_account_token(&self.client, namespace, name).await?;
        let path = kubeconfig::service_account_path(self.dir.path(), namespace, name);
        let user = format!("system:serviceaccount:{namespace}:{name}");
        kubeconfig::write(&path, &self.url(), &self.pki.ca_cert, &user, &token)?;
        Ok(path)
    }

    /// Runs kubectl (`/usr/bin/kubectl` or the one on PATH) as the admin and
    /// returns its stdout; fails with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(args)
            .output()
            .context("running kubectl (is it installed?)")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The kustomize directory `dir` rendered into one file this server
    /// takes. It is v1.20, older than DaemonSet `maxSurge` (alpha in 1.21),
    /// and refuses the field and a `maxUnavailable` of 0: the base's
    /// surge-first rolling update (checked here) becomes one node at a
    /// time; everything else is applied as shipped.
    pub fn rendered_for_this_server(&self, dir: &Path) -> Result<PathBuf> {
        let rendered = self.kubectl(&["kustomize", &dir.to_string_lossy()])?;
        let surge = "    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n";
        anyhow::ensure!(
            rendered.contains(surge),
            "the DaemonSet must roll out surge-first (the new agent takes the pods over \
             before the old one stops):\n{rendered}"
        );
        let file = self.dir.path().join(format!(
            "rendered-{}.yaml",
            RENDERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(
            &file,
            rendered.replace(surge, "    rollingUpdate:\n      maxUnavailable: 1\n"),
        )?;
        Ok(file)
    }

    /// Stops kube-apiserver alone (etcd and every object stay), as an API outage.
    pub fn stop_apiserver(&mut self) {
        self.apiserver = None;
    }

    /// Starts kube-apiserver on the same port, certificates and etcd, and waits
    /// until it is ready. Does nothing more than wait when it is already running.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_none() {
            let mut cmd = Command::new(&self.binary);
            cmd.args(self.apiserver_args());
            let log = self.dir.path().join("kube-apiserver.log");
            self.apiserver = Some(Process::spawn("kube-apiserver", cmd, &log)?);
        }
        self.wait_ready().await
    }

    /// The PID of the running kube-apiserver, if it runs.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(Process::pid)
    }

    fn apiserver_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let certs = self.dir.path().join("certs");
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            // 1.20 still serves plain HTTP on 8080 unless told not to.
            "--insecure-port=0".into(),
            format!("--cert-dir={}", path(&certs)),
            format!("--tls-cert-file={}", path(&self.pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&self.pki.serving_key)),
            format!(
                "--token-auth-file={}",
                path(&self.dir.path().join("tokens.csv"))
            ),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!(
                "--service-account-signing-key-file={}",
                path(&self.pki.service_account_key)
            ),
            format!(
                "--service-account-key-file={}",
                path(&self.pki.service_account_pub)
            ),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            // With no controller manager nobody creates the token Secrets this
            // 1.20 admission plugin waits for, and every Pod create would fail.
            "--disable-admission-plugins=ServiceAccount".into(),
            // Nothing answers on 127.0.0.1 as a cluster endpoint for the
            // `kubernetes` Service; a reconciler would only log errors.
            "--endpoint-reconciler-type=none".into(),
            "--profiling=false".into(),
        ]
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let process = self
                .apiserver
                .as_mut()
                .context("kube-apiserver is stopped")?;
            if process.has_exited() {
                return Err(process.failure("exited before it was ready"));
            }
            let request = http::Request::get("/readyz").body(Vec::new())?;
            let probe =
                tokio::time::timeout(Duration::from_secs(5), self.client.request_text(request));
            if let Ok(Ok(body)) = probe.await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(process.failure(&format!("not ready within {READY_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn url(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// `WEIR_KUBE_APISERVER` (set by `cargo xtask test`), else the xtask's cache.
fn apiserver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_KUBE_APISERVER") {
        return PathBuf::from(path);
    }
    std::env::var_os("WEIR_KUBE_CACHE")
        .map(|dir| PathBuf::from(dir).join("kube-apiserver"))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_APISERVER))
}

fn start_etcd(dir: &Path) -> Result<(Process, u16)> {
    for _ in 0..PORT_ATTEMPTS {
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name=weir-test")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=weir-test={peer_url}"))
            .arg("--log-level=warn");
        let mut etcd = Process::spawn("etcd", cmd, &dir.join("etcd.log"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if process::etcd_healthy(client_port) {
                return Ok((etcd, client_port));
            }
            if etcd.lost_port_race() {
                break;
            }
            if etcd.has_exited() {
                return Err(etcd.failure("exited before it was healthy"));
            }
            if Instant::now() >= deadline {
                return Err(etcd.failure(&format!("not healthy within {READY_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(dir.join("etcd"));
    }
    bail!("etcd lost its ports to another process {PORT_ATTEMPTS} times")
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
