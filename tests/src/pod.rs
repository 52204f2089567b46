//! A simulated pod: network namespace + veth + kubelet-style cgroup + processes.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weir::netns::NetNs;

use crate::cmd::ip;
use crate::node::{NodeInner, remove_cgroup_tree};
use crate::wait;

pub struct SimPod {
    pub name: String,
    pub uid: String,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
    /// Its index in the node's pod network (its address's offset).
    index: u32,
    ns_name: String,
    netns: NetNs,
    cgroup_dir: PathBuf,
    /// Dropped last: the node outlives its pods.
    node: Arc<NodeInner>,
}

impl SimPod {
    pub(crate) fn create(
        node: Arc<NodeInner>,
        name: &str,
        uid: &str,
        index: u32,
        cgroup_dir: PathBuf,
    ) -> Result<Self> {
        let ns_name = format!("{}-p{index}", node.id);
        ip(&["netns", "add", &ns_name])?;
        let netns = match NetNs::open(format!("/run/netns/{ns_name}")) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = ip(&["netns", "del", &ns_name]);
                return Err(e.into());
            }
        };
        let pod = Self {
            name: name.to_owned(),
            uid: uid.to_owned(),
            ip4: node.options.net.v4(index),
            ip6: node.options.net.v6(index),
            index,
            ns_name,
            netns,
            cgroup_dir,
            node,
        };
        pod.wire().with_context(|| format!("wiring pod {name}"))?;
        std::fs::create_dir_all(&pod.cgroup_dir)
            .with_context(|| format!("creating cgroup {}", pod.cgroup_dir.display()))?;
        Ok(pod)
    }

    fn wire(&self) -> Result<()> {
        let router = self.node.router_ns_name.as_str();
        let pod = self.ns_name.as_str();
        let net = self.node.options.net;
        let len = net.cidr_v4();
        let len = len.split('/').nth(1).unwrap_or("24").to_owned();
        let veth = format!("veth{}", self.index);
        ip(&[
            "-n", router, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
            pod,
        ])?;
        ip(&["-n", router, "link", "set", &veth, "master", "br0", "up"])?;
        ip(&["-n", pod, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            pod,
            "addr",
            "add",
            &format!("{}/{len}", self.ip4),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            pod,
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.ip6),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", pod, "link", "set", "eth0", "up"])?;
        // Only the service ranges and a linked node's pods are routed,
        // through the node: no default route.
        let (gateway4, gateway6) = (net.v4(1).to_string(), net.v6(1).to_string());
        let mut v4 = vec![crate::SERVICE_NET_V4.to_owned()];
        let mut v6 = vec![crate::SERVICE_NET_V6.to_owned()];
        for other in net.others() {
            v4.push(other.cidr_v4());
            v6.push(other.cidr_v6());
        }
        for to in &v4 {
            ip(&["-n", pod, "route", "add", to, "via", &gateway4])?;
        }
        for to in &v6 {
            ip(&["-n", pod, "-6", "route", "add", to, "via", &gateway6])?;
        }
        Ok(())
    }

    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    /// The pod's cgroup v2 directory (kubelet layout under the node's subtree).
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup_dir
    }

    /// The name `ip netns` knows the pod's namespace by.
    pub fn netns_name(&self) -> &str {
        &self.ns_name
    }

    /// Starts `cmd` as a process of the pod: in its cgroup, then in its network
    /// namespace (in that order: entering the namespace first would hide the
    /// cgroup filesystem behind the namespace's own /sys).
    pub fn spawn(&self, cmd: Command) -> Result<PodProcess> {
        self.spawn_with(cmd, true)
    }

    /// Starts `cmd` in the pod's network namespace but outside its cgroup, like
    /// a process the pod's programs must not touch.
    pub fn spawn_outside_cgroup(&self, cmd: Command) -> Result<PodProcess> {
        self.spawn_with(cmd, false)
    }

    /// [`SimPod::spawn_outside_cgroup`] for a long-lived process with much
    /// output: its stdout and stderr go to the file `log` (created or
    /// truncated), not to pipes nobody reads while it runs.
    pub fn spawn_outside_cgroup_logged(&self, cmd: Command, log: &Path) -> Result<PodProcess> {
        self.spawn_to_file(cmd, log, false)
    }

    /// [`SimPod::spawn`] (in the pod's cgroup) for a process whose output is
    /// read while it runs: its stdout and stderr go to the file `log`.
    pub fn spawn_logged(&self, cmd: Command, log: &Path) -> Result<PodProcess> {
        self.spawn_to_file(cmd, log, true)
    }

    fn spawn_to_file(&self, mut cmd: Command, log: &Path, in_cgroup: bool) -> Result<PodProcess> {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(file.try_clone()?).stderr(file);
        let cgroup = in_cgroup.then_some(self.cgroup_dir.as_path());
        spawn_in(&self.netns, cgroup, cmd).with_context(|| format!("in pod {}", self.name))
    }

    fn spawn_with(&self, mut cmd: Command, in_cgroup: bool) -> Result<PodProcess> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let cgroup = in_cgroup.then_some(self.cgroup_dir.as_path());
        spawn_in(&self.netns, cgroup, cmd).with_context(|| format!("in pod {}", self.name))
    }

    /// Starts the pod's long-lived process (the pause container's role), which
    /// gives the agent a PID to find the pod's namespace by.
    pub fn start_pause(&self) -> Result<PodProcess> {
        let mut cmd = Command::new("sleep");
        cmd.arg("3600");
        self.spawn(cmd)
    }

    /// Starts a server `program args` in the pod and waits until it accepts on
    /// `port` (on the pod's loopback).
    pub fn start_server(&self, program: &Path, args: &[&str], port: u16) -> Result<PodProcess> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let process = self.spawn(cmd)?;
        let listening = wait::until(Duration::from_secs(10), || {
            self.netns()
                .run(move || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
                .unwrap_or(false)
        });
        anyhow::ensure!(
            listening,
            "{} {args:?} did not start listening in pod {}",
            program.display(),
            self.name
        );
        Ok(process)
    }

    /// The tests' HTTP application on port 8080, answering
    /// `server from <peer>` (so a request weir delivered, from 127.0.0.6, is
    /// told from one that came direct); with its address on the pod's IPv4.
    pub fn start_http_app(&self) -> Result<(PodProcess, std::net::SocketAddr)> {
        let process = self.start_server(
            &crate::support::sim_server(),
            &["http", "server", "0.0.0.0:8080"],
            8080,
        )?;
        Ok((process, std::net::SocketAddr::new(self.ip4.into(), 8080)))
    }

    /// This pod as an entry of a weir pods file (`docs/pods.md`), in namespace
    /// `default`, located by its cgroup, with `annotations`.
    pub fn pods_file_entry(&self, annotations: &[(&str, &str)]) -> String {
        let mut entry = format!(
            "  - namespace: default\n    name: {}\n    uid: {}\n    ips: [\"{}\", \"{}\"]\n    cgroup: {}\n",
            self.name,
            self.uid,
            self.ip4,
            self.ip6,
            self.cgroup_dir.display()
        );
        if !annotations.is_empty() {
            entry.push_str("    annotations:\n");
            for (key, value) in annotations {
                entry.push_str(&format!("      {key}: \"{value}\"\n"));
            }
        }
        entry
    }

    /// PIDs currently in the pod's cgroup.
    pub fn cgroup_pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.cgroup_dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for SimPod {
    fn drop(&mut self) {
        // Every process in the pod's cgroup was started by this harness.
        if self.cgroup_dir.exists() {
            let _ = std::fs::write(self.cgroup_dir.join("cgroup.kill"), "1");
            if !wait::until(Duration::from_secs(5), || self.cgroup_pids().is_empty()) {
                eprintln!(
                    "simnode: processes still in {} after cgroup.kill",
                    self.cgroup_dir.display()
                );
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.ns_name]) {
            eprintln!("simnode: {e}");
        }
        // The kubelet layout's intermediate directories (kubepods/besteffort) are
        // shared by the node's pods; the node removes them.
        remove_cgroup_tree(&self.cgroup_dir);
    }
}

