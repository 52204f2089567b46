//! Protocol detection of intercepted connections and the cleartext HTTP/2
//! preface sniff. The first byte picks how the rest arrives (bytes per
//! read), so segmentation is fuzzed too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    weir::fuzzing::intercept_detect(bytes, chunk);
    weir::fuzzing::h2_preface(bytes, chunk);
});
