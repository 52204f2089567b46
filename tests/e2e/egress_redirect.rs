//! The egress redirect end to end on a simulated node, as root: cgroup/connect4
//! and connect6 send a pod's connections to an in-pod listener, and the agent's
//! API recovers where they were going.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use weir::datapath::{Datapath, DatapathOptions, EgressAttachment, OrigDst, PodRegistration};
use weir::inpod::{EgressListeners, InboundListeners};
use weir::node::cgroup::{CgroupDriver, QosClass};
use weir_common::{INBOUND_FLAG_ALL_PORTS, InboundSettings};
use weir_tests::exchange::{Exchange, Placement, exchange};
use weir_tests::service::ServiceServer;
use weir_tests::support::{close_listeners, require_root, sim_client};
use weir_tests::{SimNode, SimNodeOptions, SimPod, wait};

const SERVICE_V4: &str = "198.51.100.10:80";
const SERVICE_V6: &str = "[2001:db8::10]:80";

/// A node with one enrolled pod whose egress is redirected to in-pod listeners.
/// Field order is drop order: detach, close listeners, unload, remove the pod,
/// then the node.
struct EnrolledPod {
    attachment: EgressAttachment,
    registration: PodRegistration,
    listeners: EgressListeners,
    datapath: Datapath,
    pod: SimPod,
    node: SimNode,
}

impl EnrolledPod {
    fn new(driver: CgroupDriver, qos: QosClass) -> Result<Self> {
        require_root();
        let node = SimNode::with_options(SimNodeOptions {
            driver,
            qos,
            ..SimNodeOptions::default()
        })?;
        let pod = node.add_pod("client")?;
        let mut datapath = Datapath::load()?;
        let listeners = EgressListeners::bind(pod.netns())?;
        let registration =
            datapath.register_pod(listeners.netns_cookie, listeners.egress_settings(0)?)?;
        let attachment = datapath.attach_egress(pod.cgroup_dir(), &pod.uid)?;
        Ok(Self {
            attachment,
            registration,
            listeners,
            datapath,
            pod,
            node,
        })
    }

    fn run(&self, placement: Placement, target: &str) -> Result<Exchange> {
        let target: SocketAddr = target.parse()?;
        let listener = if target.is_ipv4() {
            &self.listeners.v4
        } else {
            &self.listeners.v6
        };
        exchange(
            &self.pod,
            &sim_client(),
            placement,
            target,
            listener,
            &self.datapath.orig_dst_table(),
        )
    }
}

fn assert_redirected(exchange: &Exchange, target: &str) {
    let target: SocketAddr = target.parse().unwrap();
    let accepted = exchange.accepted.as_ref().unwrap_or_else(|| {
        panic!("the pod's connection to {target} never reached the listener: {exchange:?}")
    });
    assert_eq!(accepted.orig_dst, Some(OrigDst(target)), "{exchange:?}");
    assert_eq!(accepted.message, "hello from the pod");
    assert!(
        accepted.peer.ip().is_loopback(),
        "redirected connections come from loopback: {accepted:?}"
    );
    assert!(exchange.client_succeeded, "{exchange:?}");
    assert_eq!(
        exchange.client_stdout,
        format!("weir: you were going to {target}\n")
    );
}

#[test]
fn pod_ipv4_egress_lands_on_the_listener_with_its_original_destination() -> Result<()> {
    let env = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    assert_redirected(&env.run(Placement::InPod, SERVICE_V4)?, SERVICE_V4);
    // A second connection gets its own entry, not a stale one.
    assert_redirected(
        &env.run(Placement::InPod, "198.51.100.11:5432")?,
        "198.51.100.11:5432",
    );
    Ok(())
}

#[test]
fn pod_ipv6_egress_lands_on_the_listener_with_its_original_destination() -> Result<()> {
    let env = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    assert_redirected(&env.run(Placement::InPod, SERVICE_V6)?, SERVICE_V6);
    Ok(())
}

#[test]
fn systemd_cgroup_layout_is_redirected_too() -> Result<()> {
    let env = EnrolledPod::new(CgroupDriver::Systemd, QosClass::Burstable)?;
    assert!(
        env.pod
            .cgroup_dir()
            .to_string_lossy()
            .contains("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"),
        "{}",
        env.pod.cgroup_dir().display()
    );
    assert_redirected(&env.run(Placement::InPod, SERVICE_V4)?, SERVICE_V4);
    Ok(())
}

