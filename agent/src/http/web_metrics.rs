//! The web server's own families: the requests and connections it refused, and the
//! web config reloads that failed. The counters live in the server's state
//! ([`WebState`]), where the server and access checks count; a `Collector` added to
//! the `/metrics` registry reads them at scrape time. Every reason is written from
//! the start, at zero, so `rate()` and `increase()` have a beginning.

use super::reload::WebState;
use crate::metrics::family::{Families, NO_LABELS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Why a request was answered 401, 403 or 429 instead of being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRefusal {
    /// No Authorization header where basic auth is configured.
    CredentialsMissing,
    /// A wrong user name or password, or an Authorization header that is not Basic.
    CredentialsWrong,
    /// No client certificate where one is required.
    ClientCertificateMissing,
    RateLimited,
}

impl RequestRefusal {
    const ALL: [RequestRefusal; 4] = [
        RequestRefusal::CredentialsMissing,
        RequestRefusal::CredentialsWrong,
        RequestRefusal::ClientCertificateMissing,
        RequestRefusal::RateLimited,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RequestRefusal::CredentialsMissing => "credentials_missing",
            RequestRefusal::CredentialsWrong => "credentials_wrong",
            RequestRefusal::ClientCertificateMissing => "client_certificate_missing",
            RequestRefusal::RateLimited => "rate_limited",
        }
    }
}

/// Why a connection was closed before any request of it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// Over --web.max-connections (answered 503, or closed when too many are).
    MaxConnections,
    /// The TLS handshake failed or was not done within --web.read-header-timeout.
    TlsHandshake,
    /// Plain HTTP sent to the TLS port (answered 400).
    PlainHttp,
}

impl ConnectionRefusal {
    const ALL: [ConnectionRefusal; 3] = [
        ConnectionRefusal::MaxConnections,
        ConnectionRefusal::TlsHandshake,
        ConnectionRefusal::PlainHttp,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::TlsHandshake => "tls_handshake",
            ConnectionRefusal::PlainHttp => "plain_http",
        }
    }
}

/// Counts since start, by reason.
#[derive(Debug, Default)]
pub struct WebCounters {
    requests_refused: [AtomicU64; RequestRefusal::ALL.len()],
    connections_refused: [AtomicU64; ConnectionRefusal::ALL.len()],
}

impl WebCounters {
    pub fn refused_request(&self, why: RequestRefusal) {
        self.requests_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused_connection(&self, why: ConnectionRefusal) {
        self.connections_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The web server's families, from its state at scrape time.
pub struct WebFamilies(pub Arc<WebState>);

impl fmt::Debug for WebFamilies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebFamilies")
    }
}

impl Collector for WebFamilies {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let c = &self.0.counters;
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        e.counter(
            "nodediag_http_requests_refused_total",
            "Requests answered 401, 403 or 429 instead of being served, by reason: credentials_missing, credentials_wrong (or not Basic), client_certificate_missing, rate_limited (--web.config.file).",
            RequestRefusal::ALL.map(|r| ([("reason", r.as_str())], count(&c.requests_refused[r as usize]))),
        )?;
        e.counter(
            "nodediag_http_connections_refused_total",
            "Connections closed before any request was served, by reason: max_connections (over --web.max-connections), tls_handshake (failed, or not done within --web.read-header-timeout), plain_http (sent to the TLS port).",
            ConnectionRefusal::ALL.map(|r| ([("reason", r.as_str())], count(&c.connections_refused[r as usize]))),
        )?;
        e.counter(
            "nodediag_web_config_reload_failures_total",
            "Reloads of --web.config.file (or a file it names) that failed; the previous configuration stays in force.",
            [(NO_LABELS, count(&self.0.failed_reloads))],
        )
    }
}
