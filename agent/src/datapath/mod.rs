//! The eBPF data path: loading weir's programs once per agent, and attaching
//! them to each enrolled pod. Each pod's state is a set of handles that undo
//! themselves: on drop when nothing is pinned (tests, the demo), or on an
//! explicit `remove` when the data path is pinned and must outlive the agent.

mod accel;
mod bypass;
mod destinations;
mod egress;
mod error;
mod flows;
mod ingress;
mod netns;
mod orig_dst;
mod pin;
mod pod;
mod probe;
mod probe_map;
mod prune;
mod status;
mod sys;
mod uninstall;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap, MapData};
use aya::programs::links::FdLink;
use aya::programs::{CgroupSockAddr, SkLookup, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use weir_common::{
    ConnKey, MAP_BYPASS_COUNTS, MAP_BYPASSED_CONNECTS, MAP_DESTINATIONS, MAP_DIRECT_SOCKETS,
    MAP_FLOWS, MAP_INBOUND_LISTENERS, MAP_INBOUND_PODS, MAP_ORIG_DST, MAP_PENDING_CONNECT,
    MAP_PODS, MAP_SETTINGS, MAP_SOCKS, MAP_UDP_PEERS, PROG_CONNECT4, PROG_CONNECT6, PROG_RECVMSG4,
    PROG_RECVMSG6, PROG_SENDMSG4, PROG_SENDMSG6, PROG_SK_LOOKUP, PROG_SK_MSG, PROG_SOCKOPS,
    PodSettings, SockAddr,
};

pub use crate::addr::OrigDst;
pub use bypass::Bypassed;
pub use destinations::{
    Destination, DestinationsChanged, EgressPolicy, TooManyDestinations, Verdict,
};
pub use egress::EgressAttachment;
pub use error::DatapathError;
pub use flows::Flow;
pub use ingress::IngressAttachment;
pub use orig_dst::OrigDstTable;
use pin::AttachedLink;
pub use pin::DEFAULT_PIN_ROOT;
pub use pod::PodRegistration;
pub use probe::{KernelSupport, Probed};
pub use probe_map::ProbeMap;
pub use prune::Pruned;
pub use status::{CgroupLayout, DatapathStatus, Feature};
pub use uninstall::{Uninstalled, uninstall};

/// The object `cargo xtask build-ebpf` produced, embedded by build.rs (empty when
/// it had not been built).
static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir-ebpf.o"));

const ALL_MAPS: [&str; 13] = [
    MAP_PODS,
    MAP_PENDING_CONNECT,
    MAP_ORIG_DST,
    MAP_INBOUND_PODS,
    MAP_INBOUND_LISTENERS,
    MAP_SOCKS,
    MAP_SETTINGS,
    MAP_BYPASSED_CONNECTS,
    MAP_BYPASS_COUNTS,
    MAP_DESTINATIONS,
    MAP_FLOWS,
    MAP_DIRECT_SOCKETS,
    MAP_UDP_PEERS,
];

/// The cgroup_sock_addr programs attached to each pod's cgroup.
const UDP_AND_CONNECT_HOOKS: [&str; 6] = [
    PROG_CONNECT4,
    PROG_CONNECT6,
    PROG_SENDMSG4,
    PROG_SENDMSG6,
    PROG_RECVMSG4,
    PROG_RECVMSG6,
];

type PodsMap = HashMap<MapData, u64, PodSettings>;

#[derive(Clone, Debug, Default)]
pub struct DatapathOptions {
    /// Pin maps and per-pod links under this bpffs directory, so they outlive
    /// the agent and the next agent adopts them. `None`: nothing is pinned and
    /// everything goes away with the handles (tests, the demo).
    pub pin_root: Option<PathBuf>,
    /// Splice data between applications and the proxy's egress listener with
    /// sockops + sk_msg instead of the loopback TCP stack, when the kernel can
    /// (see [`Datapath::status`]).
    pub sk_msg: bool,
}

/// weir's programs and maps, loaded into the kernel.
pub struct Datapath {
    ebpf: Ebpf,
    pins: Option<pin::PinLayout>,
    pods: Arc<Mutex<PodsMap>>,
    inbound: Arc<Mutex<ingress::InboundMaps>>,
    bypass: Mutex<bypass::BypassMaps>,
    destinations: Mutex<destinations::DestinationMaps>,
    flows: Mutex<flows::FlowsMap>,
    orig_dst: Arc<OrigDstTable>,
    /// The sockops variant loaded (see agent-ebpf/src/sockops.rs).
    sockops: &'static str,
    status: DatapathStatus,
    _acceleration: Option<accel::Acceleration>,
    /// Only on kernels without SO_NETNS_COOKIE (see netns.rs).
    _netns_hooks: Option<Arc<netns::NetnsHooks>>,
}

impl Datapath {
    /// Loads the embedded programs, unpinned. Needs CAP_BPF and CAP_NET_ADMIN.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(&DatapathOptions::default())
    }

    /// Loads the embedded programs; with a pin root, adopts the maps a previous
    /// agent pinned there (or pins new ones).
    pub fn load_with(options: &DatapathOptions) -> Result<Self, DatapathError> {
        Self::load_object(EMBEDDED_OBJECT, options)
    }

    pub fn load_object(object: &[u8], options: &DatapathOptions) -> Result<Self, DatapathError> {
        if object.is_empty() {
            return Err(DatapathError::NotBuilt);
        }
        let support = KernelSupport::probe()?;
        let plan = status::plan(&support, options.sk_msg)?;
        let memlock = status::raise_memlock_if_charged(&support)?;
        let pins = options
            .pin_root
            .as_deref()
            .map(pin::PinLayout::create)
            .transpose()?;
        let map_paths: Vec<(&str, PathBuf)> = match &pins {
            Some(layout) => ALL_MAPS
                .iter()
                .map(|name| (*name, layout.map_path(name)))
                .collect(),
            None => Vec::new(),
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;
        for name in UDP_AND_CONNECT_HOOKS {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|e| DatapathError::program(name, e))?;
        }
        let sockops: &mut SockOps = program(&mut ebpf, plan.sockops)?;
        sockops
            .load()
            .map_err(|e| DatapathError::program(plan.sockops, e))?;
        let sk_lookup: &mut SkLookup = program(&mut ebpf, PROG_SK_LOOKUP)?;
        sk_lookup
            .load()
            .map_err(|e| DatapathError::program(PROG_SK_LOOKUP, e))?;
        // Only with acceleration: the program needs what 5.10 lacks.
        if plan.sk_msg.on {
            let sk_msg: &mut SkMsg = program(&mut ebpf, PROG_SK_MSG)?;
            sk_msg
                .load()
                .map_err(|e| DatapathError::program(PROG_SK_MSG, e))?;
        }
        let mut settings = take_map(&mut ebpf, MAP_SETTINGS)?;
        let acceleration =
            accel::configure(&mut ebpf, &mut settings, plan.sk_msg.on, plan.sockops)?;
        let netns_hooks = (!support.has(probe::SO_NETNS_COOKIE))
            .then(|| netns::attach(&mut ebpf))
            .transpose()?;

        let pods: PodsMap = take_map(&mut ebpf, MAP_PODS)?;
        let orig_dst = orig_dst_map(&mut ebpf)?;
        let inbound = ingress::InboundMaps {
            pods: take_map(&mut ebpf, MAP_INBOUND_PODS)?,
            listeners: take_map(&mut ebpf, MAP_INBOUND_LISTENERS)?,
        };
        let bypass = bypass::take_maps(&mut ebpf)?;
        let destinations = destinations::DestinationMaps {
            destinations: take_map(&mut ebpf, MAP_DESTINATIONS)?,
            settings,
        };
        let flows = take_map(&mut ebpf, MAP_FLOWS)?;
        Ok(Self {
            ebpf,
            pins,
            pods: Arc::new(Mutex::new(pods)),
            inbound: Arc::new(Mutex::new(inbound)),
            bypass: Mutex::new(bypass),
            destinations: Mutex::new(destinations),
            flows: Mutex::new(flows),
            orig_dst: Arc::new(OrigDstTable::new(orig_dst)),
            sockops: plan.sockops,
            status: DatapathStatus::new(support, &plan, memlock),
            _acceleration: acceleration,
            _netns_hooks: netns_hooks,
        })
        .inspect(|datapath| datapath.status.log())
    }

    /// What the kernel offers, the cgroup layout, the variants loaded and
    /// each feature on or off with the reason.
    pub fn status(&self) -> &DatapathStatus {
        &self.status
    }

    /// Whether pod state outlives this process (see [`DatapathOptions`]).
    pub fn is_pinned(&self) -> bool {
        self.pins.is_some()
    }

    /// Where the proxy looks up the original destination of accepted connections.
    pub fn orig_dst_table(&self) -> Arc<OrigDstTable> {
        Arc::clone(&self.orig_dst)
    }

    /// Kernel IDs of the loaded programs, for leak checks and diagnostics.
    pub fn program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter_map(|(_, prog)| prog.info().ok())
            .map(|info| info.id())
            .collect()
    }

    /// Kernel IDs of the maps the loaded programs use.
    pub fn map_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .ebpf
            .programs()
            .filter_map(|(_, prog)| prog.info().ok()?.map_ids().ok().flatten())
            .flatten()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Where pod `pod_uid`'s links are pinned, if pinning, for
    /// [`Self::attach_link`]: made once for all of the pod's links.
    fn pin_dir(&self, pod_uid: &str) -> Option<Arc<std::path::Path>> {
        self.pins
            .as_ref()
            .map(|layout| Arc::from(layout.pod_dir(pod_uid)))
    }

    /// Attaches the program loaded for hook `name` (its variant, see
    /// [`Self::variant`]) for a pod with `attach`, or adopts the link pinned
    /// for the hook in the pod's `pin_dir` (see `pin.rs`), whichever variant
    /// an earlier agent ran.
    fn attach_link<P>(
        &mut self,
        pin_dir: Option<&Arc<std::path::Path>>,
        hook: &'static str,
        attach: impl FnOnce(&mut P) -> Result<FdLink, DatapathError>,
    ) -> Result<AttachedLink, DatapathError>
    where
        for<'a> &'a mut P:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        let pin = pin_dir.map(|dir| (Arc::clone(dir), hook));
        let name = self.variant(hook);
        let fd = self
            .ebpf
            .program(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .fd()
            .and_then(|fd| Ok(fd.try_clone()?))
            .map_err(|e| DatapathError::program(name, e))?;
        let prog: &mut P = program(&mut self.ebpf, name)?;
        AttachedLink::attach_or_adopt(pin, fd.as_fd(), || attach(prog))
    }

    /// The program loaded for `hook`.
    fn variant(&self, hook: &'static str) -> &'static str {
        if hook == PROG_SOCKOPS {
            self.sockops
        } else {
            hook
        }
    }
}