#[test]
fn process_outside_the_pod_cgroup_is_not_redirected() -> Result<()> {
    let env = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    let real_v4 = ServiceServer::start(&env.node, SERVICE_V4.parse()?)?;
    let real_v6 = ServiceServer::start(&env.node, SERVICE_V6.parse()?)?;

    for (target, real) in [(SERVICE_V4, &real_v4), (SERVICE_V6, &real_v6)] {
        let outside = env.run(Placement::OutsideCgroup, target)?;
        assert!(
            outside.accepted.is_none(),
            "not in the pod's cgroup, yet redirected: {outside:?}"
        );
        assert_eq!(
            outside.client_stdout,
            format!("real server at {}\n", real.addr),
            "{outside:?}"
        );
        assert_eq!(real.served(), 1);
        // The same destination from inside the pod is redirected.
        assert_redirected(&env.run(Placement::InPod, target)?, target);
        assert_eq!(
            real.served(),
            1,
            "the pod's connection must not reach the real server"
        );
    }

    // Straight to the listener's own port from outside the cgroup: accepted,
    // but there is no original destination to find.
    let listener_addr = env.listeners.v4.local_addr()?.to_string();
    let direct = env.run(Placement::OutsideCgroup, &listener_addr)?;
    let accepted = direct
        .accepted
        .expect("a direct connection to the listener is accepted");
    assert_eq!(accepted.orig_dst, None);
    assert_eq!(direct.client_stdout, "weir: no original destination\n");
    Ok(())
}

#[test]
fn pod_loopback_traffic_is_not_redirected() -> Result<()> {
    let env = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    let listener_addr = env.listeners.v4.local_addr()?.to_string();
    let direct = env.run(Placement::InPod, &listener_addr)?;
    let accepted = direct
        .accepted
        .expect("loopback connection reaches the listener it named");
    assert_eq!(
        accepted.orig_dst, None,
        "loopback connects must pass untouched"
    );
    Ok(())
}

#[test]
fn detaching_lets_the_pod_connect_directly_again() -> Result<()> {
    let EnrolledPod {
        attachment,
        registration,
        listeners,
        datapath,
        pod,
        node,
    } = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    let real = ServiceServer::start(&node, SERVICE_V4.parse()?)?;
    drop(attachment);
    drop(registration);
    let after = exchange(
        &pod,
        &sim_client(),
        Placement::InPod,
        SERVICE_V4.parse()?,
        &listeners.v4,
        &datapath.orig_dst_table(),
    )?;
    assert!(after.accepted.is_none(), "{after:?}");
    assert_eq!(
        after.client_stdout,
        format!("real server at {}\n", real.addr)
    );
    Ok(())
}

#[test]
fn pod_goes_direct_when_the_proxy_listener_is_gone_and_back_when_it_returns() -> Result<()> {
    let EnrolledPod {
        attachment: _egress,
        registration,
        listeners,
        datapath,
        pod,
        node,
    } = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    let real = ServiceServer::start(&node, SERVICE_V4.parse()?)?;
    let real6 = ServiceServer::start(&node, SERVICE_V6.parse()?)?;
    let table = datapath.orig_dst_table();
    // The agent "dies": its listeners close, the programs stay attached.
    close_listeners(&pod, listeners)?;
    let stand_in = std::net::TcpListener::bind("127.0.0.1:0")?;
    for (target, server) in [(SERVICE_V4, &real), (SERVICE_V6, &real6)] {
        let direct = exchange(
            &pod,
            &sim_client(),
            Placement::InPod,
            target.parse()?,
            &stand_in,
            &table,
        )?;
        assert!(
            direct.client_succeeded,
            "fail-open: the pod's connection must go direct: {direct:?}"
        );
        assert_eq!(
            direct.client_stdout,
            format!("real server at {}\n", server.addr)
        );
    }
    // The agent is back with new listeners: interception resumes.
    let listeners = EgressListeners::bind(pod.netns())?;
    registration.update(listeners.egress_settings(0)?)?;
    let resumed = exchange(
        &pod,
        &sim_client(),
        Placement::InPod,
        SERVICE_V4.parse()?,
        &listeners.v4,
        &table,
    )?;
    assert_redirected(&resumed, SERVICE_V4);
    Ok(())
}

