//! Disk: fsync latency of the directories etcd and the kubelet write to (an active
//! probe on threads of its own), free space and inodes of those and of the runtime,
//! CNI and log directories, and the I/O counters of the devices behind them.

pub mod probe;
pub mod watch;

use super::Collector;
use crate::host::HostRoot;
use crate::kernel::diskstats::{self, DiskStats};
use crate::kernel::mountinfo::{self, Mount, MountsMemo};
use crate::kernel::statfs::{self, FsUsage};
use crate::kernel::ReadError;
use crate::sample::{CollectError, Compacted, Sample, Unavailable};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use watch::{DirWatch, Histogram, ProbeState, WatchConfig};

/// Probed by default when they exist: etcd's data, the kubelet's, the runtimes'.
pub const DEFAULT_PROBE_DIRS: [&str; 4] = [
    "/var/lib/etcd",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/docker",
];

/// Watched for space and inodes by default besides the probed ones: CNI state, logs,
/// and the container runtimes' roots (CRI-O and podman keep images in containers/).
pub const DEFAULT_SPACE_DIRS: [&str; 5] = [
    "/var/lib/cni",
    "/var/log",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/lib/containers",
];

#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// Directories to probe, as nodediag sees them; empty: the defaults that exist.
    pub probe_dirs: Vec<PathBuf>,
    /// Space-only directories; empty: the defaults that exist.
    pub space_dirs: Vec<PathBuf>,
    pub interval: Duration,
    pub probes_per_interval: u32,
    pub file_size: u64,
    pub min_free: u64,
    /// A filesystem call in flight for longer than this is a stall.
    pub stall_timeout: Duration,
    /// The rule window, carried in samples so the API computes the same figures.
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadOnly {
    /// `mountinfo`, `statvfs` (when the mount table is unavailable) or `EROFS`.
    pub source: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    #[serde(flatten)]
    pub state: ProbeState,
    pub file: String,
    /// Write + fdatasync latencies measured since the previous sample, seconds.
    #[serde(skip)]
    pub latencies: Vec<f64>,
    pub probes_in_sample: usize,
    #[serde(skip)]
    pub histogram: Histogram,
    pub probes_total: u64,
    pub errors_total: u64,
    pub last_error: Option<String>,
    /// A probe or filesystem call has not returned for longer than the stall timeout.
    pub stalled: bool,
    pub in_flight: Option<InFlight>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InFlight {
    pub operation: &'static str,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskDir {
    /// The directory on the host (the rootfs prefix removed).
    pub path: String,
    pub probed: bool,
    /// `major:minor` of its filesystem.
    pub dev: Option<String>,
    /// Block device and whole disk, when the filesystem is on one.
    pub device: Option<String>,
    pub disk: Option<String>,
    pub mount_point: Option<String>,
    pub fstype: Option<String>,
    pub read_only: Option<ReadOnly>,
    pub space: Option<FsUsage>,
    pub space_error: Option<String>,
    pub probe: Option<ProbeReport>,
}

impl DiskDir {
    /// Directories on the same filesystem share this: findings about space or a
    /// read-only mount are made once per filesystem.
    pub fn filesystem_key(&self) -> String {
        self.dev.clone().unwrap_or_else(|| self.path.clone())
    }

    /// What an older sample keeps of the directory (see [`DiskSample::compact`]).
    fn compact(&self) -> DiskDir {
        DiskDir {
            path: self.path.clone(),
            probed: self.probed,
            dev: None,
            device: None,
            disk: None,
            mount_point: None,
            fstype: None,
            read_only: None,
            space: None,
            space_error: None,
            probe: self.probe.as_ref().map(|p| ProbeReport {
                state: p.state.clone(),
                file: String::new(),
                latencies: p.latencies.clone(),
                probes_in_sample: p.probes_in_sample,
                histogram: Histogram::default(),
                probes_total: p.probes_total,
                errors_total: p.errors_total,
                last_error: None,
                stalled: p.stalled,
                in_flight: None,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceCounters {
    pub name: String,
    pub stats: DiskStats,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskSample {
    pub dirs: Vec<DiskDir>,
    /// `/proc/diskstats` counters of the disks behind the directories.
    pub devices: Vec<DeviceCounters>,
    #[serde(serialize_with = "crate::time::serialize_duration")]
    pub window: Duration,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for DiskSample {
    const COLLECTOR: &'static str = "disk";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// The disk view reads each directory's fsync latencies and each device's
    /// counters over the window, by path and name; the histograms since start (the
    /// metrics) and everything else come from the newest sample.
    fn compact(&self) -> Compacted<Self> {
        Compacted::Part(DiskSample {
            dirs: self.dirs.iter().map(DiskDir::compact).collect(),
            devices: self.devices.clone(),
            window: self.window,
            unavailable: Vec::new(),
        })
    }
}

pub struct DiskCollector {
    root: HostRoot,
    config: DiskConfig,
    watches: Vec<DirWatch>,
    mounts: MountsMemo,
}

impl DiskCollector {
    pub fn new(root: HostRoot, config: DiskConfig) -> Self {
        Self {
            root,
            config,
            watches: Vec::new(),
            mounts: MountsMemo::default(),
        }
    }

    /// Reads the mount table through `mounts`, shared with the other collectors.
    pub fn sharing_mounts(mut self, mounts: MountsMemo) -> Self {
        self.mounts = mounts;
        self
    }

    /// The directories to watch: (path as nodediag sees it, probed).
    fn directories(&self) -> Vec<(PathBuf, bool)> {
        let existing = |list: &[&str]| -> Vec<PathBuf> {
            list.iter()
                .map(|p| self.root.host_path(p))
                .filter(|p| p.is_dir())
                .collect()
        };
        let probed = if self.config.probe_dirs.is_empty() {
            existing(&DEFAULT_PROBE_DIRS)
        } else {
            self.config.probe_dirs.clone()
        };
        let space = if self.config.space_dirs.is_empty() {
            existing(&DEFAULT_SPACE_DIRS)
        } else {
            self.config.space_dirs.clone()
        };
        let mut out: Vec<(PathBuf, bool)> = probed.into_iter().map(|p| (p, true)).collect();
        for p in space {
            if !out.iter().any(|(q, _)| *q == p) {
                out.push((p, false));
            }
        }
        out
    }

    /// Starts a watch for each directory not watched yet: at the first sample, and
    /// later for default directories that appear (etcd's after `kubeadm init`).
    fn watch_new_dirs(&mut self) -> Result<(), CollectError> {
        let new: Vec<(PathBuf, bool)> = self
            .directories()
            .into_iter()
            .filter(|(p, _)| !self.watches.iter().any(|w| w.path == *p))
            .collect();
        if new.is_empty() && self.watches.is_empty() {
            return Err(CollectError::Unavailable(Unavailable::new(
                "disk directories",
                format!(
                    "none of {} exist under {}: set --fsync.path / --disk.path or --path.rootfs",
                    DEFAULT_PROBE_DIRS
                        .iter()
                        .chain(&DEFAULT_SPACE_DIRS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.root.rootfs.display()
                ),
            )));
        }
        let first_new = self.watches.len();
        for (path, probe) in new {
            let cfg = WatchConfig {
                probe,
                interval: self.config.interval,
                probes_per_interval: self.config.probes_per_interval,
                file_size: self.config.file_size,
                min_free: self.config.min_free,
            };
            let w = DirWatch::spawn(path.clone(), cfg).map_err(|e| {
                CollectError::Failed(format!(
                    "cannot start the thread for {}: {e}",
                    path.display()
                ))
            })?;
            self.watches.push(w);
        }
        // A new directory's first sample waits for its first burst of probes
        // (bounded), so even a one-shot `check` has figures; a hung disk shows as
        // stalled at the bound.
        let deadline = Instant::now() + self.config.stall_timeout;
        for w in &self.watches[first_new..] {
            w.wait_first_round(deadline);
        }
        Ok(())
    }

    /// The path as the host names it: nodediag may see it under --path.rootfs.
    fn host_view(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.root.rootfs) {
            Ok(rel) => Path::new("/").join(rel),
            Err(_) => path.to_path_buf(),
        }
    }

    fn mounts(&mut self, unavailable: &mut Vec<Unavailable>) -> Option<Arc<Vec<Mount>>> {
        match self.mounts.read(&self.root) {
            Ok(mounts) => Some(mounts),
            Err(e) if e.is_not_found() => {
                unavailable.push(Unavailable::new(
                    "mount table",
                    format!(
                        "{} is missing: read-only mounts are judged from statvfs as nodediag sees them",
                        e.path.display()
                    ),
                ));
                None
            }
            Err(e) => {
                unavailable.push(Unavailable::unreadable(&e));
                None
            }
        }
    }
}

impl Drop for DiskCollector {
    fn drop(&mut self) {
        for w in &self.watches {
            w.request_stop();
        }
    }
}

impl Collector for DiskCollector {
    type Sample = DiskSample;

    /// Not the first collection: it waits for the first burst of probes (on their
    /// threads, up to the stall timeout), and the others need not wait behind it.
    fn takes_turns(&self) -> bool {
        !self.watches.is_empty()
    }

    fn collect(&mut self) -> Result<DiskSample, CollectError> {
        self.watch_new_dirs()?;
        let mut unavailable = Vec::new();
        let mounts = self.mounts(&mut unavailable);
        let lines = match diskstats::read(&self.root) {
            Ok(file) => {
                // A line nodediag cannot parse costs that device's latency, not the
                // probe's or the space figures.
                if file.bad_count > 0 {
                    let e = ReadError::invalid(
                        &diskstats::path(&self.root),
                        format!(
                            "{} lines skipped: {}",
                            file.bad_count,
                            file.bad_lines.join("; ")
                        ),
                    );
                    unavailable.push(Unavailable::unreadable(&e));
                }
                file.lines
            }
            Err(e) => {
                unavailable.push(Unavailable::new(
                    "device I/O counters",
                    format!("{e}: device latency is not shown next to the probe's"),
                ));
                Vec::new()
            }
        };
        let mut dirs = Vec::with_capacity(self.watches.len());
        let mut devices: Vec<DeviceCounters> = Vec::new();
        for w in &self.watches {
            let r = w.take();
            let host_path = self.host_view(&w.path);
            let block = r.dev.and_then(|d| statfs::block_device(&self.root, d));
            let mount = mounts
                .as_deref()
                .and_then(|m| mountinfo::find(m, &host_path, r.dev));
            let (space, space_error) = match &r.usage {
                Some(Ok(u)) => (Some(*u), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, Some("statvfs has not returned yet".into())),
            };
            let read_only = if let ProbeState::ReadOnly { error } = &r.state {
                Some(ReadOnly {
                    source: "EROFS",
                    detail: error.clone(),
                })
            } else if let Some(m) = mount {
                m.read_only().then(|| ReadOnly {
                    source: "mountinfo",
                    detail: format!(
                        "{} ({}) mounted {} / superblock {}",
                        m.mount_point, m.fstype, m.mount_options, m.super_options
                    ),
                })
            } else {
                space.filter(|s| s.read_only).map(|_| ReadOnly {
                    source: "statvfs",
                    detail: "statvfs reports ST_RDONLY".into(),
                })
            };
            if let Some(b) = &block {
                let iostats = self.root.sys(&["block", &b.disk, "queue", "iostats"]);
                let accounted = crate::kernel::read_optional(&iostats).is_none_or(|v| v != "0");
                if !accounted && !unavailable.iter().any(|u| u.what.ends_with(&b.disk)) {
                    unavailable.push(Unavailable::new(
                        format!("I/O counters of {}", b.disk),
                        format!(
                            "{} is 0: the kernel does not count its I/O",
                            iostats.display()
                        ),
                    ));
                }
                if accounted && !devices.iter().any(|d| d.name == b.disk) {
                    match lines.iter().find(|l| l.name == b.disk) {
                        Some(l) => devices.push(DeviceCounters {
                            name: b.disk.clone(),
                            stats: l.stats,
                        }),
                        None if !lines.is_empty() => unavailable.push(Unavailable::new(
                            format!("I/O counters of {}", b.disk),
                            format!(
                                "{} has no line for it",
                                diskstats::path(&self.root).display()
                            ),
                        )),
                        None => {}
                    }
                }
            }
            let probe = w.config.probe.then(|| {
                let in_flight = r.in_flight.map(|(op, d)| InFlight {
                    operation: op,
                    seconds: d.as_secs_f64(),
                });
                ProbeReport {
                    stalled: r
                        .in_flight
                        .is_some_and(|(_, d)| d >= self.config.stall_timeout),
                    in_flight,
                    file: self.host_view(&r.file).display().to_string(),
                    probes_in_sample: r.latencies.len(),
                    latencies: r.latencies,
                    probes_total: r.histogram.count,
                    histogram: r.histogram,
                    errors_total: r.errors_total,
                    last_error: r.last_error,
                    state: r.state,
                }
            });
            dirs.push(DiskDir {
                path: host_path.display().to_string(),
                probed: w.config.probe,
                dev: r.dev.map(|(a, b)| format!("{a}:{b}")),
                device: block.as_ref().map(|b| b.name.clone()),
                disk: block.map(|b| b.disk),
                mount_point: mount.map(|m| m.mount_point.clone()),
                fstype: mount.map(|m| m.fstype.clone()),
                read_only,
                space,
                space_error,
                probe,
            });
        }
        Ok(DiskSample {
            dirs,
            devices,
            window: self.config.window,
            unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(rootfs: &Path) -> DiskCollector {
        DiskCollector::new(
            HostRoot {
                rootfs: rootfs.to_path_buf(),
                ..HostRoot::default()
            },
            DiskConfig {
                probe_dirs: vec![],
                space_dirs: vec![],
                interval: Duration::from_secs(60),
                probes_per_interval: 3,
                file_size: 64 * 1024,
                min_free: 0,
                stall_timeout: Duration::from_secs(20),
                window: Duration::from_secs(300),
            },
        )
    }

    fn sample(c: &mut DiskCollector) -> DiskSample {
        c.collect().unwrap()
    }

    #[test]
    fn default_directories_are_found_under_the_rootfs_even_when_they_appear_later() {
        let root = tempfile::tempdir().unwrap();
        let mut c = collector(root.path());
        assert!(
            matches!(c.collect(), Err(CollectError::Unavailable(_))),
            "nothing to watch yet"
        );
        assert!(!c.takes_turns(), "its first collection waits on probes");
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        let s = sample(&mut c);
        assert!(c.takes_turns(), "later ones read what the threads keep");
        assert_eq!(s.dirs.len(), 1);
        assert_eq!(s.dirs[0].path, "/var/log", "named as the host names it");
        assert!(!s.dirs[0].probed);
        assert!(s.dirs[0].space.is_some());

        std::fs::create_dir_all(root.path().join("var/lib/etcd")).unwrap();
        let s = sample(&mut c);
        let etcd = s
            .dirs
            .iter()
            .find(|d| d.path == "/var/lib/etcd")
            .expect("etcd picked up");
        let probe = etcd.probe.as_ref().unwrap();
        assert_eq!(
            probe.probes_in_sample, 3,
            "its first burst is in the sample"
        );
        assert!(s.dirs.iter().filter(|d| d.path == "/var/log").count() == 1);
        drop(c);
        let left: Vec<_> = std::fs::read_dir(root.path().join("var/lib/etcd"))
            .unwrap()
            .collect();
        assert!(
            left.is_empty(),
            "probe file removed when the collector is dropped"
        );
    }
}
