//! `envoy.transport_sockets.tls`: DownstreamTlsContext on a listener's
//! filter chain, UpstreamTlsContext on a cluster.

use super::common::{Pem, data_source_pem};
use super::walk::{Cx, Field, type_name};
use crate::config::{
    AlpnProtocol, DownstreamTlsConfig, InlineKey, TlsCertificateConfig, TlsVersion,
    UpstreamTlsConfig,
};

const DOWNSTREAM_TYPES: [&str; 2] = [
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.api.v2.auth.DownstreamTlsContext",
];
const UPSTREAM_TYPES: [&str; 2] = [
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.api.v2.auth.UpstreamTlsContext",
];
const TLS_SOCKET_NAMES: [&str; 2] = ["envoy.transport_sockets.tls", "tls"];
const PLAIN_SOCKET_NAMES: [&str; 2] = ["envoy.transport_sockets.raw_buffer", "raw_buffer"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Downstream,
    Upstream,
}

/// A `transport_socket`: `Some(Some(context))` for TLS, `Some(None)` for
/// cleartext (raw_buffer), `None` when refused.
pub(super) fn transport_socket<'v>(
    cx: &mut Cx,
    f: &Field<'v>,
    side: Side,
) -> Option<Option<Field<'v>>> {
    let mut o = cx.obj(f, "TransportSocket")?;
    let name = o.get("name").and_then(|n| cx.string(&n));
    let config = o.get("typed_config").or_else(|| o.get("config"));
    o.finish(cx);
    let name = name.unwrap_or_default();
    if PLAIN_SOCKET_NAMES.contains(&name.as_str()) {
        return Some(None);
    }
    let Some(config) = config else {
        if TLS_SOCKET_NAMES.contains(&name.as_str()) {
            cx.refuse(&f.path, "a TLS transport socket needs its typed_config");
        } else {
            cx.refuse(
                &f.path,
                format!("transport socket {name:?} is not supported: weir has TLS (envoy.transport_sockets.tls) or plain TCP"),
            );
        }
        return None;
    };
    let type_path = config.path.key("@type");
    let Some(type_name) = type_name(Some(&config)) else {
        cx.refuse(&config.path, "@type is required");
        return None;
    };
    let (accepted, wanted) = match side {
        Side::Downstream => (&DOWNSTREAM_TYPES, "DownstreamTlsContext"),
        Side::Upstream => (&UPSTREAM_TYPES, "UpstreamTlsContext"),
    };
    if !accepted.contains(&type_name) {
        cx.refuse(
            &type_path,
            format!("{type_name:?} is not supported here: weir takes a {wanted} (envoy.transport_sockets.tls)"),
        );
        return None;
    }
    Some(Some(config))
}

/// What both contexts share (`common_tls_context`).
#[derive(Default)]
struct CommonTls {
    /// (certificate chain, private key)
    certificates: Vec<(Pem, Pem)>,
    alpn: Vec<AlpnProtocol>,
    min_version: TlsVersion,
    trusted_ca: Option<Pem>,
    accept_untrusted: Option<crate::config::DocPath>,
}

pub(super) fn downstream(cx: &mut Cx, f: &Field<'_>) -> Option<DownstreamTlsConfig> {
    let mut o = cx.obj(f, "DownstreamTlsContext")?;
    o.skip(&["@type"]);
    let (common, common_ok) = match o.get("common_tls_context") {
        Some(c) => common(cx, &c, Side::Downstream),
        None => (CommonTls::default(), true),
    };
    let require_client = o
        .get("require_client_certificate")
        .and_then(|r| cx.bool(&r))
        .unwrap_or(false);
    if let Some(sni) = o.get("require_sni")
        && cx.bool(&sni) == Some(true)
    {
        cx.refuse(
            &sni.path,
            "weir serves clients without SNI the first certificate",
        );
    }
    let path = o.path.clone();
    o.finish(cx);
    if common.certificates.is_empty() && common_ok {
        cx.refuse(
            &path,
            "a TLS listener needs common_tls_context.tls_certificates",
        );
        return None;
    }
    if let Some(untrusted) = &common.accept_untrusted {
        cx.refuse(
            untrusted,
            "weir verifies the client certificates it asks for against the trusted_ca",
        );
    }
    if !common_ok {
        return None;
    }
    if common.certificates.len() > 1 {
        cx.note(
            &path.key("common_tls_context").key("tls_certificates"),
            "weir picks a certificate by the names listed in tls.certificates[].server_names, not the names in the certificates: list them, or weir serves the first to every client",
        );
    }
    let (client_ca_file, client_ca) = Pem::split(common.trusted_ca);
    Some(DownstreamTlsConfig {
        certificates: common
            .certificates
            .into_iter()
            .map(|(chain, key)| {
                let (cert_chain_file, cert_chain) = Pem::split(Some(chain));
                let (private_key_file, private_key) = split_key(Some(key));
                TlsCertificateConfig {
                    cert_chain_file,
                    cert_chain,
                    private_key_file,
                    private_key,
                    server_names: Vec::new(),
                }
            })
            .collect(),
        alpn: common.alpn,
        min_version: common.min_version,
        client_ca_file,
        client_ca,
        require_client_certificate: require_client,
    })
}

