//! The SNI peek on a ClientHello (the payload of the first TLS record).
#![no_main]

libfuzzer_sys::fuzz_target!(|handshake: &[u8]| weir::fuzzing::tls_server_name(handshake));
