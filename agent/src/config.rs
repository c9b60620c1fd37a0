//! Every knob: CLI flags, their environment variables, and an optional config file
//! (YAML or TOML) that takes the same keys as the long flags.
//!
//! Precedence: command line > environment > config file > built-in default.

use crate::diagnose::catalog;
use crate::host::HostRoot;
use clap::parser::ValueSource;
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

    /// Where the host's /sys/fs/cgroup is mounted [default: each cgroup mount point of
    /// the host's mount table under --path.rootfs, else under --path.sysfs].
    #[arg(long = "path.cgroup", env = "NODEDIAG_PATH_CGROUP", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// The host's kernel log device, followed by the kmsg collector
    /// [default: <path.rootfs>/dev/kmsg].
    #[arg(long = "path.kmsg", env = "NODEDIAG_PATH_KMSG", value_name = "FILE")]
    pub kmsg: Option<PathBuf>,

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

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long = "log-level",
        env = "NODEDIAG_LOG_LEVEL",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,

    #[command(flatten)]
    pub collectors: CollectorArgs,

    #[command(flatten)]
    pub disk: DiskArgs,

    #[command(flatten)]
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Collectors")]
pub struct CollectorArgs {
    /// Sampling interval of the conntrack collector [default: --interval].
    #[arg(long = "collector.conntrack.interval", env = "NODEDIAG_COLLECTOR_CONNTRACK_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub conntrack_interval: Option<Duration>,

    /// Disable the conntrack collector.
    #[arg(
        long = "no-collector.conntrack",
        env = "NODEDIAG_NO_COLLECTOR_CONNTRACK"
    )]
    pub no_conntrack: bool,

    /// Sampling interval of the NIC collector [default: --interval].
    #[arg(long = "collector.nic.interval", env = "NODEDIAG_COLLECTOR_NIC_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub nic_interval: Option<Duration>,

    /// Disable the NIC collector.
    #[arg(long = "no-collector.nic", env = "NODEDIAG_NO_COLLECTOR_NIC")]
    pub no_nic: bool,

    /// Sampling interval of the cgroup (CPU throttling) collector [default: --interval].
    #[arg(long = "collector.cgroup.interval", env = "NODEDIAG_COLLECTOR_CGROUP_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub cgroup_interval: Option<Duration>,

    /// Disable the cgroup (CPU throttling) collector.
    #[arg(long = "no-collector.cgroup", env = "NODEDIAG_NO_COLLECTOR_CGROUP")]
    pub no_cgroup: bool,
    /// Sampling interval of the pressure collector [default: --interval].
    #[arg(long = "collector.pressure.interval", env = "NODEDIAG_COLLECTOR_PRESSURE_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub pressure_interval: Option<Duration>,

    /// Disable the pressure collector (memory, PSI, PIDs, files, inotify, neighbours,
    /// forwarding, OOM kills).
    #[arg(long = "no-collector.pressure", env = "NODEDIAG_NO_COLLECTOR_PRESSURE")]
    pub no_pressure: bool,

    /// How often the kmsg collector publishes what the kernel log follower matched
    /// [default: --interval].
    #[arg(long = "collector.kmsg.interval", env = "NODEDIAG_COLLECTOR_KMSG_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub kmsg_interval: Option<Duration>,

    /// Disable the kernel log follower.
    #[arg(long = "no-collector.kmsg", env = "NODEDIAG_NO_COLLECTOR_KMSG")]
    pub no_kmsg: bool,
    /// Sampling interval of the netns collector (network namespaces, veths, IPAM)
    /// [default: --interval].
    #[arg(long = "collector.netns.interval", env = "NODEDIAG_COLLECTOR_NETNS_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub netns_interval: Option<Duration>,

    /// Disable the netns collector.
    #[arg(long = "no-collector.netns", env = "NODEDIAG_NO_COLLECTOR_NETNS")]
    pub no_netns: bool,

    /// A directory where runtimes pin network namespaces (repeatable, used as given,
    /// not under --path.rootfs). Replaces the defaults: /run/netns, /var/run/netns and
    /// /var/run/docker/netns under --path.rootfs.
    #[arg(
        long = "path.netns",
        env = "NODEDIAG_PATH_NETNS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub netns_dirs: Vec<PathBuf>,

    /// A directory of CNI network configurations (repeatable, used as given).
    /// Replaces the default /etc/cni/net.d under --path.rootfs.
    #[arg(
        long = "path.cni-conf",
        env = "NODEDIAG_PATH_CNI_CONF",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub cni_conf_dirs: Vec<PathBuf>,
    /// Sampling interval of the disk collector, and the period over which the fsync
    /// probe spreads its --fsync.probes writes [default: --interval].
    #[arg(long = "collector.disk.interval", env = "NODEDIAG_COLLECTOR_DISK_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub disk_interval: Option<Duration>,

    /// Disable the disk collector (fsync probe, space, inodes, device latency).
    #[arg(long = "no-collector.disk", env = "NODEDIAG_NO_COLLECTOR_DISK")]
    pub no_disk: bool,
}

