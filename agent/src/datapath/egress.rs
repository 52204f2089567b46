//! Attaching the egress redirect (connect4, connect6, sockops) to one pod's cgroup.

use std::fs::File;
use std::path::Path;

use aya::programs::links::{CgroupAttachMode, FdLink};
use aya::programs::{CgroupSockAddr, SockOps};
use weir_common::{PROG_CONNECT4, PROG_CONNECT6, PROG_SOCKOPS};

use super::{Datapath, DatapathError, program};

/// One pod's egress hooks. Dropping it detaches them from the pod's cgroup.
pub struct EgressAttachment {
    links: Vec<FdLink>,
}

impl Datapath {
    /// Attaches the egress hooks to `cgroup_dir` (and below). They act only on
    /// sockets in a namespace registered with [`Datapath::register_pod`], so a
    /// process of the cgroup in another namespace is never sent to a listener
    /// that is not there.
    pub fn attach_egress(&mut self, cgroup_dir: &Path) -> Result<EgressAttachment, DatapathError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| DatapathError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        // Links that were made are detached again if a later one fails.
        let mut attachment = EgressAttachment {
            links: Vec::with_capacity(3),
        };
        // bpf_link attachments always coexist with other programs on the cgroup
        // (the kernel rejects BPF_F_ALLOW_MULTI on links), hence `Single`.
        for name in [PROG_CONNECT4, PROG_CONNECT6] {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| DatapathError::program(name, e))?;
            let link = prog
                .take_link(id)
                .map_err(|e| DatapathError::program(name, e))?;
            attachment.links.push(
                FdLink::try_from(link).map_err(|source| DatapathError::Link { name, source })?,
            );
        }
        let sockops: &mut SockOps = program(&mut self.ebpf, PROG_SOCKOPS)?;
        let id = sockops
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| DatapathError::program(PROG_SOCKOPS, e))?;
        let link = sockops
            .take_link(id)
            .map_err(|e| DatapathError::program(PROG_SOCKOPS, e))?;
        attachment.links.push(
            FdLink::try_from(link).map_err(|source| DatapathError::Link {
                name: PROG_SOCKOPS,
                source,
            })?,
        );
        Ok(attachment)
    }
}

impl EgressAttachment {
    /// Kernel IDs of this pod's links, for leak checks and diagnostics.
    pub fn link_ids(&self) -> Vec<u32> {
        self.links
            .iter()
            .filter_map(|l| l.info().ok())
            .map(|i| i.id())
            .collect()
    }
}
