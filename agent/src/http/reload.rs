//! The web configuration in force, and its reloading: the file and every file it
//! names (certificate, key, client CA) are re-read every few seconds and on SIGHUP;
//! when any changed, the configuration is rebuilt and swapped in for new connections
//! (TLS) and new requests (authentication). A file that does not load keeps the last
//! good configuration and is logged once per distinct content: fail closed, never
//! open. Reading the files rather than watching mtimes also sees a certificate
//! renewed by swapping a symlink (Kubernetes Secret volumes, cert-manager).

use super::access::TokenBucket;
use super::auth::PasswordChecker;
use super::web_config::{self, FileSet, WebConfig, WebConfigError};
use super::web_metrics::WebCounters;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// exporter-toolkit allows basic auth without TLS; so does nodediag, but says what
/// it means.
fn warn_if_clear_text(config: &WebConfig) {
    if config.tls.is_none() && !config.users.is_empty() {
        tracing::warn!(
            "basic_auth_users without tls_server_config: passwords cross the network in clear text"
        );
    }
}

/// How often the files are re-read. A handful of small files: negligible.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

/// A configuration with its runtime state.
pub struct Active {
    pub config: WebConfig,
    pub limiter: Option<TokenBucket>,
}

impl Active {
    fn new(config: WebConfig) -> Self {
        let limiter = config
            .rate_limit
            .map(|r| TokenBucket::new(r.interval, r.burst));
        Active { config, limiter }
    }
}

pub struct WebState {
    path: Option<PathBuf>,
    open_paths: Vec<String>,
    current: RwLock<Arc<Active>>,
    pub passwords: PasswordChecker,
    /// Reloads that failed and kept the previous configuration.
    pub failed_reloads: AtomicU64,
    /// Requests and connections refused, by reason.
    pub counters: WebCounters,
}

impl WebState {
    /// Loads the file (if any) at start: an error here is a failed start.
    pub fn start(
        path: Option<PathBuf>,
        open_paths: Vec<String>,
    ) -> Result<(Arc<WebState>, FileSet), WebConfigError> {
        let (files, config) = match &path {
            None => (FileSet::default(), WebConfig::open()),
            Some(p) => {
                let (files, loaded) = web_config::load(p, !open_paths.is_empty());
                (files, loaded?)
            }
        };
        warn_if_clear_text(&config);
        if config.http2_requested {
            tracing::info!("http_server_config.http2 is on, but nodediag serves HTTP/1.1 only");
        }
        let state = WebState {
            path,
            open_paths,
            current: RwLock::new(Arc::new(Active::new(config))),
            passwords: PasswordChecker::default(),
            failed_reloads: AtomicU64::new(0),
            counters: WebCounters::default(),
        };
        Ok((Arc::new(state), files))
    }

    pub fn current(&self) -> Arc<Active> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_open(&self, path: &str) -> bool {
        self.open_paths.iter().any(|p| p == path)
    }

    /// Re-reads the files every [`RELOAD_EVERY`] and on SIGHUP until the task is
    /// aborted. Without a config file there is nothing to watch.
    pub fn spawn_watcher(self: &Arc<Self>, files: FileSet) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.path.clone()?;
        let state = self.clone();
        Some(tokio::spawn(async move {
            let mut hangup =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!("no SIGHUP handler, reloading on a timer only: {e}");
                        None
                    }
                };
            let mut seen = files;
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                let state = state.clone();
                let path = path.clone();
                let prev = seen.clone();
                // File reads and bcrypt hash checks stay off the async workers.
                let result = tokio::task::spawn_blocking(move || {
                    state.reload_if_changed(&path, &prev, forced)
                })
                .await;
                if let Ok(Some(files)) = result {
                    seen = files;
                }
            }
        }))
    }

    /// Returns the files now read when something was (re)loaded or tried.
    fn reload_if_changed(
        &self,
        path: &std::path::Path,
        seen: &FileSet,
        forced: bool,
    ) -> Option<FileSet> {
        if !forced && seen.reread() == *seen {
            return None;
        }
        let (files, loaded) = web_config::load(path, !self.open_paths.is_empty());
        match loaded.and_then(|c| self.compatible(path, c)) {
            Ok(config) => {
                tracing::info!(config = %config.describe(), "web config reloaded");
                warn_if_clear_text(&config);
                self.passwords.retain_users(&config.users);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(Active::new(config));
            }
            Err(e) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!("{e}; keeping the previous web config");
            }
        }
        Some(files)
    }

    /// TLS cannot be turned on or off on a listening port: a config edit must never
    /// downgrade a TLS port to plain HTTP, nor break every scraper at once.
    fn compatible(
        &self,
        path: &std::path::Path,
        c: WebConfig,
    ) -> Result<WebConfig, WebConfigError> {
        let had_tls = self.current().config.tls.is_some();
        if had_tls != c.tls.is_some() {
            return Err(WebConfigError {
                path: path.to_path_buf(),
                message: format!(
                    "turns TLS {}: restart nodediag to change that",
                    if had_tls { "off" } else { "on" }
                ),
            });
        }
        Ok(c)
    }
}