/// The fsync probe and the directories the disk collector watches.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Disk")]
pub struct DiskArgs {
    /// Directory to probe for fsync latency (repeatable; as nodediag sees it, e.g.
    /// /host/var/lib/etcd) [default: /var/lib/etcd, /var/lib/kubelet,
    /// /var/lib/containerd and /var/lib/docker under --path.rootfs, those that exist].
    #[arg(
        long = "fsync.path",
        env = "NODEDIAG_FSYNC_PATH",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub fsync_paths: Vec<PathBuf>,

    /// Probes (2300-byte write + fdatasync) per directory per collector interval,
    /// spread evenly over it. 10 per 15 s adds 0.67 syncs/s per directory: on ext4
    /// about 2 writes, 1.3 cache flushes and 4 KiB a second at the device.
    #[arg(long = "fsync.probes", env = "NODEDIAG_FSYNC_PROBES", default_value = "10", value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
    pub fsync_probes: u32,

    /// Size of each probe file (preallocated; written round and round, never larger).
    #[arg(long = "fsync.file-size", env = "NODEDIAG_FSYNC_FILE_SIZE", default_value = "16MiB", value_parser = parse_probe_file_size, value_name = "SIZE")]
    pub fsync_file_size: u64,

    /// The probe removes its file and pauses while less than this is available on
    /// the filesystem (plus the file's size when it must create it).
    #[arg(long = "fsync.min-free", env = "NODEDIAG_FSYNC_MIN_FREE", default_value = "1GiB", value_parser = parse_bytes, value_name = "SIZE")]
    pub fsync_min_free: u64,

    /// A probe or statvfs that has not returned after this long is a stall
    /// (fsync_slow, critical).
    #[arg(long = "fsync.stall-timeout", env = "NODEDIAG_FSYNC_STALL_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub fsync_stall_timeout: Duration,

    /// Directory watched for free space and inodes only (repeatable) [default:
    /// /var/lib/cni, /var/log and the container runtime roots under --path.rootfs].
    #[arg(
        long = "disk.path",
        env = "NODEDIAG_DISK_PATH",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub disk_paths: Vec<PathBuf>,
}

/// Finding thresholds; defaults from the catalog in the README.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Finding thresholds")]
pub struct Thresholds {
    /// conntrack_table_full (critical) at this fraction of nf_conntrack_max.
    #[arg(long = "conntrack.full-ratio", env = "NODEDIAG_CONNTRACK_FULL_RATIO", default_value = "0.95", value_parser = parse_ratio, value_name = "RATIO")]
    pub conntrack_full_ratio: f64,

    /// conntrack_table_high (warning) at this fraction of nf_conntrack_max.
    #[arg(long = "conntrack.high-ratio", env = "NODEDIAG_CONNTRACK_HIGH_RATIO", default_value = "0.80", value_parser = parse_ratio, value_name = "RATIO")]
    pub conntrack_high_ratio: f64,

