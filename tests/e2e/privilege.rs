//! Least privilege: `weir run` started as a container that drops ALL and adds
//! only what `weir capabilities` lists works end to end; once the data path
//! is loaded its main thread holds only enrolment's capabilities, its
//! proxy threads hold nothing and its socket factory `CAP_SYS_ADMIN` alone; without one capability it refuses to start,
//! naming it.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use weir::privilege::{Capability, ENROLMENT, REQUIRED, SOCKET_FACTORY, workers_need_bpf};
use weir_tests::SimNode;
use weir_tests::agent::{AgentOptions, AgentProcess, MINIMAL_CONFIG, get_once, weir_bin};
use weir_tests::pins::PinRoot;
use weir_tests::support::require_root;

/// `cap_bpf` -> `bpf`, as setpriv names it.
fn setpriv_name(cap: Capability) -> String {
    cap.to_string().trim_start_matches("CAP_").to_lowercase()
}

fn mask(caps: impl IntoIterator<Item = Capability>) -> u64 {
    caps.into_iter().fold(0, |m, c| m | c.bitmask())
}

/// `CapEff`, `CapPrm`, `CapBnd` of one thread.
fn thread_caps(status: &str) -> HashMap<String, u64> {
    status
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            let value = u64::from_str_radix(value.trim(), 16).ok()?;
            key.starts_with("Cap").then(|| (key.to_owned(), value))
        })
        .collect()
}

#[test]
fn the_agent_runs_with_only_what_it_declares_and_drops_the_rest() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let client = node.add_pod("client")?;
    let server = node.add_pod("server")?;
    let _pauses = [client.start_pause()?, server.start_pause()?];
    let (_app, http) = server.start_http_app()?;
    let pods = format!(
        "pods:\n{}{}",
        client.pods_file_entry(&[("weir.dev/enroll", "true")]),
        server.pods_file_entry(&[("weir.dev/enroll", "true")])
    );
    let options = AgentOptions {
        capabilities: Some(
            REQUIRED
                .iter()
                .map(|r| setpriv_name(r.capability))
                .collect(),
        ),
        ..AgentOptions::default()
    };
    let agent =
        AgentProcess::start_with_options(&node, MINIMAL_CONFIG, &pods, pins.path(), options)?;
    agent.wait_ready(&node, Duration::from_secs(20))?;

    // Intercepted both ways with nothing more than the declared set.
    assert_eq!(
        get_once(&client, http),
        "server from 127.0.0.6",
        "agent log:\n{}",
        agent.log()
    );

    let pid = agent.pid().context("agent running")?;
    let main = thread_caps(&std::fs::read_to_string(format!("/proc/{pid}/status"))?);
    let enrolment = mask(ENROLMENT.iter().copied());
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            main[set], enrolment,
            "main thread {set}: {:#x}, expected enrolment's {enrolment:#x}",
            main[set]
        );
    }
    assert_eq!(main["CapInh"], 0);
    assert_eq!(main["CapAmb"], 0);

    // Every other thread: the proxy's workers and blocking pool hold
    // nothing (CAP_BPF only where this kernel checks it per call); the one
    // socket factory for all pods CAP_SYS_ADMIN alone, permitted and not
    // effective (raised around each setns only).
    let worker_allowed = if workers_need_bpf()? {
        Capability::CAP_BPF.bitmask()
    } else {
        0
    };
    let factory_allowed = mask(SOCKET_FACTORY.iter().copied());
    let mut workers = 0;
    let mut factories = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        if task.file_name().to_string_lossy() == pid.to_string() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let name = status.lines().next().unwrap_or_default().to_owned();
        let caps = thread_caps(&status);
        if name.contains("weir-sockets") {
            factories += 1;
            assert_eq!(caps["CapPrm"], factory_allowed, "{name}: permitted set");
            assert_eq!(
                caps["CapEff"] & !factory_allowed,
                0,
                "{name}: effective set {:#x}",
                caps["CapEff"]
            );
            continue;
        }
        for set in ["CapEff", "CapPrm"] {
            assert_eq!(
                caps[set] & !worker_allowed,
                0,
                "{name} (task {:?}) holds {set} {:#x}",
                task.file_name(),
                caps[set]
            );
        }
        if name.contains("weir-worker") {
            workers += 1;
            assert_eq!(
                caps["CapBnd"] & !worker_allowed,
                0,
                "{name}: bounding set {:#x}",
                caps["CapBnd"]
            );
        }
    }
    assert!(workers > 0, "no proxy worker thread found");
    assert_eq!(factories, 1, "one socket factory thread for the two pods");
    Ok(())
}

#[test]
fn without_a_declared_capability_the_agent_refuses_to_start_and_names_it() -> Result<()> {
    require_root();
    let dir = tempdir()?;
    let config = dir.join("config.yaml");
    let pods = dir.join("pods.yaml");
    std::fs::write(&config, MINIMAL_CONFIG.replace("{admin}", "127.0.0.1:0"))?;
    std::fs::write(&pods, "pods: []\n")?;
    for missing in REQUIRED {
        let keep: String = REQUIRED
            .iter()
            .filter(|r| r.capability != missing.capability)
            .map(|r| format!(",+{}", setpriv_name(r.capability)))
            .collect();
        let out = Command::new("setpriv")
            .arg(format!("--bounding-set=-all{keep}"))
            .arg("--inh-caps=-all")
            .arg("--")
            .arg(weir_bin()?)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--pods")
            .arg(&pods)
            .args(["--pin-root", "/sys/fs/bpf/weir-never-created"])
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "started without {}",
            missing.capability
        );
        assert!(
            stderr.contains(&format!("missing capabilities: {}", missing.capability)),
            "without {}: {stderr}",
            missing.capability
        );
    }
    assert!(!std::path::Path::new("/sys/fs/bpf/weir-never-created").exists());
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-privilege-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn weir_capabilities_prints_the_declared_set() -> Result<()> {
    let out = Command::new(weir_bin()?).arg("capabilities").output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    let listed: Vec<&str> = text.lines().filter_map(|l| l.split('\t').next()).collect();
    let declared: Vec<String> = REQUIRED.iter().map(|r| r.capability.to_string()).collect();
    assert_eq!(listed, declared);
    Ok(())
}
