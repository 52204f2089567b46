//! TLS termination for a listener: certificates chosen by SNI, ALPN,
//! minimum version, optional client certificate verification, and a
//! watcher that re-reads the files when they change (a bad file keeps the
//! certificates in use; inline PEM changes with the config instead). The server's cipher suite order wins over the
//! client's; session tickets (TLS 1.2 and 1.3) come from one ticketer per
//! listener that outlives certificate reloads, so resumption does too.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;
use tokio_rustls::server::TlsStream;

use super::failure::LogLimit;
use super::renegotiation::{AlertThenClose, RecordGuard};
use super::server_names::ServerNames;
use super::{HANDSHAKE_TIMEOUT, TlsError, failure, pem, provider, versions};
use crate::config::{AlpnProtocol, Codec, DownstreamTlsConfig, PemSource};
use crate::proxy::metrics::{HandshakeFailure, TlsMetrics};

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);

/// What the handshake negotiated for HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    H2,
    Http1,
    /// No ALPN: the listener's codec decides.
    None,
}

pub struct TlsServer {
    config: ArcSwap<ServerConfig>,
    source: DownstreamTlsConfig,
    codec: Codec,
    listener: Arc<str>,
    pub metrics: TlsMetrics,
    watcher: std::sync::Mutex<Option<AbortHandle>>,
    /// Kept across certificate reloads so tickets issued before still resume.
    ticketer: Arc<dyn ProducesTickets>,
    failures_logged: LogLimit,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Load every file of `cfg` (errors name `field` paths under `path`)
    /// and start the reload watcher (inside the runtime).
    pub fn new(
        cfg: &DownstreamTlsConfig,
        codec: Codec,
        path: &str,
        listener: &str,
        metrics: TlsMetrics,
    ) -> Result<Arc<Self>, TlsError> {
        let ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Invalid {
            field: path.to_owned(),
            reason: format!("session ticket keys: {e}"),
        })?;
        let config = build(cfg, codec, path, Some(&ticketer))?;
        let s = Arc::new(Self {
            config: ArcSwap::from_pointee(config),
            source: cfg.clone(),
            codec,
            listener: listener.into(),
            metrics,
            watcher: std::sync::Mutex::new(None),
            ticketer,
            failures_logged: LogLimit::default(),
        });
        if !s.files().is_empty() {
            let h = tokio::spawn(watch(Arc::downgrade(&s), path.to_owned()));
            if let Ok(mut slot) = s.watcher.lock() {
                *slot = Some(h.abort_handle());
            }
        }
        Ok(s)
    }

    /// Load and parse every file of `cfg` as [`TlsServer::new`] does, with
    /// nothing started: `weir check-config`.
    pub fn check(cfg: &DownstreamTlsConfig, codec: Codec, path: &str) -> Result<(), TlsError> {
        build(cfg, codec, path, None).map(drop)
    }

    /// Handshake on `io` within [`HANDSHAKE_TIMEOUT`]; a failure is counted
    /// and logged with its reason, at most once per [`LogLimit::PERIOD`].
    /// The stream refuses renegotiation afterwards (`renegotiation`).
    pub async fn accept<IO>(
        &self,
        io: IO,
        peer: SocketAddr,
    ) -> Option<(AlertThenClose<TlsStream<RecordGuard<IO>>>, Negotiated)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.load_full());
        let (io, established) = RecordGuard::new(io);
        let (reason, err) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await
        {
            Ok(Ok(s)) => {
                established.store(true, Ordering::Relaxed);
                self.metrics.handshakes.inc();
                let n = match s.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Negotiated::H2,
                    Some(_) => Negotiated::Http1,
                    None => Negotiated::None,
                };
                return Some((AlertThenClose::new(s), n));
            }
            Ok(Err(e)) => (failure::classify(&e), e.to_string()),
            Err(_) => (HandshakeFailure::Timeout, "timed out".to_owned()),
        };
        self.metrics.failure(reason);
        if let Some(skipped) = self.failures_logged.admit() {
            log::warn!(
                "listener {}: TLS handshake from {peer} failed ({}): {err}{}",
                self.listener,
                reason.as_str(),
                if skipped > 0 {
                    format!(
                        " ({skipped} more failures not logged; see weir_tls_downstream_handshake_failures_total)"
                    )
                } else {
                    String::new()
                }
            );
        }
        None
    }

    /// The files to watch: inline PEM changes only with the config, which
    /// builds a new server then.
    fn files(&self) -> Vec<&Path> {
        let s = &self.source;
        s.certificates
            .iter()
            .flat_map(|c| [c.cert_chain_pem(), c.private_key_pem()])
            .chain([s.client_ca_pem()])
            .filter_map(|f| match f.source() {
                Some(PemSource::File(path)) => Some(path),
                _ => None,
            })
            .collect()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.watcher.lock()
            && let Some(h) = slot.take()
        {
            h.abort();
        }
    }
}

