//! `tls_server_config` of the web configuration file, turned into a rustls server
//! configuration. What rustls cannot do honestly (TLS 1.0/1.1, unverified client
//! certificates, suites and curves it does not implement) is an error naming the
//! key, never silently dropped.

use super::web_config::{FileSet, TlsServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use std::path::Path;
use std::sync::Arc;

/// Who must show a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// None is asked for (`NoClientCert`).
    NotRequested,
    /// Verified if shown (`VerifyClientCertIfGiven`).
    Optional,
    /// Verified and required (`RequireAndVerifyClientCert`).
    Required,
    /// Required, except on the paths left open for probes: the handshake lets a
    /// client without one through and the request is refused everywhere else.
    RequiredOutsideOpenPaths,
}

pub struct TlsSettings {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub client_certs: ClientCerts,
    /// For the log: versions and client authentication.
    pub summary: String,
}

/// Whether any TLS key is set: exporter-toolkit serves plain HTTP when none is.
pub fn is_enabled(t: &TlsServerConfig) -> bool {
    t.cert.is_some()
        || t.key.is_some()
        || t.cert_file.is_some()
        || t.key_file.is_some()
        || t.client_ca.is_some()
        || t.client_ca_file.is_some()
        || t.client_auth_type.is_some()
}

/// Builds the acceptor; `dir` is the config file's directory (relative file names
/// are relative to it, as in exporter-toolkit); every file read is added to `files`.
pub fn build(
    t: &TlsServerConfig,
    dir: &Path,
    open_paths: bool,
    files: &mut FileSet,
) -> Result<TlsSettings, String> {
    let cert_pem = inline_or_file(&t.cert, &t.cert_file, "cert", dir, files)?
        .ok_or("tls_server_config: one of cert or cert_file is required")?;
    let key_pem = inline_or_file(&t.key, &t.key_file, "key", dir, files)?
        .ok_or("tls_server_config: one of key or key_file is required")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem.bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert_pem.origin))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", cert_pem.origin));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem.bytes)
        .map_err(|e| format!("{}: no private key: {e}", key_pem.origin))?;

    let provider = Arc::new(provider(t)?);
    let versions = versions(t)?;
    let ca = inline_or_file(&t.client_ca, &t.client_ca_file, "client_ca", dir, files)?;
    let client_certs = client_certs(t, ca.is_some(), open_paths)?;
    if t.client_allowed_sans.is_some() {
        return Err("tls_server_config.client_allowed_sans is not supported: \
                    issue client certificates from a CA that signs only your scrapers"
            .into());
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match (&ca, client_certs) {
        (None, _) | (_, ClientCerts::NotRequested) => builder.with_no_client_auth(),
        (Some(ca), mode) => {
            let mut roots = RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(&ca.bytes) {
                let der = der.map_err(|e| format!("{}: {e}", ca.origin))?;
                roots
                    .add(der)
                    .map_err(|e| format!("{}: not a CA certificate: {e}", ca.origin))?;
            }
            if roots.is_empty() {
                return Err(format!("{}: no CERTIFICATE block", ca.origin));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match mode {
                ClientCerts::Required => verifier,
                _ => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("{}: {e}", ca.origin))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{} and {}: {e}", cert_pem.origin, key_pem.origin))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    let summary = format!(
        "{}, client certificates {}",
        match versions.as_slice() {
            [only] if only.version == rustls::ProtocolVersion::TLSv1_3 => "1.3",
            [_] => "1.2",
            _ => "1.2-1.3",
        },
        match client_certs {
            ClientCerts::NotRequested => "not requested",
            ClientCerts::Optional => "verified if given",
            ClientCerts::Required => "required",
            ClientCerts::RequiredOutsideOpenPaths => "required outside the open paths",
        }
    );
    Ok(TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        client_certs,
        summary,
    })
}

struct Pem {
    bytes: Vec<u8>,
    /// `tls_server_config.cert_file /path` or `tls_server_config.cert`, for errors.
    origin: String,
}

fn inline_or_file(
    inline: &Option<String>,
    file: &Option<String>,
    key: &str,
    dir: &Path,
    files: &mut FileSet,
) -> Result<Option<Pem>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: {key} and {key}_file are both set; use one"
        )),
        (Some(text), None) => Ok(Some(Pem {
            bytes: text.as_bytes().to_vec(),
            origin: format!("tls_server_config.{key}"),
        })),
        (None, Some(name)) => {
            let path = dir.join(name);
            let bytes = files
                .read(&path)
                .map_err(|e| format!("tls_server_config.{key}_file {}: {e}", path.display()))?;
            Ok(Some(Pem {
                bytes,
                origin: format!("tls_server_config.{key}_file {}", path.display()),
            }))
        }
        (None, None) => Ok(None),
    }
}

