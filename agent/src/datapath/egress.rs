//! Attaching the egress redirect (connect4, connect6, sockops) and the
//! unconnected-datagram check (sendmsg4, sendmsg6, with recvmsg4 and
//! recvmsg6 remembering whom the pod may answer) to one pod's cgroup.

use std::fs::File;
use std::path::Path;

use aya::programs::{CgroupSockAddr, SockOps};
use weir_common::PROG_SOCKOPS;

use super::pin::AttachedLink;
use super::{Datapath, DatapathError, UDP_AND_CONNECT_HOOKS, cgroup_fd_link};

/// One pod's egress hooks. Unpinned, dropping it detaches them; pinned, they
/// stay attached after the agent is gone, until [`EgressAttachment::remove`].
pub struct EgressAttachment {
    links: Vec<AttachedLink>,
}

impl Datapath {
    /// Attaches the egress hooks to `cgroup_dir` (and below), or adopts the
    /// ones pinned for `pod_uid`. They act only on sockets in a namespace
    /// registered with [`Datapath::register_pod`], so a process of the cgroup
    /// in another namespace is never sent to a listener that is not there.
    pub fn attach_egress(
        &mut self,
        cgroup_dir: &Path,
        pod_uid: &str,
    ) -> Result<EgressAttachment, DatapathError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| DatapathError::Cgroup {
            path: cgroup_dir.to_path_buf(),
            source,
        })?;
        // Links made so far are released again if a later one fails.
        let mut attachment = EgressAttachment {
            links: Vec::with_capacity(1 + UDP_AND_CONNECT_HOOKS.len()),
        };
        // sockops before the connect hooks: a connection they redirect must
        // find it there to have its original destination re-keyed, or the
        // agent accepting it would not know where it was going (and close it).
        let pin_dir = self.pin_dir(pod_uid);
        let link = self.attach_link(pin_dir.as_ref(), PROG_SOCKOPS, |prog: &mut SockOps| {
            cgroup_fd_link!(prog, &cgroup, PROG_SOCKOPS)
        })?;
        attachment.links.push(link);
        for name in UDP_AND_CONNECT_HOOKS {
            let link = self.attach_link(pin_dir.as_ref(), name, |prog: &mut CgroupSockAddr| {
                cgroup_fd_link!(prog, &cgroup, name)
            })?;
            attachment.links.push(link);
        }
        Ok(attachment)
    }
}

impl EgressAttachment {
    /// Kernel IDs of this pod's links, for leak checks and diagnostics.
    pub fn link_ids(&self) -> Vec<u32> {
        self.links.iter().filter_map(AttachedLink::id).collect()
    }

    /// Detaches the hooks for good (un-enrolling the pod), pinned or not.
    pub fn remove(mut self) {
        while let Some(link) = self.links.pop() {
            link.remove();
        }
    }
}

/// In the reverse order of attaching (the connect and UDP hooks, then sockops), for
/// the reason [`Datapath::attach_egress`] gives.
impl Drop for EgressAttachment {
    fn drop(&mut self) {
        while let Some(link) = self.links.pop() {
            drop(link);
        }
    }
}
