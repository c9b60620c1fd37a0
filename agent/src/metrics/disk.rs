use super::encode::{Encoder, Kind};
use crate::collect::disk::watch::ProbeState;
use crate::collect::disk::{DiskDir, DiskSample};
use crate::kernel::diskstats::DiskStats;
use crate::store::Snapshot;

/// (metric name, help, value) of a per-directory filesystem gauge.
type DirGauge = (&'static str, &'static str, fn(&DiskDir) -> f64);

/// (metric name, help, value) of a per-device diskstats counter.
type DeviceCounter = (&'static str, &'static str, fn(&DiskStats) -> Option<f64>);

pub fn render(snap: &Snapshot, e: &mut Encoder) {
    let Some((_, s)) = snap.latest::<DiskSample>() else {
        return;
    };
    let probed: Vec<&DiskDir> = s.dirs.iter().filter(|d| d.probe.is_some()).collect();
    if !probed.is_empty() {
        e.family(
            "nodediag_fsync_duration_seconds",
            Kind::Histogram,
            "Time to write a 2300-byte record and fdatasync it in a preallocated file (etcd's WAL pattern), per probed directory; counts since nodediag started.",
        );
        for d in &probed {
            let p = d.probe.as_ref().expect("probed");
            let device = d.device.as_deref().unwrap_or("");
            e.histogram(
                "nodediag_fsync_duration_seconds",
                &[("path", &d.path), ("device", device)],
                &p.histogram.cumulative(),
                p.histogram.sum_seconds,
                p.histogram.count,
            );
        }
        per_probe(e, &probed, "nodediag_fsync_probe_up", Kind::Gauge,
            "1 while the fsync probe runs in the directory; 0 when it is refused (free space below --fsync.min-free), the filesystem is read-only, or the file cannot be written.",
            |d| f64::from(u8::from(matches!(d.probe.as_ref().map(|p| &p.state), Some(ProbeState::Running)))));
        per_probe(e, &probed, "nodediag_fsync_probe_stalled", Kind::Gauge,
            "1 when a probe write+fdatasync (or statvfs) has not returned for longer than --fsync.stall-timeout.",
            |d| f64::from(u8::from(d.probe.as_ref().is_some_and(|p| p.stalled))));
        per_probe(
            e,
            &probed,
            "nodediag_fsync_probe_errors_total",
            Kind::Counter,
            "Probe writes or syncs that failed with an error (EIO, ENOSPC, ...).",
            |d| d.probe.as_ref().map_or(0.0, |p| p.errors_total as f64),
        );
    }
    let with_space: Vec<&DiskDir> = s.dirs.iter().filter(|d| d.space.is_some()).collect();
    let fs_gauges: [DirGauge; 5] = [
        ("nodediag_filesystem_size_bytes", "Size of the filesystem a watched directory is on (statvfs f_blocks).",
            |d| d.space.map_or(0.0, |u| u.size_bytes as f64)),
        ("nodediag_filesystem_avail_bytes", "Space available to unprivileged users (statvfs f_bavail, as the kubelet's nodefs.available).",
            |d| d.space.map_or(0.0, |u| u.avail_bytes as f64)),
        ("nodediag_filesystem_files", "Inodes of the filesystem (statvfs f_files; 0 where there is no fixed number).",
            |d| d.space.map_or(0.0, |u| u.inodes as f64)),
        ("nodediag_filesystem_files_free", "Free inodes (statvfs f_ffree).",
            |d| d.space.map_or(0.0, |u| u.inodes_free as f64)),
        ("nodediag_filesystem_readonly", "1 when the filesystem is read-only (host mountinfo, or EROFS from the probe).",
            |d| f64::from(u8::from(d.read_only.is_some()))),
    ];
    if !with_space.is_empty() {
        for (name, help, value) in fs_gauges {
            e.family(name, Kind::Gauge, help);
            for d in &with_space {
                e.sample(
                    name,
                    &[
                        ("path", &d.path),
                        ("device", d.device.as_deref().unwrap_or("")),
                    ],
                    value(d),
                );
            }
        }
    }
    if s.devices.is_empty() {
        return;
    }
    let counters: [DeviceCounter; 7] = [
        (
            "nodediag_disk_reads_completed_total",
            "Reads completed",
            |s| Some(s.reads_completed as f64),
        ),
        (
            "nodediag_disk_read_time_seconds_total",
            "Time spent on reads",
            |s| Some(s.read_time_ms as f64 / 1000.0),
        ),
        (
            "nodediag_disk_writes_completed_total",
            "Writes completed",
            |s| Some(s.writes_completed as f64),
        ),
        (
            "nodediag_disk_write_time_seconds_total",
            "Time spent on writes",
            |s| Some(s.write_time_ms as f64 / 1000.0),
        ),
        (
            "nodediag_disk_flush_requests_total",
            "Flush requests completed (kernel 5.5+)",
            |s| s.flushes_completed.map(|v| v as f64),
        ),
        (
            "nodediag_disk_flush_time_seconds_total",
            "Time spent on flushes (kernel 5.5+)",
            |s| s.flush_time_ms.map(|v| v as f64 / 1000.0),
        ),
        (
            "nodediag_disk_io_time_seconds_total",
            "Time with I/O in flight (utilisation)",
            |s| Some(s.io_time_ms as f64 / 1000.0),
        ),
    ];
    for (name, help, value) in counters {
        let values: Vec<(&str, f64)> = s
            .devices
            .iter()
            .filter_map(|d| Some((d.name.as_str(), value(&d.stats)?)))
            .collect();
        if values.is_empty() {
            continue;
        }
        e.family(
            name,
            Kind::Counter,
            &format!("{help}, for the disks behind the watched directories (/proc/diskstats)."),
        );
        for (dev, v) in values {
            e.sample(name, &[("device", dev)], v);
        }
    }
}

fn per_probe(
    e: &mut Encoder,
    dirs: &[&DiskDir],
    name: &str,
    kind: Kind,
    help: &str,
    value: fn(&DiskDir) -> f64,
) {
    e.family(name, kind, help);
    for d in dirs {
        e.sample(name, &[("path", &d.path)], value(d));
    }
}
