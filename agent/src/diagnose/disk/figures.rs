//! The disk figures over a window: the probe's fsync percentiles and each disk's
//! `/proc/diskstats` rates, per directory as of the newest sample.

use crate::collect::disk::{DiskDir, DiskSample};
use crate::diagnose::window::{increase, span, within};
use crate::kernel::diskstats::DiskStats;
use crate::store::Snapshot;
use serde::Serialize;
use std::time::{Duration, SystemTime};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
