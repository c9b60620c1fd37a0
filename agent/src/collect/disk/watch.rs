//! One dedicated thread per watched directory. It does every filesystem call for that
//! directory (statvfs, stat, the fsync probe), so a hung disk or NFS server blocks
//! only that thread: the collector reads the results from shared state, sees an
//! operation in flight for too long, and reports a stall. The thread is never
//! replaced while it is stuck, so threads cannot pile up.

use super::probe::{self, ProbeFile};
use crate::collect::latency_histogram::{self, Bounds};
use crate::kernel::statfs::{self, FsUsage};
use crate::kernel::ReadError;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bounds of the fsync latency histogram, seconds: 0.25 ms to 8 s, with the
/// default thresholds (10 ms, 100 ms) as exact bounds.
pub const BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0,
];

/// Latencies kept for a collector that has not read them yet; bounds memory if the
/// collector stops calling.
const MAX_PENDING: usize = 10_000;

/// How long dropping a watch waits for its thread to remove the probe file.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// The latencies of the fsync probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsyncBounds;

impl Bounds for FsyncBounds {
    const BOUNDS: &'static [f64] = &BUCKETS;
}

/// Since-start counts, as a Prometheus histogram wants them.
pub type Histogram = latency_histogram::Histogram<FsyncBounds>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProbeState {
    /// Not probed (a space-only directory) or not started yet.
    Idle,
    Running,
    /// Free space is below the floor: the file is removed until space returns.
    Refused {
        reason: String,
    },
    /// The filesystem refused the write with EROFS.
    ReadOnly {
        error: String,
    },
    /// The probe file could not be created or written.
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub probe: bool,
    pub interval: Duration,
    pub probes_per_interval: u32,
    pub file_size: u64,
    pub min_free: u64,
}

