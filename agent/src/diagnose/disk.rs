//! fsync_slow, disk_space_low, inodes_low, filesystem_readonly; and the figures over
//! the window (fsync percentiles, device latency) that the API and report show too.

use super::window::{increase, span, within};
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::disk::{DiskDir, DiskSample};
use crate::finding::worst_level;
use crate::flags::{parse_duration, parse_ratio};
use crate::kernel::diskstats::DiskStats;
use crate::store::Snapshot;
use crate::text::round;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

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

/// Nearest-rank percentile (the smallest value with at least p of the values at or
/// below it) of sorted values; None when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The probe's latencies over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FsyncFigures {
    pub probes: usize,
    pub p50_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

impl FsyncFigures {
    pub fn from_latencies(mut values: Vec<f64>) -> Option<Self> {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        Some(Self {
            probes: values.len(),
            p50_seconds: percentile(&values, 0.50)?,
            p99_seconds: percentile(&values, 0.99)?,
            max_seconds: *values.last()?,
        })
    }
}

/// A disk's `/proc/diskstats` counters turned into rates over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceFigures {
    pub name: String,
    pub window_seconds: f64,
    pub read_iops: f64,
    pub write_iops: f64,
    /// Time per completed write, queueing included (`iostat`'s w_await).
    pub avg_write_latency_seconds: Option<f64>,
    /// Time per completed flush (kernel 5.5+).
    pub avg_flush_latency_seconds: Option<f64>,
    pub flushes_per_second: Option<f64>,
    /// Fraction of the window with I/O in flight (`iostat`'s %util / 100).
    pub utilisation: f64,
}

impl DeviceFigures {
    /// None with fewer than two samples or no time between them.
    pub fn from_series(name: &str, series: &[(SystemTime, DiskStats)]) -> Option<Self> {
        let (first, last) = (series.first()?.0, series.last()?.0);
        let secs = last.duration_since(first).ok()?.as_secs_f64();
        if series.len() < 2 || secs <= 0.0 {
            return None;
        }
        let rise = |f: fn(&DiskStats) -> u64| increase(series.iter().map(|(_, s)| f(s)));
        let opt_rise = |f: fn(&DiskStats) -> Option<u64>| -> Option<u64> {
            let v: Vec<u64> = series.iter().map(|(_, s)| f(s)).collect::<Option<_>>()?;
            Some(increase(v))
        };
        let per = |ms: u64, n: u64| (n > 0).then(|| ms as f64 / 1000.0 / n as f64);
        let writes = rise(|s| s.writes_completed);
        let flushes = opt_rise(|s| s.flushes_completed);
        Some(Self {
            name: name.to_string(),
            window_seconds: secs,
            read_iops: rise(|s| s.reads_completed) as f64 / secs,
            write_iops: writes as f64 / secs,
            avg_write_latency_seconds: per(rise(|s| s.write_time_ms), writes),
            avg_flush_latency_seconds: match (opt_rise(|s| s.flush_time_ms), flushes) {
                (Some(ms), Some(n)) => per(ms, n),
                _ => None,
            },
            flushes_per_second: flushes.map(|n| n as f64 / secs),
            utilisation: (rise(|s| s.io_time_ms) as f64 / 1000.0 / secs).min(1.0),
        })
    }
}

/// One directory as of the newest sample, with its figures over the window.
#[derive(Debug, Clone, Serialize)]
pub struct DirView<'a> {
    #[serde(flatten)]
    pub dir: &'a DiskDir,
    pub fsync: Option<FsyncFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskView<'a> {
    #[serde(serialize_with = "crate::time::serialize")]
    pub sampled_at: SystemTime,
    pub window_seconds: f64,
    pub dirs: Vec<DirView<'a>>,
    pub devices: Vec<DeviceFigures>,
    pub unavailable: &'a [crate::sample::Unavailable],
}