    /// nic_errors when errors + drops exceed this fraction of packets over the window.
    #[arg(long = "nic.errors-ratio", env = "NODEDIAG_NIC_ERRORS_RATIO", default_value = "0.01", value_parser = parse_ratio, value_name = "RATIO")]
    pub nic_errors_ratio: f64,

    /// Expected speed of a physical NIC, NAME=MBPS (NAME may end in *), repeatable:
    /// nic_speed_degraded when the negotiated speed is lower.
    #[arg(long = "nic.expected-speed", env = "NODEDIAG_NIC_EXPECTED_SPEED", value_delimiter = ',', value_parser = parse_expected_speed, value_name = "NAME=MBPS")]
    pub nic_expected_speed: Vec<ExpectedSpeed>,

    /// cpu_throttled when a container was throttled in at least this fraction of its
    /// CFS periods over the window (kubernetes-mixin CPUThrottlingHigh: 0.25).
    #[arg(long = "cgroup.throttled-ratio", env = "NODEDIAG_CGROUP_THROTTLED_RATIO", default_value = "0.25", value_parser = parse_ratio, value_name = "RATIO")]
    pub cgroup_throttled_ratio: f64,

    /// cpu_throttled_kernel_bug when a container so throttled used less than this
    /// fraction of its quota, on a kernel without the CFS bandwidth fix.
    #[arg(long = "cgroup.kernel-bug-usage-ratio", env = "NODEDIAG_CGROUP_KERNEL_BUG_USAGE_RATIO", default_value = "0.5", value_parser = parse_ratio, value_name = "RATIO")]
    pub cgroup_kernel_bug_usage_ratio: f64,
    /// memory_pressure when MemAvailable is below this fraction of MemTotal.
    #[arg(long = "memory.available-ratio", env = "NODEDIAG_MEMORY_AVAILABLE_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub memory_available_ratio: f64,

    /// memory_pressure when /proc/pressure/memory `full avg60` exceeds this fraction.
    #[arg(long = "memory.psi-full-ratio", env = "NODEDIAG_MEMORY_PSI_FULL_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub memory_psi_full_ratio: f64,

    /// cpu_pressure when /proc/pressure/cpu `some avg60` exceeds this fraction.
    #[arg(long = "cpu.psi-some-ratio", env = "NODEDIAG_CPU_PSI_SOME_RATIO", default_value = "0.50", value_parser = parse_ratio, value_name = "RATIO")]
    pub cpu_psi_some_ratio: f64,

    /// pid_exhaustion (warning) above this fraction of kernel.pid_max or threads-max.
    #[arg(long = "pids.warning-ratio", env = "NODEDIAG_PIDS_WARNING_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub pids_warning_ratio: f64,

    /// pid_exhaustion (critical) above this fraction.
    #[arg(long = "pids.critical-ratio", env = "NODEDIAG_PIDS_CRITICAL_RATIO", default_value = "0.95", value_parser = parse_ratio, value_name = "RATIO")]
    pub pids_critical_ratio: f64,

    /// fd_exhaustion (warning) above this fraction of fs.file-max.
    #[arg(long = "fd.warning-ratio", env = "NODEDIAG_FD_WARNING_RATIO", default_value = "0.80", value_parser = parse_ratio, value_name = "RATIO")]
    pub fd_warning_ratio: f64,

    /// fd_exhaustion (critical) above this fraction of fs.file-max.
    #[arg(long = "fd.critical-ratio", env = "NODEDIAG_FD_CRITICAL_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub fd_critical_ratio: f64,

    /// inotify_watches_exhausted above this fraction of fs.inotify.max_user_instances
    /// (or max_user_watches) for a user.
    #[arg(long = "inotify.ratio", env = "NODEDIAG_INOTIFY_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub inotify_ratio: f64,

    /// neighbor_table_overflow (warning) above this fraction of gc_thresh3.
    #[arg(long = "neighbor.ratio", env = "NODEDIAG_NEIGHBOR_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub neighbor_ratio: f64,

