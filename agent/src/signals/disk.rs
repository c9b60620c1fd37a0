//! Disks: the etcd-shaped fsync probe, free space and inodes, device latency.

use super::{Schedule, Signal};
use crate::collect::disk::{DiskCollector, DiskConfig, DiskSample};
use crate::collect::{self, Collector};
use crate::diagnose::{disk, FindingDef, RuleSet};
use crate::flags::{parse_bytes, parse_duration};
use crate::http::Route;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub struct Disk;

/// The fsync probe and the directories the disk collector watches.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Disk")]
pub struct DiskArgs {
    /// Sampling interval of the disk collector, and the period over which the fsync
    /// probe spreads its --fsync.probes writes [default: --interval].
    #[arg(id = "collector.disk.interval", long = "collector.disk.interval", env = "NODEDIAG_COLLECTOR_DISK_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the disk collector (fsync probe, space, inodes, device latency).
    #[arg(
        id = "no-collector.disk",
        long = "no-collector.disk",
        env = "NODEDIAG_NO_COLLECTOR_DISK"
    )]
    pub disabled: bool,

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

    #[command(flatten)]
    pub thresholds: disk::Thresholds,
}

fn parse_probe_file_size(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    if n < 64 * 1024 {
        return Err(format!("{s:?}: the probe file must be at least 64KiB"));
    }
    Ok(n)
}

impl Signal for Disk {
    type Sample = DiskSample;
    type Args = DiskArgs;
    const FINDINGS: &'static [&'static FindingDef] = disk::FINDINGS;

    fn schedule(args: &DiskArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(args: &DiskArgs, ctx: &collect::Context) -> impl Collector<Sample = DiskSample> {
        DiskCollector::new(
            ctx.root.clone(),
            DiskConfig {
                probe_dirs: args.fsync_paths.clone(),
                space_dirs: args.disk_paths.clone(),
                interval: args.interval.unwrap_or(ctx.interval),
                probes_per_interval: args.fsync_probes,
                file_size: args.fsync_file_size,
                min_free: args.fsync_min_free,
                stall_timeout: args.fsync_stall_timeout,
                window: ctx.window,
            },
        )
        .sharing_mounts(ctx.mounts.clone())
    }

    fn rules(args: &DiskArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| disk::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &DiskSample) -> String {
        crate::report::disk::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::disk::encode(snap, e)
    }

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::disk::section(out, snap, now)
    }

    fn routes() -> Vec<Route> {
        crate::http::disk::routes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_file_has_a_floor() {
        assert!(parse_probe_file_size("4k").unwrap_err().contains("64KiB"));
        assert_eq!(parse_probe_file_size("16MiB").unwrap(), 16 << 20);
    }
}
