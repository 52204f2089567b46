//! `weir status` against a running agent on a simulated node, as root: an
//! operator asking "why is this pod not intercepted" finds the answer per
//! pod (enrolled, not annotated, an invalid annotation and which, failing
//! to enroll and why), and a refused config reload shows with its error
//! while the generation before it keeps serving.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use weir_tests::agent::{AgentProcess, MINIMAL_CONFIG, weir_bin};
use weir_tests::pins::PinRoot;
use weir_tests::support::require_root;
use weir_tests::{SimNode, wait};

/// `weir status` with `args`, run where the admin listener is (the node's
/// router namespace); its stdout.
fn weir_status(node: &SimNode, agent: &AgentProcess, args: &[&str]) -> Result<String> {
    let weir = weir_bin()?;
    let admin = agent.admin.to_string();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = node.router().run(move || {
        Command::new(&weir)
            .args(["status", "--admin", &admin])
            .args(&args)
            .output()
    })??;
    ensure!(
        out.status.success(),
        "weir status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn status_json(node: &SimNode, agent: &AgentProcess) -> Result<Value> {
    Ok(serde_json::from_str(&weir_status(
        node,
        agent,
        &["-o", "json"],
    )?)?)
}

fn pod<'a>(status: &'a Value, name: &str) -> Result<&'a Value> {
    status["pods"]
        .as_array()
        .context("no pods in the status")?
        .iter()
        .find(|p| p["pod"] == format!("default/{name}"))
        .with_context(|| format!("pod {name} not in the status: {status:#}"))
}

#[test]
fn status_says_which_pods_are_enrolled_and_why_the_others_are_not() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let enrolled = node.add_pod("enrolled")?;
    let invalid = node.add_pod("invalid")?;
    let plain = node.add_pod("plain")?;
    let _processes = [&enrolled, &invalid, &plain]
        .iter()
        .map(|p| p.start_pause())
        .collect::<Result<Vec<_>>>()?;
    let enroll = ("weir.dev/enroll", "true");
    // A pod the source lists whose cgroup is not there (yet): enrolling fails.
    let missing = "  - namespace: default\n    name: missing\n    uid: 0e4b5d7a-missing\n    \
                   ips: [\"203.0.113.250\"]\n    cgroup: /sys/fs/cgroup/weir-test-no-such-pod\n    \
                   annotations:\n      weir.dev/enroll: \"true\"\n";
    let pods = format!(
        "pods:\n{}{}{}{missing}",
        enrolled.pods_file_entry(&[enroll, ("weir.dev/fail-mode", "closed")]),
        invalid.pods_file_entry(&[enroll, ("weir.dev/max-cpu", "lots")]),
        plain.pods_file_entry(&[]),
    );
    let agent = AgentProcess::start(&node, MINIMAL_CONFIG, &pods, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;

    let status = status_json(&node, &agent)?;
    ensure!(status["ready"] == true, "{status:#}");
    ensure!(status["config"]["generation"] == 1, "{status:#}");
    let programs = status["datapath"]["programs"].to_string();
    ensure!(programs.contains("connect4"), "data path: {programs}");

    let p = pod(&status, "enrolled")?;
    ensure!(p["state"] == "enrolled", "{p:#}");
    ensure!(p["policy"]["fail_mode"] == "closed", "{p:#}");
    ensure!(p["ips"][0] == enrolled.ip4.to_string(), "{p:#}");
    let p = pod(&status, "invalid")?;
    ensure!(p["state"] == "invalid_annotation", "{p:#}");
    let why = p["reason"].as_str().unwrap_or_default();
    ensure!(
        why.contains("weir.dev/max-cpu") && why.contains("lots"),
        "{p:#}"
    );
    let p = pod(&status, "plain")?;
    ensure!(p["state"] == "not_annotated", "{p:#}");
    let p = pod(&status, "missing")?;
    ensure!(p["state"] == "failing", "{p:#}");
    let why = p["reason"].as_str().unwrap_or_default();
    ensure!(why.contains("weir-test-no-such-pod"), "{p:#}");

    let table = weir_status(&node, &agent, &[])?;
    for want in [
        "Pods on this node: 4 listed, 1 enrolled",
        "default/enrolled",
        "invalid_annotation",
        "not_annotated",
        "Config: generation 1",
    ] {
        ensure!(table.contains(want), "{want:?} not in:\n{table}");
    }

    // A broken config is refused; the status names the error and the
    // generation that keeps serving.
    std::fs::write(&agent.config_file, "listeners: [")?;
    let mut last = Value::Null;
    let refused = wait::until(Duration::from_secs(20), || {
        last = status_json(&node, &agent).unwrap_or(Value::Null);
        !last["config"]["last_refused"].is_null()
    });
    ensure!(refused, "no refusal in the status: {last:#}");
    ensure!(last["config"]["generation"] == 1, "{last:#}");
    let error = last["config"]["last_refused"]["error"].to_string();
    ensure!(
        error.contains(&agent.config_file.display().to_string()),
        "the error names the file: {error}"
    );
    let table = weir_status(&node, &agent, &[])?;
    ensure!(
        table.contains("a reload was refused"),
        "the table says so:\n{table}"
    );
    Ok(())
}
