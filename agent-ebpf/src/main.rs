//! weir's eBPF programs. One file per hook; every entry point is a thin wrapper
//! over a `try_*` function and lets traffic through when anything goes wrong
//! (fail-open), so a bug here can never black-hole a pod.
#![no_std]
#![no_main]

mod connect;
mod maps;
mod netns;
mod sk_lookup;
mod sk_msg;
mod sockops;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
