//! The web configuration file (`--web.config.file`): TLS, basic authentication,
//! extra response headers and a rate limit, in the format of Prometheus'
//! exporter-toolkit (docs/web-configuration.md there), so the file written for
//! node_exporter on the same node works here. Unknown keys are errors.

use super::tls::{self, TlsSettings};
use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<RateLimitFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<String>,
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerConfig {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFormat {
    interval: String,
    #[serde(default)]
    burst: u32,
}

/// A validated configuration, ready to serve with.
pub struct WebConfig {
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash.
    pub users: BTreeMap<String, String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub rate_limit: Option<RateLimit>,
    /// `http2: true` was written out; nodediag serves HTTP/1.1 only, which the log
    /// says (exporter-toolkit's default, HTTP/2 over TLS, goes without saying).
    pub http2_requested: bool,
}

impl WebConfig {
    /// No TLS, no authentication: what runs without `--web.config.file`.
    pub fn open() -> Self {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
            rate_limit: None,
            http2_requested: false,
        }
    }

    pub fn describe(&self) -> String {
        let tls = self
            .tls
            .as_ref()
            .map_or("off".to_string(), |t| t.summary.clone());
        format!(
            "TLS {tls}; basic auth {}; {} extra headers; rate limit {}",
            if self.users.is_empty() {
                "off".to_string()
            } else {
                format!("{} users", self.users.len())
            },
            self.headers.len(),
            self.rate_limit
                .as_ref()
                .map_or("off".to_string(), |r| format!(
                    "{:?} burst {}",
                    r.interval, r.burst
                )),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// One request per interval on average...
    pub interval: Duration,
    /// ...with bursts of this many.
    pub burst: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("web config {path}: {message}")]
pub struct WebConfigError {
    pub path: PathBuf,
    pub message: String,
}

/// The files a configuration was read from, with a digest of what they held, so a
/// change to any of them (a rewritten config, a certificate renewed behind a symlink)
/// is noticed by comparing digests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileSet {
    files: Vec<(PathBuf, Option<[u8; 32]>)>,
}

impl FileSet {
    pub fn read(&mut self, path: &Path) -> std::io::Result<Vec<u8>> {
        let read = std::fs::read(path);
        self.files
            .push((path.to_path_buf(), read.as_ref().ok().map(|b| digest(b))));
        read
    }

    /// The same files read again now.
    pub fn reread(&self) -> FileSet {
        let mut now = FileSet::default();
        for (path, _) in &self.files {
            let _ = now.read(path);
        }
        now
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Reads and validates the file and everything it names. `open_paths`: some paths
/// are served without client certificates (the TLS handshake must then let clients
/// without one through). The returned `FileSet` is filled even on error, so a
/// broken file is not retried until something changes.
pub fn load(path: &Path, open_paths: bool) -> (FileSet, Result<WebConfig, WebConfigError>) {
    let mut files = FileSet::default();
    let result = load_into(path, open_paths, &mut files).map_err(|message| WebConfigError {
        path: path.to_path_buf(),
        message,
    });
    (files, result)
}

fn load_into(path: &Path, open_paths: bool, files: &mut FileSet) -> Result<WebConfig, String> {
    let bytes = files.read(path).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let file: FileFormat = if text.trim().is_empty() {
        FileFormat::default()
    } else {
        yaml_serde::from_str(&text).map_err(|e| e.to_string())?
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = match &file.tls_server_config {
        Some(t) if tls::is_enabled(t) => Some(tls::build(t, dir, open_paths, files)?),
        _ => None,
    };
    let users = file.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        if user.contains(':') {
            return Err(format!(
                "basic_auth_users {user:?}: a user name cannot contain ':' (basic auth splits there)"
            ));
        }
        bcrypt::HashParts::from_str(hash).map_err(|e| {
            format!("basic_auth_users {user:?}: not a bcrypt hash ({e}); make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`")
        })?;
    }
    let http = file.http_server_config.unwrap_or_default();
    let headers = http
        .headers
        .iter()
        .map(|(k, v)| header(k, v))
        .collect::<Result<_, _>>()?;
    let rate_limit = file.rate_limit.map(rate_limit).transpose()?.flatten();
    Ok(WebConfig {
        tls,
        users,
        headers,
        rate_limit,
        http2_requested: http.http2 == Some(true),
    })
}

/// exporter-toolkit's list of settable headers and the values it allows.
const SETTABLE_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((_, allowed)) = SETTABLE_HEADERS.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "http_server_config.headers {name:?}: cannot be set; settable: {}",
            SETTABLE_HEADERS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if !allowed.is_empty() && !allowed.contains(&value) {
        return Err(format!(
            "http_server_config.headers {name}: {value:?} is not one of {allowed:?}"
        ));
    }
    let value = HeaderValue::from_str(value)
        .map_err(|e| format!("http_server_config.headers {name}: {e}"))?;
    Ok((
        HeaderName::from_str(name).expect("listed names are valid"),
        value,
    ))
}

fn rate_limit(r: RateLimitFormat) -> Result<Option<RateLimit>, String> {
    let interval = if r.interval.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(&r.interval)
            .map_err(|e| format!("rate_limit.interval {:?}: {e}", r.interval))?
    };
    if interval.is_zero() {
        return Ok(None);
    }
    if r.burst == 0 {
        return Err("rate_limit.burst: must be at least 1 (0 would refuse every request)".into());
    }
    Ok(Some(RateLimit {
        interval,
        burst: r.burst,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .prefix("nodediag-webcfg-")
            .suffix(".yml")
            .tempfile()
            .unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    fn error(body: &str) -> String {
        let f = file(body);
        match load(f.path(), false).1 {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => e.to_string(),
        }
    }

    // bcrypt of "secret" at cost 4 (the minimum, to keep the test fast).
    fn hash() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    #[test]
    fn an_empty_file_serves_plain_and_open() {
        let f = file("");
        let c = load(f.path(), false).1.unwrap();
        assert!(c.tls.is_none() && c.users.is_empty() && c.rate_limit.is_none());
    }

    #[test]
    fn users_headers_and_rate_limit_are_read() {
        let f = file(&format!(
            "basic_auth_users:\n  prometheus: '{}'\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\nrate_limit:\n  interval: 100ms\n  burst: 5\n",
            hash()
        ));
        let c = load(f.path(), false).1.unwrap();
        assert_eq!(c.users.keys().collect::<Vec<_>>(), ["prometheus"]);
        assert_eq!(c.headers[0].0.as_str(), "x-frame-options");
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_millis(100),
                burst: 5
            })
        );
        assert!(!c.http2_requested);
    }

    #[test]
    fn mistakes_are_errors_that_name_the_key() {
        let e = error("basic_auth_user:\n  a: b\n");
        assert!(e.contains("basic_auth_user"), "{e}");
        let e = error("tls_server_config:\n  cert_file: a\n  key_file: b\n  ciphers: [x]\n");
        assert!(e.contains("ciphers"), "{e}");
        let e = error("basic_auth_users:\n  prometheus: plaintext\n");
        assert!(e.contains("prometheus") && e.contains("bcrypt"), "{e}");
        let e = error("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(e.contains("X-Frame-Options"), "{e}");
        let e = error("http_server_config:\n  headers:\n    Server: me\n");
        assert!(e.contains("Server"), "{e}");
        let e = error("rate_limit:\n  interval: 1s\n");
        assert!(e.contains("rate_limit.burst"), "{e}");
        let e = error("tls_server_config:\n  key_file: k\n");
        assert!(e.contains("cert or cert_file"), "{e}");
    }

    #[test]
    fn missing_files_are_named_and_still_watched() {
        let f = file("tls_server_config:\n  cert_file: no-such.crt\n  key_file: no-such.key\n");
        let (files, result) = load(f.path(), false);
        let e = result.err().unwrap().to_string();
        assert!(e.contains("cert_file") && e.contains("no-such.crt"), "{e}");
        assert_eq!(files.files.len(), 2, "{files:?}");
        assert_eq!(files.files[1].1, None);
        assert_eq!(files.reread(), files);
    }
}