#[test]
fn fail_closed_pod_is_refused_when_the_proxy_listener_is_gone() -> Result<()> {
    let EnrolledPod {
        attachment: _egress,
        registration,
        listeners,
        datapath,
        pod,
        node,
    } = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    let real = ServiceServer::start(&node, SERVICE_V4.parse()?)?;
    registration.update(listeners.egress_settings(weir_common::POD_FLAG_FAIL_CLOSED)?)?;
    // Served: fail-closed pods are redirected like any other.
    let table = datapath.orig_dst_table();
    assert_redirected(
        &exchange(
            &pod,
            &sim_client(),
            Placement::InPod,
            SERVICE_V4.parse()?,
            &listeners.v4,
            &table,
        )?,
        SERVICE_V4,
    );
    close_listeners(&pod, listeners)?;
    let stand_in = std::net::TcpListener::bind("127.0.0.1:0")?;
    let refused = exchange(
        &pod,
        &sim_client(),
        Placement::InPod,
        SERVICE_V4.parse()?,
        &stand_in,
        &table,
    )?;
    assert!(
        !refused.client_succeeded,
        "fail-closed: the connection must be refused: {refused:?}"
    );
    assert!(
        refused.client_stderr.contains("Operation not permitted"),
        "{refused:?}"
    );
    assert_eq!(
        real.served(),
        0,
        "nothing may reach the destination past a fail-closed pod"
    );
    Ok(())
}

#[test]
fn excluded_outbound_ports_go_direct() -> Result<()> {
    let env = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    let mut settings = env.listeners.egress_settings(0)?;
    settings.exclude_outbound_ports[0] = 5432;
    env.registration.update(settings)?;
    let database = ServiceServer::start(&env.node, "198.51.100.10:5432".parse()?)?;
    let excluded = env.run(Placement::InPod, "198.51.100.10:5432")?;
    assert!(excluded.accepted.is_none(), "{excluded:?}");
    assert_eq!(
        excluded.client_stdout,
        format!("real server at {}\n", database.addr)
    );
    let excluded6 = ServiceServer::start(&env.node, "[2001:db8::10]:5432".parse()?)?;
    let result6 = env.run(Placement::InPod, "[2001:db8::10]:5432")?;
    assert_eq!(
        result6.client_stdout,
        format!("real server at {}\n", excluded6.addr)
    );
    // Other ports are still redirected.
    assert_redirected(&env.run(Placement::InPod, SERVICE_V4)?, SERVICE_V4);
    Ok(())
}

/// What one run created in the kernel and on disk.
#[derive(Default)]
struct Footprint {
    netns_files: Vec<PathBuf>,
    cgroup_dirs: Vec<PathBuf>,
    program_ids: HashSet<u32>,
    link_ids: HashSet<u32>,
    map_ids: HashSet<u32>,
}

fn live_program_ids() -> HashSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

fn live_link_ids() -> HashSet<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .collect()
}

fn live_map_ids() -> HashSet<u32> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| m.id())
        .collect()
}

fn run_suite_once() -> Result<Footprint> {
    let mut env = EnrolledPod::new(CgroupDriver::Cgroupfs, QosClass::BestEffort)?;
    // The inbound side too, so every program and map of the object is covered.
    let inbound = InboundListeners::bind(env.pod.netns())?;
    let pod_addrs = [IpAddr::V4(env.pod.ip4), IpAddr::V6(env.pod.ip6)];
    let all_ports = InboundSettings {
        flags: INBOUND_FLAG_ALL_PORTS,
        ..InboundSettings::default()
    };
    let ingress = env.datapath.attach_ingress(
        env.pod.netns(),
        &env.pod.uid,
        &pod_addrs,
        all_ports,
        &inbound.v4,
        &inbound.v6,
    )?;
    let mut footprint = Footprint {
        netns_files: vec![
            PathBuf::from("/run/netns").join(env.pod.netns_name()),
            PathBuf::from(format!("/run/netns/{}-node", env.node.id())),
        ],
        cgroup_dirs: vec![
            env.pod.cgroup_dir().to_path_buf(),
            env.node.cgroup_root().to_path_buf(),
        ],
        program_ids: env.datapath.program_ids().into_iter().collect(),
        link_ids: env
            .attachment
            .link_ids()
            .into_iter()
            .chain(ingress.link_ids())
            .collect(),
        ..Footprint::default()
    };
    let programs = &env.datapath.status().programs;
    assert_eq!(
        footprint.program_ids.len(),
        programs.len(),
        "every program the data path reports is loaded: {programs:?}"
    );
    for name in [
        "weir_connect4",
        "weir_connect6",
        "weir_sendmsg4",
        "weir_sendmsg6",
        "weir_recvmsg4",
        "weir_recvmsg6",
        "weir_sockops",
        "weir_sk_lookup",
    ] {
        assert!(programs.contains(&name), "{name} is loaded: {programs:?}");
    }
    assert_eq!(
        footprint.link_ids.len(),
        8,
        "and attached to the pod's cgroup and namespace"
    );
    footprint.map_ids = env.datapath.map_ids().into_iter().collect();
    assert!(
        footprint.map_ids.len() >= 5,
        "the programs' maps are known: {:?}",
        footprint.map_ids
    );
    for path in footprint.netns_files.iter().chain(&footprint.cgroup_dirs) {
        assert!(
            path.exists(),
            "{} exists while the pod does",
            path.display()
        );
    }
    assert_redirected(&env.run(Placement::InPod, SERVICE_V4)?, SERVICE_V4);
    assert_redirected(&env.run(Placement::InPod, SERVICE_V6)?, SERVICE_V6);
    drop(ingress);
    drop(env);
    Ok(footprint)
}

