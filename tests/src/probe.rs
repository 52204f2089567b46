//! Probing a claimed service address from inside pods, as the enrolment
//! benchmarks do: weir claims [`SERVICE`] with a `direct_response` 200 and
//! the node's router holds the address with nothing listening, so a pod's
//! call there is refused until weir serves the pod and answered after.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::support::sim_client;
use crate::{PodProcess, SimPod};

/// The address weir claims; nothing else answers there.
pub const SERVICE: &str = "198.51.100.20:80";

/// A `weir run` config with the admin listener at `admin` and [`SERVICE`]
/// claimed (`bind_to_port: false`), answering 200 `weir` itself.
pub fn claimed_service_config(admin: &str) -> String {
    format!(
        r#"admin:
  address: "{admin}"
listeners:
  - name: claimed
    address: {SERVICE}
    bind_to_port: false
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: {{ prefix: "/" }}
            direct_response: {{ status: 200, body: "weir" }}
clusters: []
"#
    )
}

/// Now, in µs since the epoch, as the probes print it.
pub fn epoch_us() -> Result<i64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64)
}

/// `sim-client until-ok` on [`SERVICE`] in the pod: a GET on a new
/// connection every `gap_ms` until one answers 200, bounded by `timeout`.
pub fn start_probe(pod: &SimPod, gap_ms: u64, timeout: Duration) -> Result<PodProcess> {
    let mut cmd = Command::new(sim_client());
    cmd.args(["until-ok", SERVICE, "enrol", "/"])
        .arg(gap_ms.to_string())
        .arg(timeout.as_millis().to_string());
    pod.spawn(cmd)
}

/// The probe's `ok EPOCH_US ATTEMPTS`: the wall-clock time of its first 200.
pub fn probe_result(probe: PodProcess, name: &str, wait: Duration) -> Result<i64> {
    let out = probe.wait_output(wait)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pod {name}: never answered by weir: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    text.split_whitespace()
        .nth(1)
        .and_then(|us| us.parse().ok())
        .with_context(|| format!("pod {name}: probe printed {text:?}"))
}

/// Whether each pod's call to [`SERVICE`] is refused by the node again
/// (within 5 s, all pods at once): how many are, and for the others what
/// their calls met instead.
pub fn refused_again(pods: &[&SimPod]) -> Result<(usize, Vec<String>)> {
    let checks: Vec<PodProcess> = pods
        .iter()
        .map(|pod| {
            let mut cmd = Command::new(sim_client());
            cmd.args(["until-refused", SERVICE, "5", "5000"]);
            pod.spawn(cmd)
        })
        .collect::<Result<_>>()?;
    let mut refused = 0;
    let mut not_refused = Vec::new();
    for (check, pod) in checks.into_iter().zip(pods) {
        let why = match check.wait_output(Duration::from_secs(10)) {
            Ok(out) if out.status.success() => {
                refused += 1;
                continue;
            }
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            Err(e) => format!("{e:#}"),
        };
        println!("bench: pod {}: {why}", pod.name);
        not_refused.push(format!("{}: {why}", pod.name));
    }
    Ok((refused, not_refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_validates() {
        weir::config::parse_str(&claimed_service_config("127.0.0.1:15000"), "probe").unwrap();
    }
}
