//! The raw bpf(2) commands weir needs that aya keeps private.

use std::io;

pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub(super) const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub(super) const BPF_OBJ_GET: libc::c_long = 7;
pub(super) const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
pub(super) const BPF_LINK_CREATE: libc::c_long = 28;
pub(super) const BPF_LINK_UPDATE: libc::c_long = 29;

/// `bpf(cmd, attr, sizeof attr)`; the kernel zero-extends the attribute
/// past the size given.
///
/// # Safety
/// `attr` must be a fully initialised `repr(C)` member of `union bpf_attr`
/// for `cmd`, and every pointer in it must be valid for the access `cmd`
/// makes (read or write) for the duration of the call.
pub(super) unsafe fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: upheld by the caller, as documented above.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const A, size_of::<A>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The `map_elem` member of `union bpf_attr`.
#[repr(C)]
pub(super) struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}