/// Starts `cmd` in `netns`, and first in the cgroup `cgroup` when given (in
/// that order: entering the namespace first would hide the cgroup filesystem
/// behind the namespace's own /sys).
pub(crate) fn spawn_in(
    netns: &NetNs,
    cgroup: Option<&Path>,
    mut cmd: Command,
) -> Result<PodProcess> {
    let procs = match cgroup {
        Some(dir) => {
            let path = dir.join("cgroup.procs");
            Some(
                File::options()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )
        }
        None => None,
    };
    let netns = netns
        .file()
        .try_clone()
        .context("duplicating the netns handle")?;
    cmd.stdin(Stdio::null());
    // SAFETY: between fork and exec the closure only makes the write and
    // setns system calls on descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &procs {
                // "0" moves the writing process itself.
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    Ok(PodProcess { child: Some(child) })
}

/// A process started in a pod; killed (by its PID) and reaped on drop.
pub struct PodProcess {
    child: Option<Child>,
}

impl PodProcess {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Waits up to `timeout` for the process to exit and returns its output.
    /// Meant for short-lived commands with small output.
    pub fn wait_output(mut self, timeout: Duration) -> Result<Output> {
        let mut child = self.child.take().context("process already reaped")?;
        let mut status = None;
        wait::until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "process did not exit within {timeout:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(child.wait_with_output()?)
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