fn client_certs(
    t: &TlsServerConfig,
    has_ca: bool,
    open_paths: bool,
) -> Result<ClientCerts, String> {
    let kind = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let mode = match kind {
        "" | "NoClientCert" => ClientCerts::NotRequested,
        "VerifyClientCertIfGiven" => ClientCerts::Optional,
        "RequireAndVerifyClientCert" if open_paths => ClientCerts::RequiredOutsideOpenPaths,
        "RequireAndVerifyClientCert" => ClientCerts::Required,
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type {kind}: accepts client certificates \
                 without verifying them, which nodediag does not do; use \
                 RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
            ))
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?}: expected NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ))
        }
    };
    match (mode, has_ca) {
        (ClientCerts::NotRequested, true) => Err(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert; \
             set client_auth_type: RequireAndVerifyClientCert"
                .into(),
        ),
        (ClientCerts::NotRequested, false) | (_, true) => Ok(mode),
        (_, false) => Err(format!(
            "tls_server_config.client_auth_type {kind}: needs client_ca_file (or client_ca), \
             the CA that signs the client certificates"
        )),
    }
}

fn version(
    key: &str,
    v: Option<&str>,
    default: &'static SupportedProtocolVersion,
) -> Result<&'static SupportedProtocolVersion, String> {
    match v {
        None => Ok(default),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some(old @ ("TLS10" | "TLS11")) => Err(format!(
            "tls_server_config.{key} {old}: TLS 1.0 and 1.1 are not implemented (rustls); use TLS12 or TLS13"
        )),
        Some(other) => Err(format!(
            "tls_server_config.{key} {other:?}: expected TLS12 or TLS13"
        )),
    }
}

fn versions(t: &TlsServerConfig) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let min = version(
        "min_version",
        t.min_version.as_deref(),
        &rustls::version::TLS12,
    )?;
    let max = version(
        "max_version",
        t.max_version.as_deref(),
        &rustls::version::TLS13,
    )?;
    let all = [&rustls::version::TLS12, &rustls::version::TLS13];
    let lo = all
        .iter()
        .position(|v| v.version == min.version)
        .unwrap_or(0);
    let hi = all
        .iter()
        .position(|v| v.version == max.version)
        .unwrap_or(1);
    if lo > hi {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    Ok(all[lo..=hi].to_vec())
}

/// rustls' ring provider narrowed to the configured suites and curves, in the
/// configured order.
fn provider(t: &TlsServerConfig) -> Result<CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        let all = std::mem::take(&mut p.cipher_suites);
        let name_of =
            |s: &rustls::SupportedCipherSuite| go_suite_name(s.suite().as_str().unwrap_or(""));
        let mut tls12 = Vec::new();
        let mut tls13 = Vec::new();
        for name in names {
            let suite = all.iter().find(|s| name_of(s) == *name).ok_or_else(|| {
                format!(
                    "tls_server_config.cipher_suites {name:?}: not implemented by rustls; known: {}",
                    all.iter().map(name_of).collect::<Vec<_>>().join(", ")
                )
            })?;
            match suite {
                rustls::SupportedCipherSuite::Tls12(_) => tls12.push(*suite),
                rustls::SupportedCipherSuite::Tls13(_) => tls13.push(*suite),
            }
        }
        // As in Go, the list is about TLS 1.2; TLS 1.3 suites stay unless some are named.
        if tls13.is_empty() {
            tls13 = all
                .iter()
                .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)))
                .copied()
                .collect();
        }
        p.cipher_suites = tls13.into_iter().chain(tls12).collect();
    }
    if let Some(names) = &t.curve_preferences {
        let groups = std::mem::take(&mut p.kx_groups);
        let mut chosen = Vec::new();
        for name in names {
            let wanted = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "CurveP521" => {
                    return Err(
                        "tls_server_config.curve_preferences CurveP521: not implemented \
                                by rustls' ring provider; use X25519, CurveP256 or CurveP384"
                            .into(),
                    )
                }
                other => {
                    return Err(format!(
                        "tls_server_config.curve_preferences {other:?}: expected X25519, \
                         CurveP256 or CurveP384"
                    ))
                }
            };
            if let Some(g) = groups.iter().find(|g| g.name() == wanted) {
                chosen.push(*g);
            }
        }
        p.kx_groups = chosen;
    }
    Ok(p)
}

/// Go's (and IANA's) name for a rustls suite: rustls spells TLS 1.3 suites `TLS13_`.
fn go_suite_name(rustls_name: &str) -> String {
    match rustls_name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => rustls_name.to_string(),
    }
}
