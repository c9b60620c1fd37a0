//! fsync_slow, disk_space_low, inodes_low, filesystem_readonly: the findings and their
//! thresholds here, the rules in `rules`, and the figures over the window (fsync
//! percentiles, device latency) that the rules, the API and the report share in
//! `figures`.

mod figures;
mod rules;

use super::FindingDef;
use crate::flags::{parse_duration, parse_ratio};
use std::time::Duration;

pub use figures::{percentile, view, DeviceFigures, DirView, DiskView, FsyncFigures};
pub use rules::rules;

pub const FSYNC_SLOW: FindingDef = FindingDef {
    id: "fsync_slow",
    remedy: "Move etcd / the kubelet directory to a dedicated SSD; look for a noisy neighbour on the device (iostat -x, the device figures in the evidence) or I/O throttling when the device itself is fast; a stall means the disk or NFS server stopped answering: check dmesg for I/O errors.",
};
pub const DISK_SPACE_LOW: FindingDef = FindingDef {
    id: "disk_space_low",
    remedy: "Free space before the kubelet evicts pods: image garbage collection (crictl rmi --prune), container log cleanup (du -sh /var/log/pods/*), leaked IPAM and netns files.",
};
pub const INODES_LOW: FindingDef = FindingDef {
    id: "inodes_low",
    remedy:
        "Free inodes: remove small files (container logs, leaked IPAM reservations, unused images).",
};
pub const FILESYSTEM_READONLY: FindingDef = FindingDef {
    id: "filesystem_readonly",
    remedy: "The filesystem went read-only (usually after I/O errors): cordon, drain, fsck and check the disk.",
};
pub const FINDINGS: &[&FindingDef] = &[
    &FSYNC_SLOW,
    &DISK_SPACE_LOW,
    &INODES_LOW,
    &FILESYSTEM_READONLY,
];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "Disk")]
pub struct Thresholds {
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
    pub space_warn_ratio: f64,

    /// disk_space_low (critical) below this fraction of space available.
    #[arg(long = "disk.space-critical-ratio", env = "NODEDIAG_DISK_SPACE_CRITICAL_RATIO", default_value = "0.05", value_parser = parse_ratio, value_name = "RATIO")]
    pub space_critical_ratio: f64,

    /// inodes_low (warning) below this fraction of inodes free.
    #[arg(long = "disk.inodes-warn-ratio", env = "NODEDIAG_DISK_INODES_WARN_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub inodes_warn_ratio: f64,

    /// inodes_low (critical) below this fraction of inodes free.
    #[arg(long = "disk.inodes-critical-ratio", env = "NODEDIAG_DISK_INODES_CRITICAL_RATIO", default_value = "0.05", value_parser = parse_ratio, value_name = "RATIO")]
    pub inodes_critical_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}
