//! The etcd and kube-apiserver processes: ports the kernel picks, logs kept in
//! files for failure messages, and a guard that ends the process on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A port the kernel just handed out and that is free again. Another process
/// can take it before the server binds it; `is_port_race` tells that case apart.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A child process killed (SIGKILL) and reaped when dropped, panics included.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Process> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Process {
            name,
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error naming the process, how it ended if it did, and its log's tail.
    pub fn failure(&mut self, what: &str) -> anyhow::Error {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            _ => "still running".to_owned(),
        };
        anyhow::anyhow!(
            "{} {what} ({status}); last lines of {}:\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        )
    }

    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// True when the process died because its port was taken meanwhile.
    pub fn lost_port_race(&mut self) -> bool {
        self.has_exited() && self.log_tail().contains("address already in use")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGKILL: neither etcd's data nor the server's state outlives the test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd's /health over plain HTTP on loopback: true once it serves.
pub fn etcd_healthy(port: u16) -> bool {
    let answer = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        Ok(body)
    };
    answer().is_ok_and(|body| body.contains("\"health\":\"true\""))
}

/// The binary at `path`, or an error saying which xtask task provides it.
pub fn require_binary(path: &Path, what: &str) -> Result<()> {
    if !path.is_file() {
        bail!(
            "{what} not found at {}: run `cargo xtask kube-apiserver` (it installs etcd and builds \
             and caches kube-apiserver v1.20.2; `cargo xtask test` runs it for you)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_the_task_that_builds_it() {
        let err = require_binary(Path::new("/nonexistent/kube-apiserver"), "kube-apiserver")
            .expect_err("no such file");
        assert!(
            err.to_string().contains("cargo xtask kube-apiserver"),
            "{err}"
        );
    }
}
