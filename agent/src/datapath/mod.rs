//! The eBPF data path: loading weir's programs once per agent, and attaching
//! them to each enrolled pod. Programs live in the kernel for as long as the
//! [`Datapath`] does; each pod's attachment is a handle that detaches on drop.

mod egress;
mod error;
mod ingress;
mod orig_dst;
mod pod;

use std::sync::{Arc, Mutex};

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use aya::programs::{CgroupSockAddr, SkLookup, SockOps};
use weir_common::{
    ConnKey, MAP_INBOUND_LISTENERS, MAP_INBOUND_PODS, MAP_ORIG_DST, MAP_PODS, PROG_CONNECT4,
    PROG_CONNECT6, PROG_SK_LOOKUP, PROG_SOCKOPS, PodSettings, SockAddr,
};

pub use egress::EgressAttachment;
pub use error::DatapathError;
pub use ingress::IngressAttachment;
pub use orig_dst::{OrigDst, OrigDstTable};
pub use pod::PodRegistration;

/// The object `cargo xtask build-ebpf` produced, embedded by build.rs (empty when
/// it had not been built).
static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/weir-ebpf.o"));

type PodsMap = HashMap<MapData, u64, PodSettings>;

/// weir's programs and maps, loaded into the kernel.
pub struct Datapath {
    ebpf: Ebpf,
    pods: Arc<Mutex<PodsMap>>,
    inbound: Arc<Mutex<ingress::InboundMaps>>,
    orig_dst: Arc<OrigDstTable>,
}

impl Datapath {
    /// Loads the embedded programs. Needs CAP_BPF and CAP_NET_ADMIN (root).
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_object(EMBEDDED_OBJECT)
    }

    pub fn load_object(object: &[u8]) -> Result<Self, DatapathError> {
        if object.is_empty() {
            return Err(DatapathError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(object).map_err(|e| DatapathError::Load(Box::new(e)))?;
        for name in [PROG_CONNECT4, PROG_CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            prog.load().map_err(|e| DatapathError::program(name, e))?;
        }
        let sockops: &mut SockOps = program(&mut ebpf, PROG_SOCKOPS)?;
        sockops
            .load()
            .map_err(|e| DatapathError::program(PROG_SOCKOPS, e))?;
        let sk_lookup: &mut SkLookup = program(&mut ebpf, PROG_SK_LOOKUP)?;
        sk_lookup
            .load()
            .map_err(|e| DatapathError::program(PROG_SK_LOOKUP, e))?;

        let pods: PodsMap = take_map(&mut ebpf, MAP_PODS)?;
        let orig_dst: HashMap<MapData, ConnKey, SockAddr> = take_map(&mut ebpf, MAP_ORIG_DST)?;
        let inbound = ingress::InboundMaps {
            pods: take_map(&mut ebpf, MAP_INBOUND_PODS)?,
            listeners: take_map(&mut ebpf, MAP_INBOUND_LISTENERS)?,
        };
        Ok(Self {
            ebpf,
            pods: Arc::new(Mutex::new(pods)),
            inbound: Arc::new(Mutex::new(inbound)),
            orig_dst: Arc::new(OrigDstTable::new(orig_dst)),
        })
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
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?;
    prog.try_into().map_err(|e| DatapathError::program(name, e))
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(|e| DatapathError::Map { name, source: e })
}