/// Poll the files; on a change rebuild, keeping the old config on error.
async fn watch(server: Weak<TlsServer>, path: String) {
    let stamps = |s: &TlsServer| s.files().iter().map(|f| pem::stamp(f)).collect::<Vec<_>>();
    let Some(mut last) = server.upgrade().map(|s| stamps(&s)) else {
        return;
    };
    loop {
        tokio::time::sleep(RELOAD_POLL).await;
        let Some(s) = server.upgrade() else { return };
        let now = stamps(&s);
        if now == last {
            continue;
        }
        last = now;
        match build(&s.source, s.codec, &path, Some(&s.ticketer)) {
            Ok(cfg) => {
                s.config.store(Arc::new(cfg));
                if let Some(r) = &s.metrics.reloads {
                    r.ok.inc();
                }
                log::info!("listener {}: TLS certificates reloaded", s.listener);
            }
            Err(e) => {
                if let Some(r) = &s.metrics.reloads {
                    r.failed.inc();
                }
                log::error!(
                    "listener {}: TLS certificate reload failed, keeping the old certificates: {e}",
                    s.listener
                );
            }
        }
    }
}

/// A rustls server config from the listener's TLS settings, issuing
/// session tickets with `ticketer` when given.
fn build(
    cfg: &DownstreamTlsConfig,
    codec: Codec,
    path: &str,
    ticketer: Option<&Arc<dyn ProducesTickets>>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let invalid = |field: String, e: &dyn std::fmt::Display| TlsError::Invalid {
        field,
        reason: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(cfg.min_version))
        .map_err(|e| invalid(format!("{path}.min_version"), &e))?;
    let builder = match cfg.client_ca_pem().given() {
        Some(ca) => {
            let roots = pem::roots(path, ca)?;
            let field = pem::field_name(path, &ca);
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let v = if cfg.require_client_certificate {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| invalid(field, &e))?)
        }
        None => builder.with_no_client_auth(),
    };
    let resolver = SniResolver::load(cfg, path, &provider)?;
    let mut sc = builder.with_cert_resolver(Arc::new(resolver));
    // The suite order is the provider's (AEAD, forward secret, strongest
    // first); a client preferring a weaker one does not get it.
    sc.ignore_client_order = true;
    if let Some(t) = ticketer {
        sc.ticketer = t.clone();
    }
    sc.alpn_protocols = cfg
        .alpn
        .iter()
        .filter(|p| match codec {
            Codec::Auto => true,
            Codec::Http1 => **p == AlpnProtocol::Http11,
            Codec::Http2 => **p == AlpnProtocol::H2,
        })
        .map(|p| p.id().to_vec())
        .collect();
    Ok(sc)
}

/// Certificates by SNI: exact names, then the longest `*.suffix`, then
/// the first certificate.
#[derive(Debug)]
struct SniResolver {
    by_name: ServerNames<Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn load(
        cfg: &DownstreamTlsConfig,
        path: &str,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, TlsError> {
        let mut by_name = ServerNames::default();
        let mut default = None;
        for (i, c) in cfg.certificates.iter().enumerate() {
            let p = format!("{path}.certificates[{i}]");
            let (chain_pem, key_pem) = (c.cert_chain_pem(), c.private_key_pem());
            let chain = pem::certs(&p, chain_pem)?;
            let key = pem::key(&p, key_pem)?;
            let ck =
                CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Invalid {
                    field: pem::field_name(&p, &key_pem),
                    reason: format!("{key_pem} does not fit {chain_pem}: {e}"),
                })?;
            let ck = Arc::new(ck);
            for name in &c.server_names {
                by_name.insert(name, ck.clone());
            }
            default.get_or_insert(ck);
        }
        let default = default.ok_or_else(|| TlsError::Invalid {
            field: format!("{path}.certificates"),
            reason: "no certificate".to_owned(),
        })?;
        Ok(Self { by_name, default })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello.server_name().and_then(|name| self.by_name.get(name));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key that does not fit its chain is named in the spelling given,
    /// inline or a file.
    #[test]
    fn a_key_that_does_not_fit_names_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let one = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let cert_file = dir.path().join("a.pem");
        std::fs::write(&cert_file, one.cert.pem()).unwrap();
        let key = other.key_pair.serialize_pem();
        let check = |certificate: String| {
            let cfg: DownstreamTlsConfig =
                serde_yaml::from_str(&format!("{{certificates: [{certificate}]}}")).unwrap();
            TlsServer::check(&cfg, Codec::Auto, "l.tls")
                .unwrap_err()
                .to_string()
        };
        let inline = check(format!(
            "{{cert_chain: {:?}, private_key: {key:?}}}",
            one.cert.pem()
        ));
        assert!(
            inline.starts_with(
                "l.tls.certificates[0].private_key: the inline private_key does not fit the inline cert_chain: "
            ),
            "{inline}"
        );
        let mixed = check(format!(
            "{{cert_chain_file: {}, private_key: {key:?}}}",
            cert_file.display()
        ));
        assert!(
            mixed.starts_with(&format!(
                "l.tls.certificates[0].private_key: the inline private_key does not fit {}: ",
                cert_file.display()
            )),
            "{mixed}"
        );
        assert!(!inline.contains("PRIVATE KEY") && !mixed.contains("PRIVATE KEY"));
    }
}
