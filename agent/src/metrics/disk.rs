//! `nodediag_fsync_*`, `nodediag_filesystem_*`, `nodediag_disk_*`: the fsync probe's
//! latency histogram (classic and native buckets) and state per probed directory,
//! space and inodes per watched directory, and the diskstats counters of the disks
//! behind them.

use super::family::Families;
use super::histogram::HistogramSeries;
use crate::collect::disk::watch::{ProbeState, BUCKETS};
use crate::collect::disk::{DiskDir, DiskSample, ProbeReport};
use crate::kernel::diskstats::DiskStats;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

/// (metric name, help, value) of a per-directory filesystem gauge.
type DirGauge = (&'static str, &'static str, fn(&DiskDir) -> u64);

/// (metric name, help, value) of a per-device diskstats counter.
type DeviceCounter = (&'static str, &'static str, fn(&DiskStats) -> Option<f64>);

const FS_GAUGES: [DirGauge; 5] = [
    ("nodediag_filesystem_size_bytes", "Size of the filesystem a watched directory is on (statvfs f_blocks).",
        |d| d.space.map_or(0, |u| u.size_bytes)),
    ("nodediag_filesystem_avail_bytes", "Space available to unprivileged users (statvfs f_bavail, as the kubelet's nodefs.available).",
        |d| d.space.map_or(0, |u| u.avail_bytes)),
    ("nodediag_filesystem_files", "Inodes of the filesystem (statvfs f_files; 0 where there is no fixed number).",
        |d| d.space.map_or(0, |u| u.inodes)),
    ("nodediag_filesystem_files_free", "Free inodes (statvfs f_ffree).",
        |d| d.space.map_or(0, |u| u.inodes_free)),
    ("nodediag_filesystem_readonly", "1 when the filesystem is read-only (host mountinfo, or EROFS from the probe).",
        |d| u64::from(d.read_only.is_some())),
];

const DEVICE_COUNTERS: [DeviceCounter; 7] = [
    (
        "nodediag_disk_reads_completed_total",
        "Reads completed, for the disks behind the watched directories (/proc/diskstats).",
        |s| Some(s.reads_completed as f64),
    ),
    (
        "nodediag_disk_read_time_seconds_total",
        "Time spent on reads, for the disks behind the watched directories (/proc/diskstats).",
        |s| Some(s.read_time_ms as f64 / 1000.0),
    ),
    (
        "nodediag_disk_writes_completed_total",
        "Writes completed, for the disks behind the watched directories (/proc/diskstats).",
        |s| Some(s.writes_completed as f64),
    ),
    (
        "nodediag_disk_write_time_seconds_total",
        "Time spent on writes, for the disks behind the watched directories (/proc/diskstats).",
        |s| Some(s.write_time_ms as f64 / 1000.0),
    ),
    (
        "nodediag_disk_flush_requests_total",
        "Flush requests completed (kernel 5.5+), for the disks behind the watched directories (/proc/diskstats).",
        |s| s.flushes_completed.map(|v| v as f64),
    ),
    (
        "nodediag_disk_flush_time_seconds_total",
        "Time spent on flushes (kernel 5.5+), for the disks behind the watched directories (/proc/diskstats).",
        |s| s.flush_time_ms.map(|v| v as f64 / 1000.0),
    ),
    (
        "nodediag_disk_io_time_seconds_total",
        "Time with I/O in flight (utilisation), for the disks behind the watched directories (/proc/diskstats).",
        |s| Some(s.io_time_ms as f64 / 1000.0),
    ),
];

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<DiskSample>() else {
        return Ok(());
    };
    let probed = || s.dirs.iter().filter_map(|d| Some((d, d.probe.as_ref()?)));
    e.histogram(
        "nodediag_fsync_duration_seconds",
        "Time to write a 2300-byte record and fdatasync it in a preallocated file (etcd's WAL pattern), per probed directory; counts since nodediag started.",
        probed().map(|(d, p)| (path_and_device(d), fsync_histogram(p))),
    )?;
    e.gauge(
        "nodediag_fsync_probe_up",
        "1 while the fsync probe runs in the directory; 0 when it is refused (free space below --fsync.min-free), the filesystem is read-only, or the file cannot be written.",
        probed().map(|(d, p)| (path(d), p.state == ProbeState::Running)),
    )?;
    e.gauge(
        "nodediag_fsync_probe_stalled",
        "1 when a probe write+fdatasync (or statvfs) has not returned for longer than --fsync.stall-timeout.",
        probed().map(|(d, p)| (path(d), p.stalled)),
    )?;
    e.counter(
        "nodediag_fsync_probe_errors_total",
        "Probe writes or syncs that failed with an error (EIO, ENOSPC, ...).",
        probed().map(|(d, p)| (path(d), p.errors_total)),
    )?;
    for (name, help, value) in FS_GAUGES {
        e.gauge(
            name,
            help,
            s.dirs
                .iter()
                .filter(|d| d.space.is_some())
                .map(|d| (path_and_device(d), value(d))),
        )?;
    }
    for (name, help, value) in DEVICE_COUNTERS {
        e.counter(
            name,
            help,
            s.devices
                .iter()
                .filter_map(|d| Some(([("device", d.name.as_str())], value(&d.stats)?))),
        )?;
    }
    Ok(())
}

