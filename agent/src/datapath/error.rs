use std::path::PathBuf;

/// Why the eBPF data path could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "this weir binary was built without its eBPF object; run `cargo xtask build-ebpf`, then rebuild"
    )]
    NotBuilt,
    #[error("loading the eBPF object failed (are you root, with bpffs and BPF enabled?): {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the eBPF object has no program named {0}")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map named {0}")]
    MissingMap(&'static str),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("opening cgroup directory {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinning under {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "finding the agent's own cgroup (for sk_msg acceleration or the namespace-cookie hooks): {0}"
    )]
    OwnCgroup(String),
    #[error("{0} is not on a bpffs; mount one there (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs(PathBuf),
    #[error("kernel {release} is below weir's floor (docs/kernels.md): it lacks {missing}")]
    KernelTooOld { release: String, missing: String },
    #[error("probing the kernel for {what}: {source}")]
    Probe {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "this kernel charges BPF maps to RLIMIT_MEMLOCK (before Linux 5.11) and raising it failed (grant CAP_SYS_RESOURCE): {0}"
    )]
    Memlock(#[source] std::io::Error),
    #[error(transparent)]
    Destinations(#[from] super::TooManyDestinations),
    #[error("eBPF link for {name}: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
}

impl DatapathError {
    pub(crate) fn probe(what: &'static str, source: aya::programs::ProgramError) -> Self {
        Self::Probe {
            what,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(name: &'static str, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            name,
            source: Box::new(source),
        }
    }
}
