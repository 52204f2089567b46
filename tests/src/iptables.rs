//! NAT REDIRECT rules in a simulated pod's network namespace, as a sidecar
//! mesh installs them (the seeds' way: Istio's init container), and never in
//! the host's tables.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::SimPod;

/// A NAT REDIRECT rule in one pod's namespace, deleted on drop (the
/// namespace, and the rule with it, goes when the pod does anyway).
pub struct IptablesRedirect {
    netns: String,
    /// The rule as `iptables` takes it after the action: `-t nat CHAIN -p tcp ...`.
    pub spec: Vec<String>,
}

impl IptablesRedirect {
    /// `-t nat -A <chain> -p tcp <matching> -j REDIRECT --to-ports <to_port>`.
    pub fn add(pod: &SimPod, chain: &str, matching: &[&str], to_port: u16) -> Result<Self> {
        let mut spec: Vec<String> = ["-t", "nat", chain, "-p", "tcp"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        spec.extend(matching.iter().map(|s| (*s).to_owned()));
        spec.extend([
            "-j".into(),
            "REDIRECT".into(),
            "--to-ports".into(),
            to_port.to_string(),
        ]);
        let rule = Self {
            netns: pod.netns_name().to_owned(),
            spec,
        };
        rule.iptables("-A")?;
        Ok(rule)
    }

    /// `ip netns exec <pod ns> iptables -t nat <action> <chain> ...`: never the host's tables.
    fn iptables(&self, action: &str) -> Result<()> {
        let (table, chain_and_match) = self.spec.split_at(2);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "iptables"])
            .args(table)
            .arg(action)
            .args(chain_and_match)
            .output()
            .context("running ip netns exec ... iptables")?;
        if !out.status.success() {
            bail!(
                "iptables {action} in {}: {}",
                self.netns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for IptablesRedirect {
    fn drop(&mut self) {
        if let Err(e) = self.iptables("-D") {
            eprintln!("bench: {e:#}");
        }
    }
}