fn assert_nothing_left(footprint: &Footprint) {
    for path in footprint.netns_files.iter().chain(&footprint.cgroup_dirs) {
        assert!(!path.exists(), "{} was left behind", path.display());
    }
    // The kernel frees programs, links and maps once their last reference is
    // gone, a little after the descriptors close.
    let gone = wait::until(Duration::from_secs(5), || {
        live_link_ids().is_disjoint(&footprint.link_ids)
            && live_program_ids().is_disjoint(&footprint.program_ids)
            && live_map_ids().is_disjoint(&footprint.map_ids)
    });
    assert!(
        gone,
        "BPF objects left behind: links {:?}, programs {:?}, maps {:?}",
        live_link_ids()
            .intersection(&footprint.link_ids)
            .collect::<Vec<_>>(),
        live_program_ids()
            .intersection(&footprint.program_ids)
            .collect::<Vec<_>>(),
        live_map_ids()
            .intersection(&footprint.map_ids)
            .collect::<Vec<_>>(),
    );
    // weir pins nothing yet; once it does, its pins live under /sys/fs/bpf/weir.
    assert!(
        !Path::new("/sys/fs/bpf/weir").exists(),
        "pinned BPF objects left under /sys/fs/bpf/weir"
    );
}

#[test]
fn running_the_suite_twice_leaves_nothing_behind() -> Result<()> {
    for _ in 0..2 {
        let footprint = run_suite_once()?;
        assert_nothing_left(&footprint);
    }
    Ok(())
}

/// The data path says what it found and loaded: the kernel, the cgroup
/// layout, the sockops variant, and sk_msg acceleration on exactly when the
/// kernel offers what it needs. `cargo xtask kernels` shows the summary line.
#[test]
fn datapath_states_what_it_detected() -> Result<()> {
    require_root();
    let datapath = Datapath::load_with(&DatapathOptions {
        pin_root: None,
        sk_msg: true,
    })?;
    let status = datapath.status();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    assert_eq!(status.kernel.release, release.trim());
    let accel = status
        .features
        .iter()
        .find(|f| f.name == "sk_msg acceleration")
        .expect("the sk_msg feature is reported");
    assert_eq!(
        accel.on,
        status.kernel.offers_sk_msg_acceleration(),
        "acceleration is on exactly when the kernel offers it: {accel:?}"
    );
    let sockops = if accel.on {
        weir_common::PROG_SOCKOPS_ACCEL
    } else {
        weir_common::PROG_SOCKOPS
    };
    assert!(status.programs.contains(&sockops), "{:?}", status.programs);
    assert_eq!(
        datapath.program_ids().len(),
        status.programs.len(),
        "every program reported is loaded: {:?}",
        status.programs
    );
    assert_ne!(status.cgroup.layout, "legacy", "the tests need cgroup v2");
    println!("weir-datapath: {}", status.summary());
    for f in &status.features {
        println!(
            "weir-datapath-feature: {} {} ({})",
            f.name,
            if f.on { "on" } else { "off" },
            f.why
        );
    }
    Ok(())
}
