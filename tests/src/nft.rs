//! A NetworkPolicy stand-in: an nftables rule in a pod's own network
//! namespace that admits TCP to one port only from one address (what a CNI
//! enforcing "ingress from pod X only" does for the pod), never in the
//! host's tables.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::SimPod;

/// The table the rule lives in; removed on drop.
const TABLE: &str = "weir_test_policy";

pub struct AllowOnlyFrom {
    netns: String,
}

impl AllowOnlyFrom {
    /// In `pod`'s namespace: TCP to `port` from any IPv4 address but
    /// `allowed` is dropped (so a connect from elsewhere times out, as
    /// under a NetworkPolicy), and so is any over IPv6.
    pub fn install(pod: &SimPod, port: u16, allowed: Ipv4Addr) -> Result<Self> {
        let rules = format!(
            "table inet {TABLE} {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority 0; policy accept;\n\
             \t\ttcp dport {port} ip saddr != {allowed} drop\n\
             \t\ttcp dport {port} meta nfproto ipv6 drop\n\
             \t}}\n\
             }}\n"
        );
        let policy = Self {
            netns: pod.netns_name().to_owned(),
        };
        policy.nft(&["-f", "-"], Some(&rules))?;
        Ok(policy)
    }

    /// `ip netns exec <pod ns> nft ARGS`, `stdin` fed to it.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ip netns exec ... nft (cargo xtask test installs nftables)")?;
        if let Some(text) = stdin
            && let Some(mut input) = child.stdin.take()
        {
            input.write_all(text.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft {} in {}: {}",
                args.join(" "),
                self.netns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for AllowOnlyFrom {
    fn drop(&mut self) {
        if let Err(e) = self.nft(&["delete", "table", "inet", TABLE], None) {
            eprintln!("simnode: {e:#}");
        }
    }
}
