//! `weir uninstall` after the agent is gone (the DaemonSet deleted): every
//! pinned link, program and map weir left in the kernel is freed, the pin root
//! is gone, and pods that were enrolled (a fail-closed one included) reach
//! their destinations directly. A plain SIGTERM, by contrast, keeps the pins.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::MapInfo;
use aya::programs::links::{FdLink, PinnedLink};
use weir_tests::agent::{AgentProcess, MINIMAL_CONFIG, get_once, weir_bin};
use weir_tests::pins::PinRoot;
use weir_tests::scenario::ThreePods;
use weir_tests::support::require_root;
use weir_tests::{SimNode, wait};

/// The kernel IDs of what is pinned under `root`: links and the programs
/// they hold, and maps. The descriptors opened to read them are closed again.
#[derive(Debug, Default)]
struct Pinned {
    links: HashSet<u32>,
    programs: HashSet<u32>,
    maps: HashSet<u32>,
}

fn pinned_ids(files: &[std::path::PathBuf]) -> Result<Pinned> {
    let mut ids = Pinned::default();
    for file in files {
        let in_maps = file
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "maps");
        if in_maps {
            let info = MapInfo::from_pin(file).with_context(|| format!("{}", file.display()))?;
            ids.maps.insert(info.id());
        } else {
            let link = FdLink::from(
                PinnedLink::from_pin(file).with_context(|| format!("{}", file.display()))?,
            );
            let info = link.info()?;
            ids.links.insert(info.id());
            ids.programs.insert(info.program_id());
        }
    }
    Ok(ids)
}

fn live() -> Pinned {
    Pinned {
        links: aya::programs::loaded_links()
            .filter_map(Result::ok)
            .map(|l| l.id())
            .collect(),
        programs: aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .collect(),
        maps: aya::maps::loaded_maps()
            .filter_map(Result::ok)
            .map(|m| m.id())
            .collect(),
    }
}

fn uninstall(pin_root: &Path) -> Result<std::process::Output> {
    Ok(Command::new(weir_bin()?)
        .arg("uninstall")
        .arg("--pin-root")
        .arg(pin_root)
        .output()?)
}

#[test]
fn uninstall_after_the_agent_leaves_nothing_in_the_kernel() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let node = SimNode::new()?;
    let three = ThreePods::start(&node)?;
    let (client, locked, http) = (&three.client, &three.locked, three.http);
    let pods = three.pods_file();
    let mut agent = AgentProcess::start(&node, MINIMAL_CONFIG, &pods, pins.path())?;
    agent.wait_ready(&node, Duration::from_secs(20))?;
    assert_eq!(
        get_once(client, http),
        "server from 127.0.0.6",
        "{}",
        agent.log()
    );

    // SIGTERM keeps the pinned data path: the fail-closed pod is refused.
    agent.terminate(Duration::from_secs(10))?;
    let files = pins.pinned_files();
    assert!(!files.is_empty(), "SIGTERM removed the pins");
    let refused = get_once(locked, http);
    assert!(refused.contains("Operation not permitted"), "{refused}");
    let ours = pinned_ids(&files)?;
    assert!(!ours.links.is_empty() && !ours.maps.is_empty(), "{ours:?}");

    let out = uninstall(pins.path())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "removed {} pinned object(s) of 3 pod(s)",
            files.len()
        )),
        "{stdout}"
    );
    assert!(!pins.path().exists(), "the pin root is still there");
    // The kernel frees them once the last reference is gone, a moment later.
    let freed = wait::until(Duration::from_secs(10), || {
        let now = live();
        now.links.is_disjoint(&ours.links)
            && now.programs.is_disjoint(&ours.programs)
            && now.maps.is_disjoint(&ours.maps)
    });
    let now = live();
    assert!(
        freed,
        "left in the kernel: links {:?}, programs {:?}, maps {:?}",
        now.links.intersection(&ours.links).collect::<Vec<_>>(),
        now.programs
            .intersection(&ours.programs)
            .collect::<Vec<_>>(),
        now.maps.intersection(&ours.maps).collect::<Vec<_>>()
    );
    // Un-enrolled: every pod, the fail-closed one too, goes direct.
    assert_eq!(
        get_once(locked, http),
        format!("server from {}", locked.ip4)
    );
    assert_eq!(
        get_once(client, http),
        format!("server from {}", client.ip4)
    );

    // Again: nothing to do, and still fine.
    let again = uninstall(pins.path())?;
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("removed 0 pinned object(s)"));
    Ok(())
}

#[test]
fn uninstall_refuses_a_directory_that_is_not_weirs() -> Result<()> {
    require_root();
    let dir = std::env::temp_dir().join(format!("weir-uninstall-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("keep-me"), "data")?;
    let out = uninstall(&dir)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let kept = dir.join("keep-me").exists();
    std::fs::remove_dir_all(&dir)?;
    assert!(
        !out.status.success(),
        "uninstall accepted {}",
        dir.display()
    );
    assert!(stderr.contains("bpffs"), "{stderr}");
    assert!(kept, "uninstall deleted a file that was not weir's");
    Ok(())
}
