//! `weir check-config` and `weir config-schema` as a user runs them.

use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run weir")
}

#[test]
fn valid_config_exits_zero_with_a_summary() {
    let out = weir(&["check-config", "config/seed-003-edge.yaml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "config/seed-003-edge.yaml: ok: 1 listener(s), 3 route(s), 2 cluster(s)\n"
    );
}

#[test]
fn invalid_config_exits_non_zero_with_every_error() {
    let dir = std::env::temp_dir().join(format!("weir-check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.yaml");
    let yaml = "\
listeners:
  - name: l
    address: 127.0.0.1:8080
    virtual_hosts:
      - name: vh
        domains: [\"*\"]
        routes:
          - match: {prefix: /}
            route: {cluster: missing}
clusters:
  - name: c
    endpoints: [{address: film-service, port: 80}]
";
    std::fs::write(&file, yaml).expect("write config");
    let out = weir(&["check-config", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let f = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{f}: listeners[0].virtual_hosts[0].routes[0].route.cluster (line 9): unknown cluster \"missing\" (defined: c)\n\
             {f}: clusters[0].endpoints[0].address (line 12): STATIC cluster endpoints must be IP literals, \
             got \"film-service\" (use type: STRICT_DNS for DNS names)\n"
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_schema_prints_the_committed_schema() {
    let out = weir(&["config-schema"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/schema.json"
    ))
    .expect("read config/schema.json");
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// check-config loads what `weir proxy` loads: a certificate file full of
/// garbage fails it, naming the file (issue 10, item 7).
#[test]
fn garbage_certificate_fails_check_config_with_the_file_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "this is not a certificate\n").expect("write cert");
    std::fs::write(&key, "nor is this a key\n").expect("write key");
    let file = dir.path().join("tls.yaml");
    let yaml = format!(
        "listeners:
  - name: l
    address: 127.0.0.1:8443
    tls:
      certificates:
        - {{cert_chain_file: {}, private_key_file: {}}}
    virtual_hosts:
      - {{name: vh, domains: [\"*\"], routes: []}}
",
        cert.display(),
        key.display()
    );
    std::fs::write(&file, yaml).expect("write config");
    let out = weir(&["check-config", file.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&cert.display().to_string()),
        "the error names the file: {stderr}"
    );
}
