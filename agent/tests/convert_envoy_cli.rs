//! `weir convert-envoy` as a user runs it: the config on stdout or in a
//! file, every refusal on stderr with nothing written, and a missing file.

use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run weir")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn prints_the_weir_config_on_stdout_and_the_notes_on_stderr() {
    let out = weir(&["convert-envoy", "config/envoy/seed-003-edge.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(
        "# Converted by `weir convert-envoy` from the Envoy bootstrap config/envoy/seed-003-edge.yaml.\n"
    ));
    let config = weir::config::parse_str(&stdout, "stdout").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.summary(), "1 listener(s), 3 route(s), 2 cluster(s)");
    assert_eq!(
        text(&out.stderr),
        "config/envoy/seed-003-edge.yaml: note: admin.access_log_path (line 63): weir writes no admin access log: left out\n\
         config/envoy/seed-003-edge.yaml: note: admin.address (line 64): the admin on 0.0.0.0:9901 answers /config_dump to anyone who can reach it, as Envoy's did; consider 127.0.0.1 and a stats.address for Prometheus (docs/envoy.md)\n"
    );
}

#[test]
fn output_option_writes_a_file_that_check_config_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("weir.yaml");
    let path = file.to_str().expect("utf-8 path");
    let out = weir(&[
        "convert-envoy",
        "config/envoy/seed-000-egress.yaml",
        "-o",
        path,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert!(text(&out.stderr).ends_with(&format!(
        "config/envoy/seed-000-egress.yaml: converted to {path}: 1 listener(s), 1 route(s), 1 cluster(s)\n"
    )));
    let check = weir(&["check-config", path]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert_eq!(
        text(&check.stdout),
        format!("{path}: ok: 1 listener(s), 1 route(s), 1 cluster(s)\n")
    );
    let same = weir(&[
        "convert-envoy",
        "config/envoy/seed-000-egress.yaml",
        "--output",
        path,
    ]);
    assert_eq!(same.status.code(), Some(0));
}

#[test]
fn refusals_are_all_listed_on_stderr_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envoy = dir.path().join("envoy.yaml");
    std::fs::write(
        &envoy,
        "static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          access_log: [{name: envoy.access_loggers.stdout}]
          route_config:
            virtual_hosts:
            - name: vh
              domains: ['*']
              routes: [{match: {prefix: /}, route: {cluster: c}}]
          http_filters: [{name: envoy.filters.http.router}]
  clusters:
  - name: c
    type: EDS
    eds_cluster_config: {eds_config: {ads: {}}}
",
    )
    .expect("write envoy.yaml");
    let file = dir.path().join("weir.yaml");
    let e = envoy.display();
    let out = weir(&[
        "convert-envoy",
        envoy.to_str().expect("utf-8 path"),
        "-o",
        file.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "{e}: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.access_log[0] (line 11): typed_config is required\n\
             {e}: static_resources.clusters[0].type (line 20): weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS\n\
             {e}: static_resources.clusters[0].eds_cluster_config (line 21): weir has no EDS: list the endpoints in load_assignment with type STATIC or STRICT_DNS\n\
             {e}: 3 field(s) cannot be carried over to weir; nothing was written\n"
        )
    );
    assert!(!file.exists(), "nothing is written on a refusal");
}

#[test]
fn a_missing_file_is_named() {
    let out = weir(&["convert-envoy", "config/envoy/no-such-file.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "config/envoy/no-such-file.yaml: cannot read: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_yaml_syntax_error_is_named_with_its_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let envoy = dir.path().join("envoy.yaml");
    std::fs::write(&envoy, "static_resources:\n  listeners: [\n").expect("write");
    let out = weir(&["convert-envoy", envoy.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: line 3: invalid YAML or JSON: did not find expected node content, while parsing a flow node\n",
            envoy.display()
        )
    );
}
