//! The pods file as `weir run --pods` reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| weir::fuzzing::pods_file(text));