    /// netdev_unregister_stuck after this many kernel log lines within
    /// --kmsg.unregister-window.
    #[arg(long = "kmsg.unregister-count", env = "NODEDIAG_KMSG_UNREGISTER_COUNT", default_value = "3", value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub kmsg_unregister_count: u64,

    /// Window for --kmsg.unregister-count.
    #[arg(long = "kmsg.unregister-window", env = "NODEDIAG_KMSG_UNREGISTER_WINDOW", default_value = "20m", value_parser = parse_duration, value_name = "DURATION")]
    pub kmsg_unregister_window: Duration,
    /// netns_leaked when a pinned namespace has had no process for at least this long
    /// (its pin is this old); veth_orphaned uses it too. 0s flags at once.
    #[arg(long = "netns.leak-min-age", env = "NODEDIAG_NETNS_LEAK_MIN_AGE", default_value = "5m", value_parser = parse_duration_or_zero, value_name = "DURATION")]
    pub netns_leak_min_age: Duration,

    /// cni_ipam_exhausted (warning) at this fraction of a host-local range in use.
    #[arg(long = "cni.ipam-warning-ratio", env = "NODEDIAG_CNI_IPAM_WARNING_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub cni_ipam_warning_ratio: f64,

    /// cni_ipam_exhausted (critical) at this fraction of a host-local range in use.
    #[arg(long = "cni.ipam-critical-ratio", env = "NODEDIAG_CNI_IPAM_CRITICAL_RATIO", default_value = "1.0", value_parser = parse_ratio, value_name = "RATIO")]
    pub cni_ipam_critical_ratio: f64,
    /// fsync_slow (warning) when the probe's p99 over the window exceeds this
    /// (etcd's guidance for WAL fsync).
    #[arg(long = "fsync.warn", env = "NODEDIAG_FSYNC_WARN", default_value = "10ms", value_parser = parse_duration, value_name = "DURATION")]
    pub fsync_warn: Duration,

    /// fsync_slow (critical) when the probe's p99 over the window exceeds this.
    #[arg(long = "fsync.critical", env = "NODEDIAG_FSYNC_CRITICAL", default_value = "100ms", value_parser = parse_duration, value_name = "DURATION")]
    pub fsync_critical: Duration,

    /// disk_space_low (warning) below this fraction of space available (the
    /// kubelet's default nodefs.available eviction threshold).
    #[arg(long = "disk.space-warn-ratio", env = "NODEDIAG_DISK_SPACE_WARN_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub disk_space_warn_ratio: f64,

    /// disk_space_low (critical) below this fraction of space available.
    #[arg(long = "disk.space-critical-ratio", env = "NODEDIAG_DISK_SPACE_CRITICAL_RATIO", default_value = "0.05", value_parser = parse_ratio, value_name = "RATIO")]
    pub disk_space_critical_ratio: f64,

    /// inodes_low (warning) below this fraction of inodes free.
    #[arg(long = "disk.inodes-warn-ratio", env = "NODEDIAG_DISK_INODES_WARN_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub disk_inodes_warn_ratio: f64,

    /// inodes_low (critical) below this fraction of inodes free.
    #[arg(long = "disk.inodes-critical-ratio", env = "NODEDIAG_DISK_INODES_CRITICAL_RATIO", default_value = "0.05", value_parser = parse_ratio, value_name = "RATIO")]
    pub disk_inodes_critical_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        AgentArgs::defaults().thresholds
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSpeed {
    pub pattern: String,
    pub mbps: u64,
}

impl ExpectedSpeed {
    pub fn matches(&self, name: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.pattern,
        }
    }
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

    pub fn kmsg_path(&self) -> PathBuf {
        self.kmsg
            .clone()
            .unwrap_or_else(|| self.host_root().host_path("/dev/kmsg"))
    }

    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(hostname)
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 15s, 5m, 500ms)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A duration where zero means "at once" (a minimum age, not an interval).
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 0s, 30s, 5m)"))
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a fraction between 0 and 1 (e.g. 0.8)"));
    }
    Ok(v)
}

