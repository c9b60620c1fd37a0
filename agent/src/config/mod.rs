//! Every knob: CLI flags, their environment variables, and an optional config file
//! (YAML or TOML) that takes the same keys as the long flags.
//!
//! Precedence: command line > environment > config file > built-in default.

mod file;

use crate::collect;
use crate::flags::parse_duration;
use crate::host::HostRoot;
use crate::signals::{self, SignalArgs};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The default port sits outside 9100-9999 (the Prometheus exporter range, fully
/// allocated) and away from the kubelet and kube-proxy ports (10248-10259).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:10360";

#[derive(Debug, Parser)]
#[command(
    name = "nodediag",
    version,
    about = "Node diagnostic agent for Kubernetes: finds what is wrong with this node and why",
    long_about = "nodediag samples the kernel of the node it runs on (conntrack, network \
namespaces and veths, fsync latency, cgroup CPU throttling, NICs, memory, PIDs, file \
handles and other node limits, the kernel log), serves Prometheus metrics, \
and explains node-level root causes with evidence and a remedy.\n\n\
Every flag of `serve` and `check` can also be set with its environment variable or in a \
config file (--config) under the same key as the long flag, e.g. `path.procfs: /host/proc` \
or nested `collector: {nic: {interval: 30s}}`.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: sample in the background, serve /, /metrics and /api/v1/.
    Serve(ServeArgs),
    /// Sample once, print the report and exit 0 (healthy), 1 (problem found) or
    /// 2 (could not tell): the node-problem-detector custom plugin protocol.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "NODEDIAG_LISTEN", default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Exempt the HTTP port from connection tracking (an nftables table `inet
    /// nodediag`, removed on exit), so the agent answers while the conntrack table is
    /// full; --web.notrack=false leaves nftables alone.
    #[arg(long = "web.notrack", env = "NODEDIAG_WEB_NOTRACK", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub web_notrack: bool,

    #[command(flatten)]
    pub agent: AgentArgs,

    #[command(flatten)]
    pub web: crate::http::web_flags::WebArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The full report: summary line, findings with evidence and remedy, collectors.
    Text,
    /// The report as JSON: summary, exit code, findings and every collector's status.
    Json,
    /// The summary line only: node-problem-detector keeps a plugin's whole output
    /// (cut at 80 bytes) as the condition message.
    Summary,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Output format of the report.
    #[arg(long, env = "NODEDIAG_FORMAT", value_enum, default_value = "text")]
    pub format: OutputFormat,

    /// Check only this finding id (repeatable); default: every finding.
    #[arg(long = "finding", env = "NODEDIAG_FINDING", value_delimiter = ',', value_parser = parse_finding_id, value_name = "ID")]
    pub findings: Vec<String>,

    /// Delay between the two samples that rules needing a rate (counters rising) compare.
    #[arg(long = "check.delay", env = "NODEDIAG_CHECK_DELAY", default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub delay: Duration,

    /// The whole check finishes within this, whatever hangs: collectors still busy
    /// then are reported hung (exit 2 when a checked finding needs them). Keep it under
    /// the plugin timeout of node-problem-detector (25 s in the shipped config).
    #[arg(long = "check.timeout", env = "NODEDIAG_CHECK_TIMEOUT", default_value = "20s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Config file (YAML, or TOML when it ends in .toml) with the long flags as keys.
    #[arg(long, env = "NODEDIAG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the host's procfs is mounted.
    #[arg(
        long = "path.procfs",
        env = "NODEDIAG_PATH_PROCFS",
        default_value = "/proc",
        value_name = "DIR"
    )]
    pub procfs: PathBuf,

    /// Where the host's sysfs is mounted.
    #[arg(
        long = "path.sysfs",
        env = "NODEDIAG_PATH_SYSFS",
        default_value = "/sys",
        value_name = "DIR"
    )]
    pub sysfs: PathBuf,

    /// Where the host's root filesystem is mounted (e.g. /host in a DaemonSet).
    #[arg(
        long = "path.rootfs",
        env = "NODEDIAG_PATH_ROOTFS",
        default_value = "/",
        value_name = "DIR"
    )]
    pub rootfs: PathBuf,

    /// Node name in reports and the API [default: the hostname].
    #[arg(long = "node-name", env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Default sampling interval of every collector.
    #[arg(long, env = "NODEDIAG_INTERVAL", default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// Window over which rules compute rates (drops rising, errors per packet).
    #[arg(long, env = "NODEDIAG_WINDOW", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub window: Duration,

    /// A collection that has not returned after this long is reported as hung.
    #[arg(long = "collector.timeout", env = "NODEDIAG_COLLECTOR_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub collector_timeout: Duration,

    /// Read files only: no netlink sockets (ctnetlink, rtnetlink, ethtool). For
    /// fixture trees, or where netlink is forbidden.
    #[arg(long = "no-netlink", env = "NODEDIAG_NO_NETLINK")]
    pub no_netlink: bool,

    /// Log filter: a level (off, error, warn, info, debug, trace), or per module
    /// with a default, e.g. `warn,nodediag::collect=debug`.
    #[arg(
        long = "log-level",
        env = "NODEDIAG_LOG_LEVEL",
        default_value = "info",
        value_parser = parse_log_filter,
        value_name = "FILTER"
    )]
    pub log_level: tracing_subscriber::filter::Targets,

    #[command(flatten)]
    pub signals: SignalArgs,
}

