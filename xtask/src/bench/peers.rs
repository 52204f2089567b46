//! Starting the backend and the three proxies on 127.0.0.1, waiting until they
//! serve, and ending them by PID.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::configs::{self, BACKEND_BODY, Cert, LOAD_PATH, Ports};
use super::tools::Tools;
use benchkit::load::Mode;
use benchkit::measure;

/// The proxies compared, in the order the table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Weir,
    /// weir with an access log on every listener (text, to a file): the
    /// log's cost, next to plain weir.
    WeirLog,
    Envoy,
    Nginx,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Weir, Kind::WeirLog, Kind::Envoy, Kind::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Weir => "weir",
            Kind::WeirLog => "weir-log",
            Kind::Envoy => "envoy",
            Kind::Nginx => "nginx",
        }
    }

    /// A weir build (started with `weir proxy`).
    pub fn is_weir(self) -> bool {
        matches!(self, Kind::Weir | Kind::WeirLog)
    }

    pub fn parse(name: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name.trim())
            .with_context(|| {
                format!("unknown proxy {name:?}: expected weir, weir-log, envoy or nginx")
            })
    }
}

/// A started process, ended (with its descendants) when dropped.
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        // The child gets SIGKILL if xtask dies, so no peer outlives the run.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        println!("xtask: started {name} (pid {})", child.id());
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited (e.g. rejected its config).
    fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let tree = measure::process_tree(self.pid());
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Workers the process started (nginx) and that outlived it.
        for pid in tree.into_iter().skip(1) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions; pid is one we started.
        unsafe { libc::kill(pid, sig) };
    }
}

/// A free port on 127.0.0.1: the kernel picks it for a socket that is then
/// closed, so the peer can bind it.
pub fn free_port() -> Result<u16> {
    let socket = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

/// A running proxy under test.
pub struct Proxy {
    pub kind: Kind,
    pub proc: Proc,
    pub url: String,
    /// The TLS-terminating listener (`https://`).
    pub https_url: String,
    /// The cleartext listener for HTTP/2 with prior knowledge.
    pub h2c_url: String,
    /// weir's admin listener, Envoy's admin, nginx's stub_status server.
    pub admin: SocketAddr,
}

impl Proxy {
    /// The URL a load of `mode` hits.
    pub fn url_for(&self, mode: Mode) -> &str {
        match mode {
            Mode::KeepAlive
            | Mode::ConnectionPerRequest
            | Mode::RateKeepAlive
            | Mode::RateConnectionPerRequest => &self.url,
            Mode::TlsKeepAlive | Mode::H2 => &self.https_url,
            Mode::H2c => &self.h2c_url,
        }
    }
}

/// Starts the backend: nginx as a separate single process, not measured.
pub fn start_backend(tools: &Tools, dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let d = dir.to_string_lossy();
    let conf = write(dir, "backend.conf", &configs::backend(port, &d))?;
    std::fs::create_dir_all(dir.join("backend-tmp"))?;
    let log = dir.join("backend.log");
    let mut proc = Proc::spawn(
        "backend (nginx)",
        Command::new(&tools.nginx)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("backend.error.log"))
            .arg("-c")
            .arg(&conf),
        &log,
    )?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(&mut proc, &log, || serves_backend_body(addr, "/"))?;
    Ok((proc, port))
}