/// Attaches cgroup program `$prog` (named `$name`) to `$cgroup` as a bpf
/// link and takes the link out of aya's bookkeeping as an [`FdLink`]. A
/// macro: aya's cgroup program types share no trait for `attach`.
/// bpf_link attachments always coexist with other programs on the cgroup
/// (the kernel rejects BPF_F_ALLOW_MULTI on links), hence `Single`.
macro_rules! cgroup_fd_link {
    ($prog:expr, $cgroup:expr, $name:expr) => {{
        let name = $name;
        let prog = $prog;
        prog.attach($cgroup, aya::programs::links::CgroupAttachMode::Single)
            .and_then(|id| prog.take_link(id))
            .map_err(|e| DatapathError::program(name, e))
            .and_then(|link| {
                aya::programs::links::FdLink::try_from(link)
                    .map_err(|source| DatapathError::Link { name, source })
            })
    }};
}
use cgroup_fd_link;

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?;
    prog.try_into().map_err(|e| DatapathError::program(name, e))
}

/// `WEIR_ORIG_DST`, checked against its key and value types, as plain map
/// data: `OrigDstTable` makes bpf(2) calls aya does not offer on it.
fn orig_dst_map(ebpf: &mut Ebpf) -> Result<MapData, DatapathError> {
    let map = ebpf
        .take_map(MAP_ORIG_DST)
        .ok_or(DatapathError::MissingMap(MAP_ORIG_DST))?;
    let checked = |source| DatapathError::Map {
        name: MAP_ORIG_DST,
        source,
    };
    HashMap::<&MapData, ConnKey, SockAddr>::try_from(&map).map_err(checked)?;
    match map {
        aya::maps::Map::LruHashMap(data) | aya::maps::Map::HashMap(data) => Ok(data),
        _ => unreachable!("HashMap::try_from accepts only hash and LRU hash maps"),
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(|e| DatapathError::Map { name, source: e })
}
