//! Bytes on an HTTP/1 listener connection, through hyper and weir's
//! admission, header hygiene, routing and head rewrite.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| weir::fuzzing::http1_request(bytes));