pub(super) fn upstream(cx: &mut Cx, f: &Field<'_>) -> Option<UpstreamTlsConfig> {
    let mut o = cx.obj(f, "UpstreamTlsContext")?;
    o.skip(&["@type", "max_session_keys"]);
    let sni = o.get("sni").and_then(|s| cx.string(&s));
    let (common, common_ok) = match o.get("common_tls_context") {
        Some(c) => common(cx, &c, Side::Upstream),
        None => (CommonTls::default(), true),
    };
    if let Some(reneg) = o.get("allow_renegotiation")
        && cx.bool(&reneg) == Some(true)
    {
        cx.refuse(&reneg.path, "weir never renegotiates TLS");
    }
    let path = o.path.clone();
    o.finish(cx);
    if common.certificates.len() > 1 {
        cx.refuse(
            &path.key("common_tls_context").key("tls_certificates"),
            "weir presents one client certificate to an upstream",
        );
        return None;
    }
    if !common_ok {
        return None;
    }
    if common.trusted_ca.is_none() && common.accept_untrusted.is_none() {
        cx.note(
            &path,
            "Envoy does not verify this upstream's certificate (no validation_context.trusted_ca); weir verifies it against the system roots: set tls.ca_file, or tls.insecure_skip_verify: true to keep Envoy's behaviour",
        );
    }
    let (cert, key) = common.certificates.into_iter().next().unzip();
    let (client_cert_file, client_cert) = Pem::split(cert);
    let (client_key_file, client_key) = split_key(key);
    let (ca_file, ca) = Pem::split(common.trusted_ca);
    Some(UpstreamTlsConfig {
        sni,
        ca_file,
        ca,
        insecure_skip_verify: common.accept_untrusted.is_some(),
        client_cert_file,
        client_cert,
        client_key_file,
        client_key,
        alpn: common.alpn,
        min_version: common.min_version,
    })
}

/// The common context, and whether all of it carried over: what did is
/// checked further even when something else was refused.
fn common(cx: &mut Cx, f: &Field<'_>, side: Side) -> (CommonTls, bool) {
    let mut out = CommonTls::default();
    let Some(mut o) = cx.obj(f, "CommonTlsContext") else {
        return (out, false);
    };
    let mut ok = true;
    if let Some(certs) = o.get("tls_certificates") {
        for cert in cx.seq(&certs) {
            match certificate(cx, &cert) {
                Some(pair) => out.certificates.push(pair),
                None => ok = false,
            }
        }
    }
    if let Some(alpn) = o.get("alpn_protocols") {
        for p in cx.seq(&alpn) {
            let chosen = cx.choice(
                &p,
                &[("h2", AlpnProtocol::H2), ("http/1.1", AlpnProtocol::Http11)],
                "weir offers h2 and http/1.1",
            );
            match chosen {
                Some(p) => out.alpn.push(p),
                None => ok = false,
            }
        }
    }
    if let Some(params) = o.get("tls_params") {
        match tls_params(cx, &params) {
            Some(v) => out.min_version = v,
            None => ok = false,
        }
    }
    if let Some(v) = o.get("validation_context") {
        ok &= validation_context(cx, &v, side, &mut out);
    }
    o.finish(cx);
    (out, ok)
}

/// A private key as weir's `<name>_file` and `<name>` fields.
fn split_key(key: Option<Pem>) -> (Option<std::path::PathBuf>, Option<InlineKey>) {
    let (file, inline) = Pem::split(key);
    (file, inline.map(InlineKey::new))
}

fn certificate(cx: &mut Cx, f: &Field<'_>) -> Option<(Pem, Pem)> {
    let mut o = cx.obj(f, "TlsCertificate")?;
    let chain = o
        .require(cx, "certificate_chain")
        .and_then(|c| data_source_pem(cx, &c, "certificate"));
    let key = o
        .require(cx, "private_key")
        .and_then(|k| data_source_pem(cx, &k, "private key"));
    if let Some(p) = o.get("password") {
        cx.refuse(&p.path, "weir reads unencrypted private keys only");
    }
    o.finish(cx);
    Some((chain?, key?))
}

fn tls_params(cx: &mut Cx, f: &Field<'_>) -> Option<TlsVersion> {
    let mut o = cx.obj(f, "TlsParameters")?;
    let min = match o.get("tls_minimum_protocol_version") {
        Some(v) => cx.choice(
            &v,
            &[
                ("TLS_AUTO", TlsVersion::Tls12),
                ("TLSv1_2", TlsVersion::Tls12),
                ("TLSv1_3", TlsVersion::Tls13),
            ],
            "weir speaks TLS 1.2 and 1.3 only (TLSv1_2 or TLSv1_3)",
        ),
        None => Some(TlsVersion::Tls12),
    };
    let max_ok = match o.get("tls_maximum_protocol_version") {
        Some(v) => cx
            .choice(
                &v,
                &[("TLS_AUTO", ()), ("TLSv1_3", ())],
                "weir always allows TLS 1.3",
            )
            .is_some(),
        None => true,
    };
    o.finish(cx);
    min.filter(|_| max_ok)
}

fn validation_context(cx: &mut Cx, f: &Field<'_>, side: Side, out: &mut CommonTls) -> bool {
    let Some(mut o) = cx.obj(f, "CertificateValidationContext") else {
        return false;
    };
    let mut ok = true;
    if let Some(ca) = o.get("trusted_ca") {
        match data_source_pem(cx, &ca, "CA bundle") {
            Some(pem) => out.trusted_ca = Some(pem),
            None => ok = false,
        }
    }
    if let Some(v) = o.get("trust_chain_verification") {
        match cx.choice(
            &v,
            &[("VERIFY_TRUST_CHAIN", false), ("ACCEPT_UNTRUSTED", true)],
            "weir verifies the chain, or (upstream) accepts any certificate",
        ) {
            Some(true) => out.accept_untrusted = Some(v.path.clone()),
            Some(false) => {}
            None => ok = false,
        }
    }
    if side == Side::Upstream && out.trusted_ca.is_some() && out.accept_untrusted.is_some() {
        cx.refuse(
            &o.path,
            "weir either verifies against trusted_ca or accepts any certificate: choose one",
        );
        ok = false;
    }
    o.finish(cx);
    ok
}
