//! Whether proxy worker threads need `CAP_BPF`, asked of the running kernel.

use crate::datapath::ProbeMap;

use super::{PrivilegeError, confine_worker};

/// Creates a map here (this thread must hold `CAP_BPF`), then reads it from a
/// thread holding no capability. Refused with EPERM: the kernel checks
/// `CAP_BPF` on every bpf(2) call, so workers, which look up each intercepted
/// connection's original destination, keep it.
///
/// When the probe map cannot be made, workers keep `CAP_BPF`: that happens on
/// the kernels that need it (before 5.11 a map is charged to the user's
/// RLIMIT_MEMLOCK, which the loader raises only later), and without it the
/// proxy could not look up where intercepted connections were going.
pub fn workers_need_bpf() -> Result<bool, PrivilegeError> {
    let map = match ProbeMap::create() {
        Ok(map) => map,
        Err(e) => {
            log::info!("probe BPF map not created ({e}); proxy workers keep CAP_BPF");
            return Ok(true);
        }
    };
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
