//! A pinned data path outlives the agent: a fail-closed pod stays refused while
//! no agent runs, the next agent adopts the pinned state and resumes, and
//! un-enrolling or pruning leaves no pin behind.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::Result;
use weir::datapath::{Datapath, DatapathOptions, OrigDst};
use weir::inpod::EgressListeners;
use weir_common::POD_FLAG_FAIL_CLOSED;
use weir_tests::exchange::{Exchange, Placement, exchange};
use weir_tests::pins::PinRoot;
use weir_tests::service::ServiceServer;
use weir_tests::support::{close_listeners, require_root, sim_client};
use weir_tests::{SimNode, SimPod, wait};

const SERVICE: &str = "198.51.100.10:80";

fn connect(pod: &SimPod, datapath: &Datapath, listener: &TcpListener) -> Result<Exchange> {
    exchange(
        pod,
        &sim_client(),
        Placement::InPod,
        SERVICE.parse()?,
        listener,
        &datapath.orig_dst_table(),
    )
}

fn assert_redirected(result: &Exchange) {
    let target: SocketAddr = SERVICE.parse().unwrap();
    let accepted = result
        .accepted
        .as_ref()
        .unwrap_or_else(|| panic!("not redirected: {result:?}"));
    assert_eq!(accepted.orig_dst, Some(OrigDst(target)));
    assert_eq!(
        result.client_stdout,
        format!("weir: you were going to {target}\n")
    );
}

fn live_program_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

#[test]
fn next_agent_adopts_pinned_state_and_fail_closed_holds_in_between() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let options = DatapathOptions {
        pin_root: Some(pins.path().to_path_buf()),
        sk_msg: false,
    };
    let node = SimNode::new()?;
    let real = ServiceServer::start(&node, SERVICE.parse()?)?;
    let pod = node.add_pod("client")?;

    // Agent 1 enrolls the pod, fail-closed.
    let first_programs;
    {
        let mut datapath = Datapath::load_with(&options)?;
        first_programs = datapath.program_ids();
        let listeners = EgressListeners::bind(pod.netns())?;
        let registration = datapath.register_pod(
            listeners.netns_cookie,
            listeners.egress_settings(POD_FLAG_FAIL_CLOSED)?,
        )?;
        let egress = datapath.attach_egress(pod.cgroup_dir(), &pod.uid)?;
        assert_redirected(&connect(&pod, &datapath, &listeners.v4)?);
        // Agent 1 dies: every handle and descriptor goes away without cleanup.
        close_listeners(&pod, listeners)?;
        drop((egress, registration, datapath));
    }
    let pinned = pins.pinned_files();
    assert!(
        pinned
            .iter()
            .any(|p| p.ends_with(format!("pods/{}/weir_connect4", pod.uid))),
        "{pinned:?}"
    );
    assert!(
        pinned.iter().any(|p| p.ends_with("maps/WEIR_PODS")),
        "{pinned:?}"
    );

    // No agent: the pinned hooks keep the fail-closed pod refused.
    let stand_in = TcpListener::bind("127.0.0.1:0")?;
    let no_agent = Datapath::load()?; // only to read the (empty) table of a second instance
    let refused = connect(&pod, &no_agent, &stand_in)?;
    drop(no_agent);
    assert!(
        !refused.client_succeeded,
        "fail-closed while no agent runs: {refused:?}"
    );
    assert!(
        refused.client_stderr.contains("Operation not permitted"),
        "{refused:?}"
    );
    assert_eq!(real.served(), 0);

    // Agent 2 adopts: same pins, new listeners, the pinned links switch to its programs.
    let mut datapath = Datapath::load_with(&options)?;
    let listeners = EgressListeners::bind(pod.netns())?;
    let registration = datapath.register_pod(
        listeners.netns_cookie,
        listeners.egress_settings(POD_FLAG_FAIL_CLOSED)?,
    )?;
    let egress = datapath.attach_egress(pod.cgroup_dir(), &pod.uid)?;
    assert_redirected(&connect(&pod, &datapath, &listeners.v4)?);
    // Agent 1's programs were released once the links moved to agent 2's.
    let gone = wait::until(Duration::from_secs(5), || {
        live_program_ids().is_disjoint(&first_programs.iter().copied().collect())
    });
    assert!(gone, "agent 1's programs still loaded after adoption");

    // Un-enrolling removes the pod's pins and lets it connect directly.
    egress.remove();
    registration.remove();
    assert!(
        !pins
            .path()
            .join(format!(
                "v{}/pods/{}/weir_connect4",
                weir_common::MAP_LAYOUT_VERSION,
                pod.uid
            ))
            .exists(),
        "{:?}",
        pins.pinned_files()
    );
    let direct = connect(&pod, &datapath, &listeners.v4)?;
    assert!(direct.accepted.is_none(), "{direct:?}");
    assert_eq!(
        direct.client_stdout,
        format!("real server at {}\n", real.addr)
    );
    Ok(())
}

#[test]
fn a_pod_gone_while_no_agent_ran_is_pruned() -> Result<()> {
    require_root();
    let pins = PinRoot::new();
    let options = DatapathOptions {
        pin_root: Some(pins.path().to_path_buf()),
        sk_msg: false,
    };
    let node = SimNode::new()?;
    let stays = node.add_pod("stays")?;
    let leaves = node.add_pod("leaves")?;
    let stays_cookie;
    {
        let mut datapath = Datapath::load_with(&options)?;
        for pod in [&stays, &leaves] {
            let listeners = EgressListeners::bind(pod.netns())?;
            let registration =
                datapath.register_pod(listeners.netns_cookie, listeners.egress_settings(0)?)?;
            let egress = datapath.attach_egress(pod.cgroup_dir(), &pod.uid)?;
            drop((egress, registration));
        }
        stays_cookie = EgressListeners::bind(stays.netns())?.netns_cookie;
    }
    let mut datapath = Datapath::load_with(&options)?;
    let uids = HashSet::from([stays.uid.clone()]);
    let addrs: HashSet<IpAddr> = HashSet::from([IpAddr::V4(stays.ip4)]);
    let pruned = datapath.prune(&uids, &HashSet::from([stays_cookie]), &addrs)?;
    assert_eq!(pruned.pod_pins, vec![leaves.uid.clone()]);
    assert_eq!(pruned.pod_entries, 1, "the gone pod's WEIR_PODS entry");
    let pinned = pins.pinned_files();
    assert!(
        pinned
            .iter()
            .any(|p| p.to_string_lossy().contains(&stays.uid)),
        "{pinned:?}"
    );
    assert!(
        !pinned
            .iter()
            .any(|p| p.to_string_lossy().contains(&leaves.uid)),
        "{pinned:?}"
    );
    Ok(())
}
