//! Flags of the web server (`nodediag serve`): TLS and authentication come from the
//! web configuration file; the limits are flags.

use super::access::OPENABLE_PATHS;
use crate::flags::parse_duration;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Web server")]
pub struct WebArgs {
    /// TLS and basic authentication, in the Prometheus exporter-toolkit web config
    /// format (tls_server_config, basic_auth_users, http_server_config.headers,
    /// rate_limit). Re-read every 5s and on SIGHUP; a file that does not load keeps
    /// the last good one [default: plain HTTP, no authentication].
    #[arg(
        long = "web.config.file",
        env = "NODEDIAG_WEB_CONFIG_FILE",
        value_name = "FILE"
    )]
    pub config_file: Option<PathBuf>,

    /// Connections served at once; one more is answered 503 and closed
    /// [default: half the open-file limit, at most 1024].
    #[arg(long = "web.max-connections", env = "NODEDIAG_WEB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_connections: Option<u32>,

    /// The TLS handshake, and then each request's line and headers, must arrive
    /// within this long; a slower client is disconnected (408 if it sent part of a
    /// request).
    #[arg(long = "web.read-header-timeout", env = "NODEDIAG_WEB_READ_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub read_header_timeout: Duration,

    /// A keep-alive connection without a request, or a client that reads nothing of
    /// its answer, for this long is closed. Above the scrape interval lets a
    /// scraper keep its connection (and skip a TLS handshake per scrape).
    #[arg(long = "web.idle-timeout", env = "NODEDIAG_WEB_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// Serve this probe endpoint without basic auth or a client certificate, for the
    /// kubelet's httpGet probes, which can send neither (repeatable, or
    /// comma-separated: /healthz, /readyz). With RequireAndVerifyClientCert the TLS
    /// handshake then accepts clients without a certificate, and every other path
    /// answers them 403.
    #[arg(long = "web.unauthenticated-path", env = "NODEDIAG_WEB_UNAUTHENTICATED_PATH", value_delimiter = ',', value_parser = parse_openable_path, value_name = "PATH")]
    pub unauthenticated_paths: Vec<String>,
}

fn parse_openable_path(s: &str) -> Result<String, String> {
    if OPENABLE_PATHS.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: only the probe endpoints can be left open: {}",
            OPENABLE_PATHS.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load, Command};
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn web_flags_come_from_the_command_line_or_the_config_file() {
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        f.write_all(
            b"web:\n  config.file: /etc/nodediag/web.yml\n  max-connections: 64\n  idle-timeout: 2m\n",
        )
        .unwrap();
        let cli = load([
            "nodediag",
            "serve",
            "--config",
            f.path().to_str().unwrap(),
            "--web.unauthenticated-path=/healthz,/readyz",
            "--web.read-header-timeout=3s",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            s.web.config_file.as_deref(),
            Some(std::path::Path::new("/etc/nodediag/web.yml"))
        );
        assert_eq!(s.web.max_connections, Some(64));
        assert_eq!(s.web.idle_timeout, Duration::from_secs(120));
        assert_eq!(s.web.read_header_timeout, Duration::from_secs(3));
        assert_eq!(s.web.unauthenticated_paths, ["/healthz", "/readyz"]);
    }

    #[test]
    fn only_probe_paths_can_be_opened_and_limits_are_positive() {
        for bad in [
            "--web.unauthenticated-path=/metrics",
            "--web.max-connections=0",
            "--web.idle-timeout=0s",
        ] {
            let err = load(["nodediag", "serve", bad]).err().unwrap().to_string();
            assert!(err.contains(bad.split('=').next().unwrap()), "{bad}: {err}");
        }
    }
}