impl AgentArgs {
    /// Every flag at its default: for tests and benches.
    pub fn defaults() -> Self {
        let cli = Cli::try_parse_from(["nodediag", "check"]).expect("defaults parse");
        match cli.command {
            Command::Check(c) => c.agent,
            Command::Serve(s) => s.agent,
        }
    }

    pub fn host_root(&self) -> HostRoot {
        HostRoot {
            proc: self.procfs.clone(),
            sys: self.sysfs.clone(),
            rootfs: self.rootfs.clone(),
        }
    }

    /// What every collector is built with.
    pub fn collect_context(&self) -> collect::Context {
        collect::Context {
            root: self.host_root(),
            netlink: !self.no_netlink,
            interval: self.interval,
            window: self.window,
            mounts: Default::default(),
        }
    }

    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(hostname)
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn parse_log_filter(s: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    s.parse().map_err(|e| {
        format!("{e} (a level such as info or debug, or e.g. warn,nodediag::collect=debug)")
    })
}

fn parse_finding_id(s: &str) -> Result<String, String> {
    if signals::finding(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown finding id {s:?}; known ids: {}",
            signals::finding_ids().collect::<Vec<_>>().join(", ")
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Parses the command line, then merges the config file it names (if any) under it.
pub fn load<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = Cli::try_parse_from(&args)?;
    let (sub, agent) = match &cli.command {
        Command::Serve(s) => ("serve", &s.agent),
        Command::Check(c) => ("check", &c.agent),
    };
    let Some(path) = agent.config.clone() else {
        return Ok(cli);
    };
    let merged = file::merge(&args, sub, &path)?;
    let matches = Cli::command().try_get_matches_from(merged)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn agent(cli: &Cli) -> &AgentArgs {
        match &cli.command {
            Command::Serve(s) => &s.agent,
            Command::Check(c) => &c.agent,
        }
    }

    #[test]
    fn help_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_catalog() {
        let a = AgentArgs::defaults();
        assert_eq!(a.interval, Duration::from_secs(15));
        assert_eq!(a.window, Duration::from_secs(300));
        let s = &a.signals;
        assert_eq!(s.conntrack.thresholds.full_ratio, 0.95);
        assert_eq!(s.conntrack.thresholds.high_ratio, 0.80);
        assert_eq!(s.cgroup.thresholds.throttled_ratio, 0.25);
        assert_eq!(s.cgroup.thresholds.kernel_bug_usage_ratio, 0.5);
        assert_eq!(a.procfs, PathBuf::from("/proc"));
        let t = &s.pressure.thresholds;
        assert_eq!(t.memory_available_ratio, 0.10);
        assert_eq!(t.memory_psi_full_ratio, 0.10);
        assert_eq!(t.cpu_psi_some_ratio, 0.50);
        assert_eq!((t.pids_warning_ratio, t.pids_critical_ratio), (0.90, 0.95));
        assert_eq!((t.fd_warning_ratio, t.fd_critical_ratio), (0.80, 0.90));
        assert_eq!((t.inotify_ratio, t.neighbor_ratio), (0.90, 0.90));
        assert_eq!(
            s.pressure.inotify_interval,
            crate::collect::pressure::INOTIFY_INTERVAL
        );
        assert_eq!(s.kmsg.thresholds.unregister_count, 3);
        assert_eq!(
            s.kmsg.thresholds.unregister_window,
            Duration::from_secs(1200)
        );
        assert_eq!(kmsg_path(&a), PathBuf::from("/dev/kmsg"));
        assert_eq!(s.netns.thresholds.leak_min_age, Duration::from_secs(300));
        assert_eq!(s.netns.thresholds.ipam_warning_ratio, 0.90);
        assert_eq!(s.netns.thresholds.ipam_critical_ratio, 1.0);
        assert!(
            s.netns.netns_dirs.is_empty(),
            "defaults come from the rootfs"
        );
        assert_eq!(s.disk.thresholds.fsync_warn, Duration::from_millis(10));
        assert_eq!(s.disk.thresholds.fsync_critical, Duration::from_millis(100));
        assert_eq!(s.disk.thresholds.space_warn_ratio, 0.10);
        assert_eq!(s.disk.thresholds.inodes_critical_ratio, 0.05);
        assert_eq!(s.disk.fsync_file_size, 16 << 20);
        assert_eq!(s.disk.fsync_min_free, 1 << 30);
    }

    fn kmsg_path(a: &AgentArgs) -> PathBuf {
        a.signals.kmsg.path(&a.collect_context())
    }

    #[test]
    fn kmsg_follows_the_rootfs_unless_set() {
        let cli = load(["nodediag", "check", "--path.rootfs", "/host"]).unwrap();
        assert_eq!(kmsg_path(agent(&cli)), PathBuf::from("/host/dev/kmsg"));
        let cli = load([
            "nodediag",
            "check",
            "--path.rootfs",
            "/host",
            "--path.kmsg",
            "/k",
        ])
        .unwrap();
        assert_eq!(kmsg_path(agent(&cli)), PathBuf::from("/k"));
        let err = Cli::try_parse_from(["nodediag", "check", "--kmsg.unregister-count", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kmsg.unregister-count"), "{err}");
    }

    #[test]
    fn repeated_paths_accumulate_and_bad_counts_are_refused() {
        let cli = load([
            "nodediag",
            "check",
            "--fsync.path",
            "/a",
            "--fsync.path=/b",
            "--fsync.probes",
            "3",
        ])
        .unwrap();
        assert_eq!(
            agent(&cli).signals.disk.fsync_paths,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert!(load(["nodediag", "check", "--fsync.probes", "0"]).is_err());
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused_not_replaced() {
        use tracing::Level;
        use tracing_subscriber::filter::Targets;
        let level = |f: &Targets, target| f.would_enable(target, &Level::DEBUG);
        let cli = load([
            "nodediag",
            "check",
            "--log-level",
            "warn,nodediag::collect=debug",
        ])
        .unwrap();
        let f = &agent(&cli).log_level;
        assert!(level(f, "nodediag::collect::dns"));
        assert!(!level(f, "nodediag::http"));
        let Err(ConfigError::Cli(e)) = load(["nodediag", "check", "--log-level", "nodediag=loud"])
        else {
            panic!("a filter that does not parse was taken");
        };
        let message = e.to_string();
        assert!(
            message.contains("--log-level") && message.contains("nodediag=loud"),
            "{message}"
        );
    }

    fn config_file(ext: &str, body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    #[test]
    fn yaml_config_fills_keys_and_the_command_line_wins() {
        let f = config_file(
            ".yaml",
            "path:\n  procfs: /host/proc\ninterval: 7s\ncollector:\n  nic:\n    interval: 30s\nno-collector.conntrack: true\nnic.expected-speed: [eth0=25000, 'ens*=10000']\n",
        );
        let cli = load([
            "nodediag",
            "check",
            "--config",
            f.path().to_str().unwrap(),
            "--interval",
            "3s",
        ])
        .unwrap();
        let a = agent(&cli);
        assert_eq!(a.procfs, PathBuf::from("/host/proc"));
        assert_eq!(
            a.interval,
            Duration::from_secs(3),
            "command line beats the file"
        );
        assert_eq!(a.signals.nic.interval, Some(Duration::from_secs(30)));
        assert!(a.signals.conntrack.disabled);
        let speeds = &a.signals.nic.thresholds.expected_speed;
        assert_eq!(speeds.len(), 2);
        assert!(speeds[1].matches("ens3"));
    }

    #[test]
    fn toml_config_is_read_too() {
        let f = config_file(".toml", "window = \"10m\"\n[conntrack]\nhigh-ratio = 0.7\n");
        let cli = load(["nodediag", "check", "--config", f.path().to_str().unwrap()]).unwrap();
        let a = agent(&cli);
        assert_eq!(a.window, Duration::from_secs(600));
        assert_eq!(a.signals.conntrack.thresholds.high_ratio, 0.7);
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_key() {
        let f = config_file(".yaml", "intervall: 5s\n");
        let err = load(["nodediag", "check", "--config", f.path().to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"intervall\""), "{err}");
    }

    #[test]
    fn bad_values_in_the_file_are_reported() {
        let f = config_file(".yaml", "conntrack.full-ratio: 3\n");
        let err = load(["nodediag", "check", "--config", f.path().to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 0 and 1"), "{err}");
    }

    #[test]
    fn a_zero_leak_age_is_allowed_and_netns_dirs_repeat() {
        let cli = Cli::try_parse_from([
            "nodediag",
            "check",
            "--netns.leak-min-age",
            "0s",
            "--path.netns",
            "/run/netns",
            "--path.netns",
            "/var/run/docker/netns",
        ])
        .unwrap();
        let a = agent(&cli);
        assert_eq!(a.signals.netns.thresholds.leak_min_age, Duration::ZERO);
        assert_eq!(a.signals.netns.netns_dirs.len(), 2);
        let err = Cli::try_parse_from(["nodediag", "check", "--netns.leak-min-age", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.g. 0s"), "{err}");
    }

    #[test]
    fn notrack_is_on_unless_turned_off_by_flag_env_or_file() {
        let serve = |args: &[&str]| match load(args).unwrap().command {
            Command::Serve(s) => s.web_notrack,
            Command::Check(_) => unreachable!(),
        };
        assert!(serve(&["nodediag", "serve"]));
        assert!(serve(&["nodediag", "serve", "--web.notrack"]));
        assert!(!serve(&["nodediag", "serve", "--web.notrack=false"]));
        assert!(!serve(&["nodediag", "serve", "--web.notrack", "false"]));
        let f = config_file(".yaml", "web:\n  notrack: false\n");
        assert!(!serve(&[
            "nodediag",
            "serve",
            "--config",
            f.path().to_str().unwrap()
        ]));
        assert!(load(["nodediag", "serve", "--web.notrack=maybe"]).is_err());
    }

    #[test]
    fn unknown_finding_ids_are_rejected() {
        let err = Cli::try_parse_from(["nodediag", "check", "--finding", "nope"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("conntrack_table_full"), "{err}");
    }
}