fn fsync_histogram(p: &ProbeReport) -> HistogramSeries<'_> {
    let h = &p.histogram;
    HistogramSeries::new(&BUCKETS, &h.counts, h.sum_seconds, h.count, Some(&h.native))
}

fn path(d: &DiskDir) -> [(&'static str, &str); 1] {
    [("path", d.path.as_str())]
}

fn path_and_device(d: &DiskDir) -> [(&'static str, &str); 2] {
    [
        ("path", d.path.as_str()),
        ("device", d.device.as_deref().unwrap_or("")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::disk::watch::Histogram;
    use crate::kernel::statfs::FsUsage;
    use crate::metrics::exposition::{Exposition, Format};
    use crate::store::Store;
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
        BucketSpan, MetricFamily, MetricType,
    };
    use prost_014::Message;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// Latencies whose native buckets are worked out by hand: ceil(8 * log2(v)).
    const LATENCIES: [f64; 6] = [0.001, 0.0011, 0.004, 0.004, 0.5, 2.0];

    fn dir(path: &str, probed: bool) -> DiskDir {
        let mut histogram = Histogram::default();
        for v in LATENCIES.iter().filter(|_| probed) {
            histogram.observe(*v);
        }
        DiskDir {
            path: path.into(),
            probed,
            dev: Some("254:1".into()),
            device: Some("vda1".into()),
            disk: Some("vda".into()),
            mount_point: Some("/".into()),
            fstype: Some("ext4".into()),
            read_only: None,
            space: Some(FsUsage {
                size_bytes: 1 << 30,
                avail_bytes: 1 << 29,
                inodes: 1000,
                inodes_free: 10,
                read_only: false,
            }),
            space_error: None,
            probe: probed.then(|| ProbeReport {
                state: ProbeState::Running,
                file: format!("{path}/.nodediag-fsync-probe.1"),
                latencies: vec![],
                probes_in_sample: 0,
                probes_total: histogram.count,
                histogram,
                errors_total: 2,
                last_error: None,
                stalled: false,
                in_flight: None,
            }),
        }
    }

    fn exposition() -> Exposition {
        let store = Arc::new(Store::new("n".into(), Duration::from_secs(60)));
        store.register("disk", Duration::from_secs(15));
        let sample = DiskSample {
            dirs: vec![dir("/var/lib/etcd", true), dir("/var/log", false)],
            devices: vec![],
            window: Duration::from_secs(60),
            unavailable: vec![],
        };
        store.record(
            "disk",
            SystemTime::now(),
            Duration::ZERO,
            Ok(Arc::new(sample)),
        );
        Exposition::of_signal::<crate::collect::DiskSample>(store, encode)
    }

    fn families(bytes: &[u8]) -> Vec<MetricFamily> {
        let mut buf = bytes;
        let mut out = Vec::new();
        while !buf.is_empty() {
            out.push(
                MetricFamily::decode_length_delimited(&mut buf).expect("a delimited MetricFamily"),
            );
        }
        out
    }

    #[test]
    fn protobuf_carries_native_and_classic_buckets_of_the_fsync_probe() {
        let all = families(&exposition().encode(Format::Protobuf).unwrap());
        let fsync = all
            .iter()
            .find(|f| f.name == "nodediag_fsync_duration_seconds")
            .expect("the fsync family");
        assert_eq!(fsync.r#type, MetricType::Histogram as i32);
        assert_eq!(fsync.unit, "seconds");
        assert_eq!(fsync.metric.len(), 1, "only the probed directory");
        let m = &fsync.metric[0];
        let labels: Vec<(&str, &str)> = m
            .label
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, [("path", "/var/lib/etcd"), ("device", "vda1")]);
        let h = m.histogram.as_ref().expect("a histogram");
        assert_eq!(h.sample_count, 6);
        assert!((h.sample_sum - LATENCIES.iter().sum::<f64>()).abs() < 1e-12);
        assert_eq!(h.schema, 3);
        assert_eq!(h.zero_threshold, 2f64.powi(-128));
        assert_eq!(h.zero_count, 0);
        // Buckets -79 (0.001), -78 (0.0011), -63 (0.004 twice), -8 (0.5), 8 (2.0).
        let span = |offset, length| BucketSpan { offset, length };
        assert_eq!(
            h.positive_span,
            [span(-79, 2), span(14, 1), span(54, 1), span(15, 1)]
        );
        assert_eq!(h.positive_delta, [1, 0, 1, -1, 0]);
        assert!(h.negative_span.is_empty() && h.negative_delta.is_empty());
        // The classic buckets ride along for scrapers without native histograms.
        let classic: Vec<(f64, u64)> = h
            .bucket
            .iter()
            .map(|b| (b.upper_bound, b.cumulative_count))
            .collect();
        assert_eq!(classic.len(), BUCKETS.len() + 1);
        assert_eq!(classic[2], (0.001, 1));
        assert_eq!(classic[3], (0.0025, 2));
        assert_eq!(classic[4], (0.005, 4));
        assert_eq!(classic[10], (0.5, 5));
        assert_eq!(classic[12], (2.0, 6));
        assert_eq!(*classic.last().unwrap(), (f64::INFINITY, 6));
        // Counters carry their _total in protobuf, as the text formats expose them.
        let errors = all
            .iter()
            .find(|f| f.name == "nodediag_fsync_probe_errors_total")
            .expect("the errors counter");
        assert_eq!(errors.r#type, MetricType::Counter as i32);
        assert_eq!(errors.metric[0].counter.as_ref().unwrap().value, 2.0);
    }

    #[test]
    fn the_text_formats_carry_the_classic_buckets() {
        let e = exposition();
        let text = e.text(Format::Text);
        for line in [
            "# TYPE nodediag_fsync_duration_seconds histogram",
            "nodediag_fsync_duration_seconds_bucket{path=\"/var/lib/etcd\",device=\"vda1\",le=\"0.001\"} 1",
            "nodediag_fsync_duration_seconds_bucket{path=\"/var/lib/etcd\",device=\"vda1\",le=\"+Inf\"} 6",
            "nodediag_fsync_duration_seconds_count{path=\"/var/lib/etcd\",device=\"vda1\"} 6",
            "nodediag_fsync_probe_up{path=\"/var/lib/etcd\"} 1",
            "nodediag_fsync_probe_errors_total{path=\"/var/lib/etcd\"} 2",
            "nodediag_filesystem_files_free{path=\"/var/log\",device=\"vda1\"} 10",
        ] {
            assert!(text.contains(&format!("{line}\n")), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("nodediag_fsync_probe_up{path=\"/var/log\""),
            "a space-only directory has no probe series"
        );
        let om = e.text(Format::OpenMetrics);
        for line in [
            "# TYPE nodediag_fsync_duration_seconds histogram",
            "# UNIT nodediag_fsync_duration_seconds seconds",
            "nodediag_fsync_duration_seconds_bucket{le=\"1.0\",path=\"/var/lib/etcd\",device=\"vda1\"} 5",
            "# TYPE nodediag_fsync_probe_errors counter",
            "nodediag_fsync_probe_errors_total{path=\"/var/lib/etcd\"} 2",
        ] {
            assert!(om.contains(&format!("{line}\n")), "no {line:?} in\n{om}");
        }
    }
}
