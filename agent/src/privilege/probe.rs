//! Whether proxy worker threads need `CAP_BPF`, asked of the running kernel.

use crate::datapath::ProbeMap;

use super::{PrivilegeError, confine_worker};

/// Creates a map here (this thread must hold `CAP_BPF`), then reads it from a
/// thread holding no capability. Refused with EPERM: the kernel checks
/// `CAP_BPF` on every bpf(2) call, so workers, which look up each intercepted
/// connection's original destination, keep it.
pub fn workers_need_bpf() -> Result<bool, PrivilegeError> {
    let map = ProbeMap::create().map_err(|e| PrivilegeError::Syscall {
        action: "creating a probe BPF map",
        message: e.to_string(),
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                confine_worker(false)?;
                Ok(match map.lookup() {
                    Ok(()) => false,
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => true,
                    Err(e) => {
                        log::warn!("probing bpf(2) without CAP_BPF: {e}; workers keep CAP_BPF");
                        true
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| {
                Err(PrivilegeError::Syscall {
                    action: "probing bpf(2) without CAP_BPF",
                    message: "the probe thread panicked".to_owned(),
                })
            })
    })
}
