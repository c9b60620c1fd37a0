//! One function per finding; space and read-only findings once per filesystem.

use super::{
    view, DirView, DiskView, Thresholds, DISK_SPACE_LOW, FILESYSTEM_READONLY, FSYNC_SLOW,
    INODES_LOW,
};
use crate::collect::disk::DiskDir;
use crate::diagnose::{Finding, FindingDef, RuleContext, Severity};
use crate::finding::worst_level;
use crate::store::Snapshot;
use crate::text::round;
use std::collections::BTreeMap;
use std::time::SystemTime;

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
    use crate::collect::disk::{DeviceCounters, DiskSample, InFlight, ProbeReport, ReadOnly};
    use crate::diagnose::testing;
    use crate::kernel::diskstats::DiskStats;
    use crate::kernel::statfs::FsUsage;
    use std::time::Duration;

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
    fn the_window_keeps_latencies_and_device_counters_not_histograms() {
        let samples: Vec<DiskSample> = (0..3u64)
            .map(|i| {
                let mut d = dir("/var/lib/etcd", vec![0.001 * (i + 1) as f64; 5]);
                if let Some(p) = &mut d.probe {
                    p.histogram.observe(0.002);
                }
                DiskSample {
                    dirs: vec![d],
                    devices: vec![DeviceCounters {
                        name: "vda".into(),
                        stats: stats(100 * i, 300 * i, Some((10 * i, 20 * i)), 50 * i),
                    }],
                    window: Duration::from_secs(300),
                    unavailable: vec![],
                }
            })
            .collect();
        let store = testing::store_with(samples.clone());
        let kept = store.snapshot();
        let history = kept.history::<DiskSample>();
        let histogram = |s: &DiskSample| s.dirs[0].probe.as_ref().unwrap().histogram.count;
        assert_eq!(
            history
                .iter()
                .map(|(_, s)| histogram(s))
                .collect::<Vec<_>>(),
            [0, 0, 1]
        );
        let whole = testing::uncompacted(&store, &samples);
        let json = |snap| serde_json::to_value(view(snap, None)).unwrap();
        assert_eq!(json(&kept), json(&whole));
        assert_eq!(
            view(&kept, None).unwrap().dirs[0]
                .fsync
                .as_ref()
                .unwrap()
                .probes,
            15
        );
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
