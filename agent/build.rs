//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so the agent is one
//! self-contained binary. Without the object the agent still builds (the
//! workspace must build and lint on a machine without the eBPF toolchain); it
//! then refuses to load the data path with an error that says how to build it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=WEIR_EBPF_OBJECT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let object = std::env::var_os("WEIR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target/ebpf/weir-ebpf.o"));
    println!("cargo:rerun-if-changed={}", object.display());

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("weir-ebpf.o");
    let bytes = std::fs::read(&object).unwrap_or_default();
    std::fs::write(&out, bytes).expect("writing the embedded eBPF object into OUT_DIR");
}