/// Bytes with an optional unit: 512, 64k, 16MiB, 1G (binary), 500MB (decimal).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 16MiB, 512k or 1G"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

fn parse_probe_file_size(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    if n < 64 * 1024 {
        return Err(format!("{s:?}: the probe file must be at least 64KiB"));
    }
    Ok(n)
}

fn parse_expected_speed(s: &str) -> Result<ExpectedSpeed, String> {
    let (pattern, mbps) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=MBPS, e.g. eth0=25000"))?;
    let mbps = mbps
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: speed in Mb/s: {e}"))?;
    Ok(ExpectedSpeed {
        pattern: pattern.trim().to_string(),
        mbps,
    })
}

fn parse_finding_id(s: &str) -> Result<String, String> {
    if catalog::find(s).is_some() {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown finding id {s:?}; known ids: {}",
            catalog::CATALOG
                .iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
                .join(", ")
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
    let file_err = |message: String| ConfigError::File {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(e.to_string()))?;
    let entries = parse_config_file(&path, &text).map_err(&file_err)?;

    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(&args)?;
    let sub_matches = matches
        .subcommand_matches(sub)
        .expect("subcommand parsed above");
    let sub_cmd = command.find_subcommand(sub).expect("subcommand exists");

    let mut extra: Vec<OsString> = Vec::new();
    for (key, values) in entries {
        let arg = sub_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                file_err(format!(
                    "unknown key {key:?} (keys are the long flags of `nodediag {sub}`, see --help)"
                ))
            })?;
        let from_cli_or_env = matches!(
            sub_matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if from_cli_or_env {
            continue;
        }
        let is_flag = !arg.get_action().takes_values();
        for value in values {
            match (is_flag, value.as_str()) {
                (true, "true") => extra.push(format!("--{key}").into()),
                (true, "false") => {}
                (true, other) => {
                    return Err(file_err(format!(
                        "key {key:?} is a switch: expected true or false, got {other:?}"
                    )))
                }
                (false, v) => extra.push(format!("--{key}={v}").into()),
            }
        }
    }
    let mut merged: Vec<OsString> = vec![args[0].clone(), sub.into()];
    merged.extend(extra);
    let sub_pos = args
        .iter()
        .position(|a| a == sub)
        .expect("subcommand present");
    merged.extend(args[sub_pos + 1..].iter().cloned());
    let matches = Cli::command().try_get_matches_from(merged)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// Flattens a YAML or TOML document into (dotted key, values) pairs.
fn parse_config_file(
    path: &std::path::Path,
    text: &str,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let value: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value = toml::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(v).map_err(|e| e.to_string())?
    } else {
        let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(v).map_err(|e| e.to_string())?
    };
    let mut out = Vec::new();
    match value {
        serde_json::Value::Object(map) => flatten("", &map, &mut out)?,
        serde_json::Value::Null => {}
        other => return Err(format!("expected a mapping of keys, got {other}")),
    }
    Ok(out)
}

