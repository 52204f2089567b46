//! Kubeconfig files for kubectl and kube-rs: the admin's static token, or a
//! service account's token from the TokenRequest API.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Writes a kubeconfig with one cluster, one user (bearer token) and one context.
pub fn write(path: &Path, server: &str, ca_cert: &Path, user: &str, token: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: weir-test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: {user}@weir-test
  context:
    cluster: weir-test
    user: {user}
current-context: {user}@weir-test
",
        ca = ca_cert.display(),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A kube-rs client that reads its cluster, CA and credentials from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", kubeconfig.display()))?;
    Client::try_from(config).context("building a client")
}

/// A token for the service account `namespace/name`, as the kubelet gets one
/// for a projected service-account volume (TokenRequest, an hour long).
pub async fn service_account_token(admin: &Client, namespace: &str, name: &str) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for service account {namespace}/{name}"))?;
    answer
        .status
        .map(|status| status.token)
        .with_context(|| format!("TokenRequest for {namespace}/{name} returned no status"))
}

/// Where a service account's kubeconfig goes inside the server's temp dir.
pub fn service_account_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!("kubeconfig-sa-{namespace}-{name}"))
}