/// Starts one proxy in front of the backend and waits until a request
/// through it reaches the backend.
/// Its TLS and h2c listeners are checked by the warm-up.
pub fn start_proxy(
    kind: Kind,
    tools: &Tools,
    dir: &Path,
    backend: u16,
    cert: &Cert,
) -> Result<Proxy> {
    let ports = Ports {
        listener: free_port()?,
        admin: free_port()?,
        backend,
        https: free_port()?,
        h2c: free_port()?,
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let listener = SocketAddr::from(([127, 0, 0, 1], ports.listener));
    let log = dir.join(format!("{}.log", kind.name()));
    let (mut proc, ready_path) = match kind {
        Kind::Weir | Kind::WeirLog => {
            let weir = tools.weir.as_ref().context("weir was not built")?;
            let access_log = (kind == Kind::WeirLog).then(|| dir.join("weir-access.log"));
            let conf = write(
                dir,
                &format!("{}.yaml", kind.name()),
                &configs::weir(&ports, cert, access_log.as_deref()),
            )?;
            let mut cmd = Command::new(weir);
            cmd.arg("proxy")
                .arg("--config")
                .arg(&conf)
                .args(["--workers", "1"])
                .env("RUST_LOG", "warn");
            (Proc::spawn(kind.name(), &mut cmd, &log)?, "/ready")
        }
        Kind::Envoy => {
            let envoy = tools.envoy.as_ref().context("envoy was not installed")?;
            let conf = write(dir, "envoy.yaml", &configs::envoy(&ports, cert))?;
            let mut cmd = Command::new(envoy);
            cmd.arg("-c")
                .arg(&conf)
                .args(["--concurrency", "1", "--disable-hot-restart"])
                .args(["--log-level", "warn"]);
            (Proc::spawn("envoy", &mut cmd, &log)?, "/ready")
        }
        Kind::Nginx => {
            let d = dir.to_string_lossy();
            let conf = write(
                dir,
                "nginx-proxy.conf",
                &configs::nginx_proxy(&ports, cert, &d),
            )?;
            std::fs::create_dir_all(dir.join("nginx-proxy-tmp"))?;
            let mut cmd = Command::new(&tools.nginx);
            cmd.arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("nginx-proxy.error.log"))
                .arg("-c")
                .arg(&conf);
            (Proc::spawn("nginx", &mut cmd, &log)?, "/stub_status")
        }
    };
    wait_until(&mut proc, &log, || {
        http_get(admin, ready_path).is_ok_and(|(status, _)| status == 200)
    })
    .with_context(|| {
        format!(
            "{}'s admin {admin}{ready_path} never answered 200",
            kind.name()
        )
    })?;
    wait_until(&mut proc, &log, || serves_backend_body(listener, LOAD_PATH)).with_context(
        || {
            format!(
                "{} never proxied {listener}{LOAD_PATH} to the backend",
                kind.name()
            )
        },
    )?;
    Ok(Proxy {
        kind,
        proc,
        url: format!("http://{listener}{LOAD_PATH}"),
        https_url: format!("https://127.0.0.1:{}{LOAD_PATH}", ports.https),
        h2c_url: format!("http://127.0.0.1:{}{LOAD_PATH}", ports.h2c),
        admin,
    })
}

fn write(dir: &Path, name: &str, text: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Polls `ready` for up to 30 s, failing early if the process exits.
fn wait_until(proc: &mut Proc, log: &Path, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        proc.check_alive(log)?;
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} not ready after 30 s (log: {})",
        proc.name,
        log.display()
    )
}

fn serves_backend_body(addr: SocketAddr, path: &str) -> bool {
    http_get(addr, path).is_ok_and(|(status, body)| status == 200 && body == BACKEND_BODY)
}

/// A one-shot HTTP/1.1 GET with `Connection: close`; returns the status and
/// the body (de-chunked when the server chunked it).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.take(16 << 20).read_to_string(&mut response)?;
    parse_response(&response).with_context(|| format!("response from {addr}{path}"))
}

fn parse_response(response: &str) -> Result<(u16, String)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    // Each pass consumes one chunk; the body is finite, so this ends.
    loop {
        let (size, after) = rest.split_once("\r\n").context("truncated chunk size")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok((status, out));
        }
        let chunk = after.get(..size).context("truncated chunk")?;
        out.push_str(chunk);
        rest = after[size..]
            .strip_prefix("\r\n")
            .context("no CRLF after chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_responses() {
        let plain = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(parse_response(plain).unwrap(), (200, "abc".to_owned()));
        let chunked = "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n\
                       4\r\nLIVE\r\n2\r\n\n!\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (503, "LIVE\n!".to_owned())
        );
        assert!(parse_response("HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