impl DiskView<'_> {
    pub fn device(&self, name: Option<&str>) -> Option<&DeviceFigures> {
        let name = name?;
        self.devices.iter().find(|d| d.name == name)
    }
}

/// The disk figures over `window` (the sample's own window when None).
pub fn view(snapshot: &Snapshot, window: Option<Duration>) -> Option<DiskView<'_>> {
    let history = snapshot.history::<DiskSample>();
    let &(at, latest) = history.last()?;
    let window = window.unwrap_or(latest.window);
    let recent = within(&history, window);
    let dirs = latest
        .dirs
        .iter()
        .map(|dir| {
            let latencies: Vec<f64> = recent
                .iter()
                .filter_map(|(_, s)| s.dirs.iter().find(|d| d.path == dir.path))
                .filter_map(|d| d.probe.as_ref())
                .flat_map(|p| p.latencies.iter().copied())
                .collect();
            DirView {
                dir,
                fsync: FsyncFigures::from_latencies(latencies),
            }
        })
        .collect();
    let devices = latest
        .devices
        .iter()
        .filter_map(|dev| {
            let series: Vec<(SystemTime, DiskStats)> = recent
                .iter()
                .filter_map(|(t, s)| {
                    let d = s.devices.iter().find(|d| d.name == dev.name)?;
                    Some((*t, d.stats))
                })
                .collect();
            DeviceFigures::from_series(&dev.name, &series)
        })
        .collect();
    Some(DiskView {
        sampled_at: at,
        window_seconds: span(recent).as_secs_f64(),
        dirs,
        devices,
        unavailable: &latest.unavailable,
    })
}

pub fn rules(snapshot: &Snapshot, t: &Thresholds, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let Some(v) = view(snapshot, Some(ctx.window)) else {
        return;
    };
    let at = v.sampled_at;
    for d in &v.dirs {
        out.extend(fsync_slow(d, &v, t, at));
    }
    // Space and read-only findings are about a filesystem: once per filesystem,
    // naming every watched directory on it.
    let mut filesystems: BTreeMap<String, Vec<&DiskDir>> = BTreeMap::new();
    for d in &v.dirs {
        filesystems
            .entry(d.dir.filesystem_key())
            .or_default()
            .push(d.dir);
    }
    for dirs in filesystems.values() {
        let fs = Filesystem::of(dirs);
        out.extend(filesystem_readonly(&fs, at));
        out.extend(space_low(&fs, t, at));
        out.extend(inodes_low(&fs, t, at));
    }
}

/// The directories watched on one filesystem, as findings about it name them.
struct Filesystem<'a> {
    dirs: &'a [&'a DiskDir],
    subject: String,
    paths: String,
}

