//! A throw-away BPF map to ask the running kernel one question: may a thread
//! without `CAP_BPF` use a map through a descriptor it already holds? Kernels
//! before 6.5 check the capability on every bpf(2) call while unprivileged BPF
//! is disabled (the default); later ones check it only to create maps and load
//! programs. The answer decides what the proxy's worker threads keep, since they
//! look up original destinations on every intercepted connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::sys;

const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// A one-entry array map, closed on drop.
#[derive(Debug)]
pub struct ProbeMap {
    fd: OwnedFd,
}

/// The `map_create` member of `union bpf_attr`, up to the fields weir sets.
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

impl ProbeMap {
    /// Needs `CAP_BPF` (or `CAP_SYS_ADMIN`) on this thread.
    pub fn create() -> io::Result<Self> {
        let attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_flags: 0,
        };
        // SAFETY: a fully initialised map_create prefix with no pointers; the
        // kernel zero-fills the rest of the attribute.
        let fd = unsafe { sys::bpf(sys::BPF_MAP_CREATE, &attr) }?;
        // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Reads the map's only entry through the descriptor.
    pub fn lookup(&self) -> io::Result<()> {
        let key = 0u32;
        let mut value = 0u32;
        let attr = sys::MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &mut value as *mut u32 as u64,
            flags: 0,
        };
        // SAFETY: key and value point at u32s, the map's key and value sizes,
        // alive for the call.
        unsafe { sys::bpf(sys::BPF_MAP_LOOKUP_ELEM, &attr) }.map(drop)
    }
}
