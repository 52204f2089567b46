//! Facts about the node weir runs on: where cgroup v2 is mounted and where the
//! kubelet puts each pod's cgroup.

pub mod cgroup;