impl<'a> Filesystem<'a> {
    fn of(dirs: &'a [&'a DiskDir]) -> Self {
        let first = dirs[0];
        Self {
            dirs,
            subject: first
                .mount_point
                .clone()
                .unwrap_or_else(|| first.path.clone()),
            paths: dirs
                .iter()
                .map(|d| d.path.as_str())
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    fn describe(&self, f: Finding) -> Finding {
        let first = self.dirs[0];
        f.with("paths", self.paths.clone())
            .with("mount_point", first.mount_point.clone())
            .with("fstype", first.fstype.clone())
            .with("device", first.device.clone())
    }
}

fn filesystem_readonly(fs: &Filesystem, at: SystemTime) -> Option<Finding> {
    let ro = fs.dirs.iter().find_map(|d| d.read_only.as_ref())?;
    let subject = &fs.subject;
    Some(
        fs.describe(
            Finding::new(
                &FILESYSTEM_READONLY,
                Severity::Critical,
                subject.clone(),
                format!(
                    "{subject} is read-only ({}): {} cannot be written",
                    ro.source, fs.paths
                ),
                at,
            )
            .with("source", ro.source)
            .with("detail", ro.detail.clone()),
        ),
    )
}

fn space_low(fs: &Filesystem, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let usage = fs.dirs.iter().find_map(|d| d.space)?;
    let levels = [
        (t.space_critical_ratio, Severity::Critical),
        (t.space_warn_ratio, Severity::Warning),
    ];
    let f = free_below(
        fs,
        &DISK_SPACE_LOW,
        "space",
        usage.avail_ratio()?,
        &levels,
        at,
    )?;
    Some(
        f.with("avail_bytes", usage.avail_bytes)
            .with("size_bytes", usage.size_bytes),
    )
}

fn inodes_low(fs: &Filesystem, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let usage = fs.dirs.iter().find_map(|d| d.space)?;
    let levels = [
        (t.inodes_critical_ratio, Severity::Critical),
        (t.inodes_warn_ratio, Severity::Warning),
    ];
    let f = free_below(
        fs,
        &INODES_LOW,
        "inodes",
        usage.inodes_free_ratio()?,
        &levels,
        at,
    )?;
    Some(
        f.with("inodes_free", usage.inodes_free)
            .with("inodes", usage.inodes),
    )
}

fn free_below(
    fs: &Filesystem,
    def: &'static FindingDef,
    what: &str,
    ratio: f64,
    levels: &[(f64, Severity)],
    at: SystemTime,
) -> Option<Finding> {
    let (severity, threshold) = worst_level(levels, |l| ratio < l)?;
    let subject = &fs.subject;
    Some(
        fs.describe(
            Finding::new(
                def,
                severity,
                subject.clone(),
                format!(
                    "{subject}: {:.1}% of {what} free (below {:.0}%)",
                    ratio * 100.0,
                    threshold * 100.0
                ),
                at,
            )
            .with("free_ratio", round(ratio, 4))
            .with("threshold_ratio", threshold),
        ),
    )
}

fn fsync_slow(d: &DirView, v: &DiskView, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let probe = d.dir.probe.as_ref()?;
    let path = &d.dir.path;
    let device = d.dir.device.clone();
    let dev = v.device(d.dir.disk.as_deref());
    let mut f = if probe.stalled {
        let (op, secs) = probe
            .in_flight
            .as_ref()
            .map(|i| (i.operation, i.seconds))
            .unwrap_or(("?", 0.0));
        Finding::new(
            &FSYNC_SLOW,
            Severity::Critical,
            path.clone(),
            format!(
                "{path}: {op} has not returned for {secs:.0}s: the disk or filesystem is stalled"
            ),
            at,
        )
        .with("stalled", true)
        .with("stalled_operation", op)
        .with("stalled_seconds", round(secs, 1))
    } else {
        let fig = d.fsync?;
        let p99 = fig.p99_seconds;
        let levels = [
            (t.fsync_critical.as_secs_f64(), Severity::Critical),
            (t.fsync_warn.as_secs_f64(), Severity::Warning),
        ];
        let (severity, threshold) = worst_level(&levels, |l| p99 > l)?;
        Finding::new(
            &FSYNC_SLOW,
            severity,
            path.clone(),
            format!(
                "{path}{}: fsync p99 {:.1} ms over {} probes (over {:.0} ms); p50 {:.1} ms, max {:.1} ms",
                device.as_deref().map(|d| format!(" on {d}")).unwrap_or_default(),
                fig.p99_seconds * 1e3,
                fig.probes,
                threshold * 1e3,
                fig.p50_seconds * 1e3,
                fig.max_seconds * 1e3,
            ),
            at,
        )
        .with("stalled", false)
        .with("threshold_seconds", threshold)
    };
    if let Some(fig) = d.fsync {
        f = f
            .with("p50_seconds", round(fig.p50_seconds, 6))
            .with("p99_seconds", round(fig.p99_seconds, 6))
            .with("max_seconds", round(fig.max_seconds, 6))
            .with("probes", fig.probes)
            .with("window_seconds", round(v.window_seconds, 1));
    }
    if let (Some(dev), Some(fig)) = (dev, d.fsync) {
        // The device's own average says where the time goes: a fast device under a
        // slow sync means the wait is above it (cgroup I/O throttling, the journal).
        if let Some(w) = dev
            .avg_write_latency_seconds
            .filter(|w| *w * 10.0 < fig.p50_seconds)
        {
            f.summary.push_str(&format!(
                "; the device itself completes writes in {:.2} ms on average: the delay is above it (I/O throttling, the filesystem journal)",
                w * 1e3
            ));
        }
    }
    if let Some(dev) = dev {
        f = f
            .with(
                "device_avg_write_latency_seconds",
                dev.avg_write_latency_seconds.map(|s| round(s, 6)),
            )
            .with(
                "device_avg_flush_latency_seconds",
                dev.avg_flush_latency_seconds.map(|s| round(s, 6)),
            )
            .with("device_iops", round(dev.read_iops + dev.write_iops, 2))
            .with("device_utilisation", round(dev.utilisation, 4));
    }
    Some(
        f.with("path", path.clone())
            .with("device", device)
            .with("disk", d.dir.disk.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::disk::watch::{Histogram, ProbeState};
    use crate::collect::disk::{DeviceCounters, InFlight, ProbeReport, ReadOnly};
    use crate::diagnose::testing;
    use crate::kernel::statfs::FsUsage;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let f = FsyncFigures::from_latencies(vec![0.003, 0.001, 0.002, f64::NAN]).unwrap();
        assert_eq!(
            (f.probes, f.p50_seconds, f.p99_seconds, f.max_seconds),
            (3, 0.002, 0.003, 0.003)
        );
    }

    fn stats(writes: u64, write_ms: u64, flushes: Option<(u64, u64)>, io_ms: u64) -> DiskStats {
        DiskStats {
            writes_completed: writes,
            write_time_ms: write_ms,
            io_time_ms: io_ms,
            flushes_completed: flushes.map(|f| f.0),
            flush_time_ms: flushes.map(|f| f.1),
            ..DiskStats::default()
        }
    }

    #[test]
    fn device_rates_over_the_window() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let series = vec![
            (t(0), stats(1000, 5000, Some((100, 50)), 1000)),
            (t(10), stats(1500, 7000, Some((300, 250)), 6000)),
        ];
        let d = DeviceFigures::from_series("vda", &series).unwrap();
        assert_eq!(d.write_iops, 50.0);
        assert_eq!(d.avg_write_latency_seconds, Some(0.004));
        assert_eq!(d.avg_flush_latency_seconds, Some(0.001));
        assert_eq!(d.flushes_per_second, Some(20.0));
        assert_eq!(d.utilisation, 0.5);
        let old_kernel = vec![(t(0), stats(1, 1, None, 0)), (t(10), stats(1, 1, None, 0))];
        let d = DeviceFigures::from_series("sda", &old_kernel).unwrap();
        assert_eq!(
            d.avg_flush_latency_seconds, None,
            "no flush fields before 5.5"
        );
        assert_eq!(d.avg_write_latency_seconds, None, "no writes: no average");
        assert!(DeviceFigures::from_series("x", &series[..1]).is_none());
    }

    fn dir(path: &str, latencies: Vec<f64>) -> DiskDir {
        DiskDir {
            path: path.into(),
            probed: true,
            dev: Some("254:0".into()),
            device: Some("vda".into()),
            disk: Some("vda".into()),
            mount_point: Some("/".into()),
            fstype: Some("ext4".into()),
            read_only: None,
            space: Some(FsUsage::from_raw(4096, 1000, 500, 1000, 500, 0)),
            space_error: None,
            probe: Some(ProbeReport {
                state: ProbeState::Running,
                file: format!("{path}/.nodediag-fsync-probe.1"),
                probes_in_sample: latencies.len(),
                latencies,
                histogram: Histogram::default(),
                probes_total: 0,
                errors_total: 0,
                last_error: None,
                stalled: false,
                in_flight: None,
            }),
        }
    }

    fn run(samples: Vec<Vec<DiskDir>>) -> Vec<Finding> {
        let samples = samples.into_iter().enumerate().map(|(i, dirs)| DiskSample {
            dirs,
            devices: vec![DeviceCounters {
                name: "vda".into(),
                stats: stats(100 * i as u64, 300 * i as u64, None, 0),
            }],
            window: Duration::from_secs(300),
            unavailable: vec![],
        });
        testing::run_rules(rules, &testing::store_with(samples), &Thresholds::default())
    }

    #[test]
    fn fsync_p99_over_the_whole_window_decides() {
        let fast = vec![0.001; 99];
        assert!(run(vec![vec![dir("/var/lib/etcd", fast.clone())]]).is_empty());
        // 2 slow probes out of 100, spread over two samples: p99 is slow.
        let f = run(vec![
            vec![dir("/var/lib/etcd", fast.clone())],
            vec![dir("/var/lib/etcd", vec![0.02])],
            vec![dir("/var/lib/etcd", vec![0.03])],
        ]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "fsync_slow");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence["p99_seconds"], 0.02);
        assert_eq!(f[0].evidence["probes"], 101);
        assert_eq!(f[0].evidence["device_avg_write_latency_seconds"], 0.003);
        let f = run(vec![vec![dir("/var/lib/etcd", vec![0.15; 10])]]);
        assert_eq!(f[0].severity, Severity::Critical);
        // Exactly at the threshold is not over it.
        assert!(run(vec![vec![dir("/d", vec![0.01; 10])]]).is_empty());
    }

    #[test]
    fn latencies_older_than_the_window_no_longer_count() {
        // 25 samples 15 s apart: the first (slow) one is 360 s older than the newest.
        let mut samples = vec![vec![dir("/var/lib/etcd", vec![0.5; 10])]];
        samples.extend((0..24).map(|_| vec![dir("/var/lib/etcd", vec![0.001; 10])]));
        assert!(
            run(samples.clone()).is_empty(),
            "the slow sample left the window"
        );
        samples.truncate(20);
        let f = run(samples);
        assert_eq!(
            f[0].severity,
            Severity::Critical,
            "within 300 s it still counts"
        );
        assert_eq!(f[0].evidence["probes"], 200);
        assert_eq!(f[0].evidence["max_seconds"], 0.5);
    }

    #[test]
    fn a_stall_is_critical_even_without_figures() {
        let mut d = dir("/var/lib/etcd", vec![]);
        let p = d.probe.as_mut().unwrap();
        p.stalled = true;
        p.in_flight = Some(InFlight {
            operation: "write+fdatasync",
            seconds: 42.0,
        });
        let f = run(vec![vec![d]]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].evidence["stalled"], true);
        assert_eq!(f[0].evidence["stalled_operation"], "write+fdatasync");
    }

    #[test]
    fn space_inodes_and_read_only_once_per_filesystem() {
        let mut a = dir("/var/lib/kubelet", vec![]);
        a.space = Some(FsUsage::from_raw(4096, 1000, 80, 1000, 30, 0));
        let mut b = dir("/var/log", vec![]);
        b.space = a.space;
        b.read_only = Some(ReadOnly {
            source: "mountinfo",
            detail: "ro".into(),
        });
        let f = run(vec![vec![a, b]]);
        let ids: Vec<_> = f.iter().map(|f| (f.id, f.severity)).collect();
        assert_eq!(
            ids,
            vec![
                ("filesystem_readonly", Severity::Critical),
                ("disk_space_low", Severity::Warning),
                ("inodes_low", Severity::Critical),
            ]
        );
        assert_eq!(f[1].subject, "/");
        assert_eq!(f[1].evidence["paths"], "/var/lib/kubelet,/var/log");
        assert_eq!(f[1].evidence["free_ratio"], 0.08);
    }
}
