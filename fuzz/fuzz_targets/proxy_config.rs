//! The proxy config as `weir check-config` and `weir proxy` read it.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| weir::fuzzing::proxy_config(text));