fn flatten(
    prefix: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, Vec<String>)>,
) -> Result<(), String> {
    use serde_json::Value;
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let scalar = |v: &Value| -> Result<String, String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("key {key:?}: unsupported value {other}")),
            }
        };
        match v {
            Value::Object(inner) => flatten(&key, inner, out)?,
            Value::Array(items) => {
                let values = items.iter().map(scalar).collect::<Result<_, _>>()?;
                out.push((key, values));
            }
            Value::Null => {}
            other => out.push((key.clone(), vec![scalar(other)?])),
        }
    }
    Ok(())
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
        assert_eq!(a.thresholds.conntrack_full_ratio, 0.95);
        assert_eq!(a.thresholds.conntrack_high_ratio, 0.80);
        assert_eq!(a.thresholds.cgroup_throttled_ratio, 0.25);
        assert_eq!(a.thresholds.cgroup_kernel_bug_usage_ratio, 0.5);
        assert_eq!(a.procfs, PathBuf::from("/proc"));
        let t = &a.thresholds;
        assert_eq!(t.memory_available_ratio, 0.10);
        assert_eq!(t.memory_psi_full_ratio, 0.10);
        assert_eq!(t.cpu_psi_some_ratio, 0.50);
        assert_eq!((t.pids_warning_ratio, t.pids_critical_ratio), (0.90, 0.95));
        assert_eq!((t.fd_warning_ratio, t.fd_critical_ratio), (0.80, 0.90));
        assert_eq!((t.inotify_ratio, t.neighbor_ratio), (0.90, 0.90));
        assert_eq!(t.kmsg_unregister_count, 3);
        assert_eq!(t.kmsg_unregister_window, Duration::from_secs(1200));
        assert_eq!(a.kmsg_path(), PathBuf::from("/dev/kmsg"));
        assert_eq!(a.thresholds.netns_leak_min_age, Duration::from_secs(300));
        assert_eq!(a.thresholds.cni_ipam_warning_ratio, 0.90);
        assert_eq!(a.thresholds.cni_ipam_critical_ratio, 1.0);
        assert!(
            a.collectors.netns_dirs.is_empty(),
            "defaults come from the rootfs"
        );
        assert_eq!(a.thresholds.fsync_warn, Duration::from_millis(10));
        assert_eq!(a.thresholds.fsync_critical, Duration::from_millis(100));
        assert_eq!(a.thresholds.disk_space_warn_ratio, 0.10);
        assert_eq!(a.thresholds.disk_inodes_critical_ratio, 0.05);
        assert_eq!(a.disk.fsync_file_size, 16 << 20);
        assert_eq!(a.disk.fsync_min_free, 1 << 30);
    }

    #[test]
    fn kmsg_follows_the_rootfs_unless_set() {
        let cli = load(["nodediag", "check", "--path.rootfs", "/host"]).unwrap();
        assert_eq!(agent(&cli).kmsg_path(), PathBuf::from("/host/dev/kmsg"));
        let cli = load([
            "nodediag",
            "check",
            "--path.rootfs",
            "/host",
            "--path.kmsg",
            "/k",
        ])
        .unwrap();
        assert_eq!(agent(&cli).kmsg_path(), PathBuf::from("/k"));
        let err = Cli::try_parse_from(["nodediag", "check", "--kmsg.unregister-count", "0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kmsg.unregister-count"), "{err}");
    }

    #[test]
    fn sizes_parse_with_units_and_bad_ones_say_why() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("64k").unwrap(), 65536);
        assert_eq!(parse_bytes("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_bytes("500MB").unwrap(), 500_000_000);
        assert!(parse_bytes("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_probe_file_size("4k").unwrap_err().contains("64KiB"));
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
            agent(&cli).disk.fsync_paths,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert!(load(["nodediag", "check", "--fsync.probes", "0"]).is_err());
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
        assert_eq!(a.collectors.nic_interval, Some(Duration::from_secs(30)));
        assert!(a.collectors.no_conntrack);
        assert_eq!(a.thresholds.nic_expected_speed.len(), 2);
        assert!(a.thresholds.nic_expected_speed[1].matches("ens3"));
    }

    #[test]
    fn toml_config_is_read_too() {
        let f = config_file(".toml", "window = \"10m\"\n[conntrack]\nhigh-ratio = 0.7\n");
        let cli = load(["nodediag", "check", "--config", f.path().to_str().unwrap()]).unwrap();
        let a = agent(&cli);
        assert_eq!(a.window, Duration::from_secs(600));
        assert_eq!(a.thresholds.conntrack_high_ratio, 0.7);
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
        assert_eq!(a.thresholds.netns_leak_min_age, Duration::ZERO);
        assert_eq!(a.collectors.netns_dirs.len(), 2);
        let err = Cli::try_parse_from(["nodediag", "check", "--netns.leak-min-age", "soon"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.g. 0s"), "{err}");
    }

    #[test]
    fn unknown_finding_ids_are_rejected() {
        let err = Cli::try_parse_from(["nodediag", "check", "--finding", "nope"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("conntrack_table_full"), "{err}");
    }
}
