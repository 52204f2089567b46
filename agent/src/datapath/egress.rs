//! Attaching the egress redirect (connect4, connect6, sockops) to one pod.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aya::programs::links::{CgroupAttachMode, FdLink};
use aya::programs::{CgroupSockAddr, SockOps};
use weir_common::{PROG_CONNECT4, PROG_CONNECT6, PROG_SOCKOPS, PodSettings};

use super::{Datapath, DatapathError, PodsMap, program};

/// One pod's egress redirect. Dropping it detaches the programs from the pod's
/// cgroup and forgets the pod's settings, after which its connections go direct.
pub struct EgressAttachment {
    links: Vec<FdLink>,
    netns_cookie: u64,
    pods: Arc<Mutex<PodsMap>>,
}

impl Datapath {
    /// Redirects the outbound TCP connections of processes in `cgroup_dir` (and
    /// below) whose network namespace is `netns_cookie` to the egress ports in
    /// `settings`. Keyed by namespace so that a process of the cgroup that sits
    /// in another namespace is never sent to a listener that is not there.
    pub fn attach_egress(
        &mut self,
        cgroup_dir: &Path,
        netns_cookie: u64,
        settings: PodSettings,
    ) -> Result<EgressAttachment, DatapathError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| DatapathError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        self.pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(netns_cookie, settings, 0)
            .map_err(|source| DatapathError::Map {
                name: weir_common::MAP_PODS,
                source,
            })?;
        // From here on, dropping `attachment` undoes whatever was done.
        let mut attachment = EgressAttachment {
            links: Vec::with_capacity(3),
            netns_cookie,
            pods: Arc::clone(&self.pods),
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
    /// Points the pod's redirect at new listener ports or a new fail mode, e.g.
    /// after the listeners were re-created.
    pub fn update_settings(&self, settings: PodSettings) -> Result<(), DatapathError> {
        self.pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(self.netns_cookie, settings, 0)
            .map_err(|source| DatapathError::Map {
                name: weir_common::MAP_PODS,
                source,
            })
    }

    /// Kernel IDs of this pod's links, for leak checks and diagnostics.
    pub fn link_ids(&self) -> Vec<u32> {
        self.links
            .iter()
            .filter_map(|l| l.info().ok())
            .map(|i| i.id())
            .collect()
    }
}

impl Drop for EgressAttachment {
    fn drop(&mut self) {
        // Links detach when their FdLinks drop (after this body). Forget the pod
        // first so that no connection is redirected to a listener being torn down.
        let mut pods = self
            .pods
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(e) = pods.remove(&self.netns_cookie) {
            log::warn!("forgetting pod netns {}: {e}", self.netns_cookie);
        }
    }
}
