//! What fuzzing found stays fixed: every input of fuzz/corpus (the seeds
//! and each input that once crashed a target) goes through the same
//! entry points as the fuzz targets, on the ordinary toolchain, with every
//! `cargo test`. A crash a fuzz run finds is added to fuzz/corpus/<target>/
//! and named in a test below (docs/security.md, "Fuzzing").

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seed inputs", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `f` on every input of the target's corpus, naming the one that fails.
fn replay(target: &str, f: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes))).is_err() {
            panic!("{} fails again", path.display());
        }
    }
}

fn text(f: fn(&str)) -> impl Fn(&[u8]) {
    move |b| {
        if let Ok(s) = std::str::from_utf8(b) {
            f(s);
        }
    }
}

#[test]
fn proxy_config_corpus() {
    replay("proxy_config", text(weir::fuzzing::proxy_config));
}

#[test]
fn pods_file_corpus() {
    replay("pods_file", text(weir::fuzzing::pods_file));
}

#[test]
fn protocol_detect_corpus() {
    replay("protocol_detect", |data| {
        if let Some((&chunk, bytes)) = data.split_first() {
            weir::fuzzing::intercept_detect(bytes, usize::from(chunk) + 1);
            weir::fuzzing::h2_preface(bytes, usize::from(chunk) + 1);
        }
    });
}

#[test]
fn tls_server_name_corpus() {
    replay("tls_server_name", weir::fuzzing::tls_server_name);
}

#[test]
fn http1_request_corpus() {
    replay("http1_request", weir::fuzzing::http1_request);
}

fn input(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Found by tls_server_name: a ClientHello whose SNI ends in a dot. rustls
/// (the terminating side) strips it, the peek kept it, so one host had
/// two names (and two metric label values).
#[test]
fn sni_with_a_trailing_dot_names_the_host_without_it() {
    let hello = input("tls_server_name", "crash-trailing-dot");
    assert_eq!(
        weir::fuzzing::server_name(&hello).as_deref(),
        Some("allowedleaxpme")
    );
    weir::fuzzing::tls_server_name(&hello);
}

/// Found by http1_request: `Connection: host` made the hop-by-hop strip
/// remove Host, so an HTTP/1.1 request went upstream without one.
#[test]
fn connection_naming_host_keeps_the_host() {
    weir::fuzzing::http1_request(&input("http1_request", "connection-names-host"));
    weir::fuzzing::http1_request(&input("http1_request", "connection-names-host-min"));
}

/// Found by http1_request: an absolute-form target with an empty path and a
/// query (`http://a?q=0`) went upstream in absolute form (`?q=0` is no
/// origin-form target); it goes as `/?q=0`.
#[test]
fn absolute_target_with_empty_path_goes_upstream_in_origin_form() {
    weir::fuzzing::http1_request(&input("http1_request", "absolute-empty-path-query"));
}

/// Found by http1_request: `Upgrade: h2c` with `Connection: Upgrade,
/// x-secret` dropped the Connection header before the hop-by-hop strip
/// read it, so `x-secret` reached the upstream.
#[test]
fn h2c_offer_does_not_forward_the_headers_connection_names() {
    weir::fuzzing::http1_request(&input("http1_request", "h2c-connection-named"));
    weir::fuzzing::http1_request(&input("http1_request", "h2c-connection-named-min"));
}
