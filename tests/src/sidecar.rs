//! Istio-style sidecars in simulated pods, shared by the benchmarks that
//! compare weir with a proxy per pod: an Envoy in the pod's network
//! namespace as uid 1337, behind Istio's iptables rules, and (for mutual
//! TLS between sidecars) a root and SPIFFE workload certificates as PEM
//! files Envoy reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::iptables::IptablesRedirect;
use crate::pod::{PodProcess, SimPod};
use crate::support::wait_ready_in;

/// Istio's sidecar ports and the uid its iptables rules leave alone.
pub const SIDECAR_OUTBOUND: u16 = 15001;
pub const SIDECAR_INBOUND: u16 = 15006;
pub const SIDECAR_ADMIN: u16 = 15000;
pub const SIDECAR_UID: &str = "1337";
/// Istio's default `concurrency` for sidecars.
pub const SIDECAR_WORKERS: &str = "2";

/// A running sidecar: its role in the benchmark, the Envoy process, its log.
pub struct Sidecar {
    pub role: &'static str,
    pub process: PodProcess,
    pub log: PathBuf,
}

/// Envoy in `pod`'s network namespace as uid 1337 (so its own connections
/// pass the OUTPUT rule), ready when its admin says so.
pub fn start_envoy(
    envoy: &Path,
    config: &Path,
    role: &'static str,
    pod: &SimPod,
    dir: &Path,
) -> Result<Sidecar> {
    let log = dir.join(format!("envoy-{role}.log"));
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={SIDECAR_UID}"))
        .arg(format!("--regid={SIDECAR_UID}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(envoy)
        .arg("-c")
        .arg(config)
        .args(["--concurrency", SIDECAR_WORKERS, "--disable-hot-restart"])
        .args(["--log-level", "warn"]);
    let process = pod.spawn_outside_cgroup_logged(cmd, &log)?;
    let admin = SocketAddr::from(([127, 0, 0, 1], SIDECAR_ADMIN));
    if !wait_ready_in(pod, admin, Duration::from_secs(30)) {
        bail!(
            "Envoy in pod {} never became ready; its log:\n{}",
            pod.name,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    println!(
        "bench: envoy (pid {}) in {}'s namespace, --concurrency {SIDECAR_WORKERS}",
        process.pid(),
        pod.name
    );
    Ok(Sidecar { role, process, log })
}

/// Istio's rules for a pod: its outbound TCP (not loopback, not the
/// sidecar's own) to :15001, its inbound TCP to :15006.
pub fn sidecar_rules(pod: &SimPod) -> Result<Vec<IptablesRedirect>> {
    let outbound = [
        "!",
        "-d",
        "127.0.0.0/8",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        SIDECAR_UID,
    ];
    Ok(vec![
        IptablesRedirect::add(pod, "OUTPUT", &outbound, SIDECAR_OUTBOUND)?,
        IptablesRedirect::add(pod, "PREROUTING", &[], SIDECAR_INBOUND)?,
    ])
}

/// The PEM files of one sidecar's mutual TLS: the root both sides validate
/// against, and the workload's certificate and key.
#[derive(Debug, Clone)]
pub struct WorkloadPem {
    pub root: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A root made for one run (ECDSA P-256), from which [`SidecarPki::workload`]
/// issues SPIFFE certificates, as Istio's CA does for its sidecars.
pub struct SidecarPki {
    root: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

const PKI_TTL: Duration = Duration::from_secs(24 * 3600);
const PKI_BACKDATE: Duration = Duration::from_secs(5 * 60);

impl SidecarPki {
    /// A new root, written to `dir/root.pem`.
    pub fn generate(dir: &Path) -> Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = Self::params("weir bench sidecar root");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key)?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("root.pem"), root.pem())?;
        Ok(Self {
            root,
            key,
            dir: dir.to_owned(),
        })
    }

    /// A certificate for `spiffe://<trust_domain>/ns/<ns>/sa/<sa>` (the only
    /// URI SAN; server and client authentication), with its key, written
    /// as `<name>.crt` and `<name>.key`.
    pub fn workload(&self, name: &str, spiffe_id: &str) -> Result<WorkloadPem> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = Self::params(name);
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.root, &self.key)?;
        let pem = WorkloadPem {
            root: self.dir.join("root.pem"),
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&pem.cert, cert.pem())?;
        std::fs::write(&pem.key, key.serialize_pem())?;
        Ok(pem)
    }

    fn params(common_name: &str) -> CertificateParams {
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.not_before = (now - PKI_BACKDATE).into();
        params.not_after = (now + PKI_TTL).into();
        params
    }
}
