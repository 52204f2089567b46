//! weir's eBPF programs. One file per hook; every entry point lets traffic
//! through when anything goes wrong (each failed lookup or check returns
//! `ALLOW` / passes on at once: fail-open), so a bug here can never
//! black-hole a pod; only a pod that asked to be fail-closed is refused.
#![no_std]
#![no_main]

mod connect;
mod maps;
mod netns;
mod recvmsg;
mod sendmsg;
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
