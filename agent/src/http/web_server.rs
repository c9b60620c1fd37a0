//! Start-up of the web server from its flags: the open-file limit, the web
//! configuration file (a file that does not load is a failed start), the limits.

use super::fd_limit;
use super::guarded_io::Timeouts;
use super::head_gate::HeadLimits;
use super::reload::WebState;
use super::server::{self, ServerSettings};
use super::web_config::FileSet;
use super::web_flags::WebArgs;
use super::web_metrics::WebFamilies;
use crate::metrics::exposition::Exposition;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What shutdown leaves to requests in progress: the DaemonSet's
/// terminationGracePeriodSeconds is 10, and the collectors need the rest.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct WebServer {
    web: Arc<WebState>,
    files: FileSet,
    settings: ServerSettings,
}

impl WebServer {
    pub fn prepare(args: &WebArgs) -> anyhow::Result<WebServer> {
        let soft = match fd_limit::raise_to_hard() {
            Ok(l) => {
                match l.raised_from {
                    Some(was) => tracing::info!(
                        soft = l.soft,
                        hard = l.hard,
                        was,
                        "raised the open-file limit to the hard limit"
                    ),
                    None => tracing::info!(soft = l.soft, hard = l.hard, "open-file limit"),
                }
                l.soft
            }
            Err(e) => {
                tracing::warn!("cannot read or raise the open-file limit: {e}");
                1024
            }
        };
        let max_connections = args
            .max_connections
            .map_or_else(|| fd_limit::default_max_connections(soft), |n| n as usize);
        let (web, files) =
            WebState::start(args.config_file.clone(), args.unauthenticated_paths.clone())
                .context("--web.config.file")?;
        Ok(WebServer {
            web,
            files,
            settings: ServerSettings {
                max_connections,
                timeouts: Timeouts {
                    read_header: args.read_header_timeout,
                    idle: args.idle_timeout,
                },
                limits: HeadLimits::default(),
                shutdown_grace: SHUTDOWN_GRACE,
            },
        })
    }

    /// Listens on `addr` with the longest accept queue the kernel allows
    /// (net.core.somaxconn, 4096 by default since Linux 5.4; Go's listeners ask for
    /// the same), where tokio's default is 1024: a burst of connections then waits
    /// to be accepted rather than being dropped by the kernel.
    pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(65535)
    }

    /// Adds the server's own families (refused requests and connections, failed
    /// reloads) to what `/metrics` encodes.
    pub fn register_metrics(&self, metrics: &mut Exposition) {
        metrics.add(Box::new(WebFamilies(self.web.clone())));
    }

    /// For the start-up log line.
    pub fn describe(&self) -> String {
        format!(
            "{}; at most {} connections",
            self.web.current().config.describe(),
            self.settings.max_connections
        )
    }

    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let watcher = self.web.spawn_watcher(self.files);
        let served = server::serve(listener, app, self.web, self.settings, shutdown).await;
        if let Some(w) = watcher {
            w.abort();
        }
        served.context("HTTP server failed")
    }
}