/// What the thread has found out, as the collector takes it.
#[derive(Debug, Clone)]
pub struct Report {
    pub usage: Option<Result<FsUsage, String>>,
    pub dev: Option<(u32, u32)>,
    pub state: ProbeState,
    pub file: PathBuf,
    /// Probe latencies since the previous report, seconds.
    pub latencies: Vec<f64>,
    pub histogram: Histogram,
    pub errors_total: u64,
    pub last_error: Option<String>,
    /// The filesystem call in flight and for how long.
    pub in_flight: Option<(&'static str, Duration)>,
}

#[derive(Debug)]
struct State {
    stop: bool,
    exited: bool,
    rounds: u64,
    usage: Option<Result<FsUsage, String>>,
    dev: Option<(u32, u32)>,
    probe: ProbeState,
    pending: Vec<f64>,
    histogram: Histogram,
    errors_total: u64,
    last_error: Option<String>,
    in_flight: Option<(&'static str, Instant)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl State {
    /// Logs when the probe starts, stops or changes why it cannot run, not on
    /// every round.
    fn set_probe(&mut self, dir: &Path, next: ProbeState) {
        if std::mem::discriminant(&self.probe) != std::mem::discriminant(&next) {
            match &next {
                ProbeState::Running => tracing::info!(dir = %dir.display(), "fsync probe running"),
                ProbeState::Refused { reason } => {
                    tracing::warn!(dir = %dir.display(), %reason, "fsync probe paused: low free space")
                }
                ProbeState::ReadOnly { error } => {
                    tracing::warn!(dir = %dir.display(), %error, "fsync probe stopped: read-only filesystem")
                }
                ProbeState::Failed { error } => {
                    tracing::warn!(dir = %dir.display(), %error, "fsync probe cannot run")
                }
                ProbeState::Idle => {}
            }
        }
        self.probe = next;
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a filesystem call with the lock released, marked in flight meanwhile.
    fn io<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> T {
        self.lock().in_flight = Some((op, Instant::now()));
        let out = f();
        self.lock().in_flight = None;
        out
    }

    /// Sleeps up to `d`; true when asked to stop.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut st = self.lock();
        while !st.stop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

pub struct DirWatch {
    pub path: PathBuf,
    pub config: WatchConfig,
    file: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DirWatch {
    pub fn spawn(path: PathBuf, config: WatchConfig) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                stop: false,
                exited: false,
                rounds: 0,
                usage: None,
                dev: None,
                probe: ProbeState::Idle,
                pending: Vec::new(),
                histogram: Histogram::default(),
                errors_total: 0,
                last_error: None,
                in_flight: None,
            }),
            changed: Condvar::new(),
        });
        let file = probe::file_name(&path);
        let thread = {
            let (path, file, config, shared) =
                (path.clone(), file.clone(), config.clone(), shared.clone());
            std::thread::Builder::new()
                .name("nodediag-disk".into())
                .spawn(move || {
                    // Started by a collection, which runs nicer than the process.
                    crate::kernel::thread_nice::as_process();
                    run(&path, &file, &config, &shared);
                    shared.lock().exited = true;
                    shared.changed.notify_all();
                })?
        };
        Ok(Self {
            path,
            config,
            file,
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until the first round (statvfs and the first burst of probes) is done,
    /// at most until `deadline`.
    pub fn wait_first_round(&self, deadline: Instant) {
        let mut st = self.shared.lock();
        while st.rounds == 0 && !st.exited {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The current state, handing over the latencies measured since the last call.
    pub fn take(&self) -> Report {
        let mut st = self.shared.lock();
        Report {
            usage: st.usage.clone(),
            dev: st.dev,
            state: st.probe.clone(),
            file: self.file.clone(),
            latencies: std::mem::take(&mut st.pending),
            histogram: st.histogram.clone(),
            errors_total: st.errors_total,
            last_error: st.last_error.clone(),
            in_flight: st.in_flight.map(|(op, since)| (op, since.elapsed())),
        }
    }
}

impl DirWatch {
    /// Asks the thread to stop without waiting: stopping several watches at once
    /// then costs one wait, not one per stuck directory.
    pub fn request_stop(&self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
    }
}

impl Drop for DirWatch {
    /// Stops the thread, which removes the probe file. A thread stuck in a hung
    /// filesystem cannot answer: after a bound, shutdown goes on without it.
    fn drop(&mut self) {
        self.request_stop();
        let mut st = self.shared.lock();
        let deadline = Instant::now() + STOP_WAIT;
        while !st.exited {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    file = %self.file.display(),
                    op = st.in_flight.map(|(op, _)| op).unwrap_or("?"),
                    "the filesystem does not answer: the probe file may be left behind"
                );
                return;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(st);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_erofs(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EROFS)
}

fn run(dir: &Path, file: &Path, cfg: &WatchConfig, shared: &Shared) {
    let mut probe: Option<ProbeFile> = None;
    if cfg.probe {
        for stale in shared.io("cleanup", || probe::remove_stale(dir)) {
            tracing::info!(file = %stale.display(), "removed a probe file left by a previous run");
        }
    }
    let per_probe = cfg.interval / cfg.probes_per_interval.max(1);
    let mut first = true;
    loop {
        let usage = shared.io("statvfs", || statfs::statvfs(dir));
        let dev = shared.io("stat", || statfs::device_of(dir)).ok();
        {
            let mut st = shared.lock();
            st.usage = Some(match &usage {
                Ok(u) => Ok(*u),
                // The error names the directory: "statvfs DIR: reason".
                Err(e) => Err(format!("statvfs {e}")),
            });
            st.dev = dev;
        }
        let mut stopped = false;
        if cfg.probe {
            let ready = prepare(dir, file, cfg, shared, &usage, &mut probe);
            for _ in 0..cfg.probes_per_interval {
                if !ready || probe.is_none() {
                    break;
                }
                // After the first burst, each probe waits its turn first, so a round
                // never starts with a probe right behind the previous one.
                if !first && shared.pause(per_probe) {
                    stopped = true;
                    break;
                }
                // The first burst does not pause between probes: look for a stop here
                // so shutdown does not wait for the whole burst on a slow disk.
                if shared.lock().stop {
                    stopped = true;
                    break;
                }
                let result =
                    shared.io("write+fdatasync", || probe.as_mut().map(|p| p.probe_once()));
                let mut st = shared.lock();
                match result {
                    Some(Ok(d)) => {
                        let s = d.as_secs_f64();
                        st.histogram.observe(s);
                        if st.pending.len() < MAX_PENDING {
                            st.pending.push(s);
                        }
                    }
                    Some(Err(e)) if is_erofs(&e) => {
                        st.set_probe(
                            dir,
                            ProbeState::ReadOnly {
                                error: format!("write {}: {e}", file.display()),
                            },
                        );
                        // Nothing can be removed from a read-only filesystem; it goes
                        // when the filesystem is writable again and a new file is made.
                        probe = None;
                    }
                    Some(Err(e)) => {
                        st.errors_total += 1;
                        st.last_error = Some(format!("write {}: {e}", file.display()));
                    }
                    None => {}
                }
                drop(st);
            }
        }
        {
            let mut st = shared.lock();
            st.rounds += 1;
            shared.changed.notify_all();
        }
        // The first round is a burst so the first sample has figures; later ones are
        // spread over the interval, one probe every interval / N, back to back.
        let rest = if cfg.probe && probe.is_some() {
            Duration::ZERO
        } else {
            cfg.interval
        };
        first = false;
        if stopped || shared.pause(rest) {
            break;
        }
    }
    if let Some(p) = probe.take() {
        let path = p.path().to_path_buf();
        if let Err(e) = shared.io("remove", || p.remove()) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove the probe file");
        }
    }
}

/// Makes sure the probe file exists when it may, and is gone when it may not.
/// Returns whether probing can go on this round.
fn prepare(
    dir: &Path,
    file: &Path,
    cfg: &WatchConfig,
    shared: &Shared,
    usage: &Result<FsUsage, ReadError>,
    probe: &mut Option<ProbeFile>,
) -> bool {
    if let Ok(u) = usage {
        // Our own file is already allocated; a new one needs its size on top.
        let needed = cfg.min_free + if probe.is_some() { 0 } else { cfg.file_size };
        if u.avail_bytes < needed {
            if let Some(p) = probe.take() {
                let _ = shared.io("remove", || p.remove());
            }
            shared.lock().set_probe(
                dir,
                ProbeState::Refused {
                    reason: format!(
                        "{} bytes available, the probe needs {} (--fsync.min-free {} plus its file)",
                        u.avail_bytes, needed, cfg.min_free
                    ),
                },
            );
            return false;
        }
    }
    if probe.is_some() {
        return true;
    }
    let created = shared.io("create", || ProbeFile::create(file, cfg.file_size));
    let mut st = shared.lock();
    match created {
        Ok(p) => {
            *probe = Some(p);
            st.set_probe(dir, ProbeState::Running);
            true
        }
        Err(e) if is_erofs(&e) => {
            st.set_probe(
                dir,
                ProbeState::ReadOnly {
                    error: format!("create {}: {e}", file.display()),
                },
            );
            false
        }
        Err(e) => {
            st.errors_total += 1;
            let error = format!("create {} in {}: {e}", file.display(), dir.display());
            st.last_error = Some(error.clone());
            st.set_probe(dir, ProbeState::Failed { error });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let mut h = Histogram::default();
        for s in [0.0001, 0.01, 0.0100001, 0.1, 9.0] {
            h.observe(s);
        }
        let c = h.cumulative();
        assert_eq!(c.len(), BUCKETS.len() + 1);
        let at = |le: f64| c.iter().find(|(b, _)| *b == le).unwrap().1;
        assert_eq!(at(0.00025), 1);
        assert_eq!(at(0.01), 2, "10 ms exactly is within the 10 ms bucket");
        assert_eq!(at(0.025), 3);
        assert_eq!(at(0.1), 4);
        assert_eq!(at(8.0), 4);
        assert_eq!(c.last().unwrap(), &(f64::INFINITY, 5));
        assert_eq!(h.count, 5);
        assert!((h.sum_seconds - 9.1201001).abs() < 1e-9);
    }

    fn cfg(probe: bool) -> WatchConfig {
        WatchConfig {
            probe,
            interval: Duration::from_secs(60),
            probes_per_interval: 5,
            file_size: 64 * 1024,
            min_free: 0,
        }
    }

    #[test]
    fn a_watch_probes_reports_and_removes_its_file_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let w = DirWatch::spawn(dir.path().to_path_buf(), cfg(true)).unwrap();
        w.wait_first_round(Instant::now() + Duration::from_secs(20));
        let r = w.take();
        assert_eq!(r.state, ProbeState::Running);
        assert_eq!(
            r.latencies.len(),
            5,
            "the first round is a burst of N probes"
        );
        assert_eq!(r.histogram.count, 5);
        assert!(r.usage.unwrap().unwrap().size_bytes > 0);
        assert!(r.file.exists());
        assert!(
            w.take().latencies.is_empty(),
            "latencies are handed over once"
        );
        drop(w);
        assert!(!r.file.exists(), "the probe file is removed on stop");
    }

    #[test]
    fn the_probe_refuses_below_the_free_space_floor() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(true);
        c.min_free = u64::MAX / 2;
        let w = DirWatch::spawn(dir.path().to_path_buf(), c).unwrap();
        w.wait_first_round(Instant::now() + Duration::from_secs(20));
        let r = w.take();
        assert!(
            matches!(&r.state, ProbeState::Refused { reason } if reason.contains("--fsync.min-free")),
            "{:?}",
            r.state
        );
        assert!(r.latencies.is_empty());
        assert!(!r.file.exists());
    }

    #[test]
    fn a_missing_directory_is_a_failure_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        let w = DirWatch::spawn(gone, cfg(true)).unwrap();
        w.wait_first_round(Instant::now() + Duration::from_secs(20));
        let r = w.take();
        assert!(r.usage.unwrap().is_err());
        assert!(
            matches!(r.state, ProbeState::Failed { .. }),
            "{:?}",
            r.state
        );
    }
}
