//! The report's disks section: fsync p50/p99, free space and inodes.

use crate::collect::DiskSample;
use crate::store::Snapshot;
use crate::text::human_bytes;
use std::fmt::Write;
use std::time::SystemTime;

/// The collector line of the report.
pub fn summary(s: &DiskSample) -> String {
    let probed = s.dirs.iter().filter(|d| d.probed).count();
    format!(
        "{} directories, {probed} probed for fsync latency, {} devices",
        s.dirs.len(),
        s.devices.len()
    )
}

/// Each watched directory: fsync p50/p99 over the window, free space and inodes.
pub fn section(out: &mut String, snap: &Snapshot, _now: SystemTime) {
    let Some(v) = crate::diagnose::disk::view(snap, None) else {
        return;
    };
    if v.dirs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\ndisks (fsync over the last {:.0}s):",
        v.window_seconds
    );
    let width = v.dirs.iter().map(|d| d.dir.path.len()).max().unwrap_or(0);
    for d in &v.dirs {
        let dir = d.dir;
        let fsync = match (&dir.probe, &d.fsync) {
            (None, _) => "not probed".to_string(),
            (Some(p), _) if p.stalled => "fsync STALLED".to_string(),
            (Some(_), Some(f)) => format!(
                "fsync p50 {:.2}ms p99 {:.2}ms ({} probes)",
                f.p50_seconds * 1e3,
                f.p99_seconds * 1e3,
                f.probes
            ),
            (Some(p), None) => match &p.state {
                crate::collect::disk::watch::ProbeState::Refused { reason } => {
                    format!("probe refused: {reason}")
                }
                crate::collect::disk::watch::ProbeState::ReadOnly { .. } => {
                    "probe: read-only".into()
                }
                crate::collect::disk::watch::ProbeState::Failed { error } => {
                    format!("probe failed: {error}")
                }
                _ => "fsync: no probes yet".into(),
            },
        };
        let space = match dir.space {
            Some(u) => {
                let pct = |r: Option<f64>| {
                    r.map(|r| format!("{:.1}%", r * 100.0))
                        .unwrap_or_else(|| "n/a".into())
                };
                format!(
                    "{} free ({} of {}), inodes {} free",
                    pct(u.avail_ratio()),
                    human_bytes(u.avail_bytes),
                    human_bytes(u.size_bytes),
                    pct(u.inodes_free_ratio())
                )
            }
            None => dir.space_error.clone().unwrap_or_default(),
        };
        let device = dir.device.as_deref().unwrap_or("-");
        let ro = if dir.read_only.is_some() {
            "  READ-ONLY"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {device:<8}  {fsync}; {space}{ro}",
            dir.path
        );
    }
    for dev in &v.devices {
        let ms = |s: Option<f64>| {
            s.map(|s| format!("{:.2}ms", s * 1e3))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            out,
            "  device {}: {:.1} IOPS, write {} avg, flush {} avg, {:.0}% busy",
            dev.name,
            dev.read_iops + dev.write_iops,
            ms(dev.avg_write_latency_seconds),
            ms(dev.avg_flush_latency_seconds),
            dev.utilisation * 100.0
        );
    }
}
