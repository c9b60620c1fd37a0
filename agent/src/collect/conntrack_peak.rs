//! The peak of the conntrack entry count between two samples. Entries come and go
//! faster than a collector samples, so a table that fills for a few seconds reads
//! 474 of 512 at the instant of the sample while the kernel logs "table full". A
//! dedicated thread reads `nf_conntrack_count` (one small file, a cheap read) every
//! period and keeps the peak, and when the count was at or above a limit, until the
//! collector takes the window.

use crate::host::HostRoot;
use crate::kernel::{read_from_start, read_held, read_u64, ReadError};
use serde::Serialize;
use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// What the reads of one window saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeakWindow {
    pub started_at: SystemTime,
    pub reads: u64,
    /// Reads that failed (file missing, not an integer); the peak ignores them.
    pub failed_reads: u64,
    pub last_error: Option<String>,
    pub peak: Option<u64>,
    pub peak_at: Option<SystemTime>,
    /// The most recent successful read, in this window or before it.
    pub latest: Option<u64>,
    /// The limit in force at the end of the window (see `PeakTracker::set_limit`).
    pub limit: Option<u64>,
    /// Reads at or above the limit, and the first and last of them: a table that
    /// filled and drained within the window says when it was full.
    pub reads_at_limit: u64,
    pub first_at_limit: Option<SystemTime>,
    pub last_at_limit: Option<SystemTime>,
}

impl PeakWindow {
    pub fn new(started_at: SystemTime, latest: Option<u64>, limit: Option<u64>) -> PeakWindow {
        PeakWindow {
            started_at,
            reads: 0,
            failed_reads: 0,
            last_error: None,
            peak: None,
            peak_at: None,
            latest,
            limit,
            reads_at_limit: 0,
            first_at_limit: None,
            last_at_limit: None,
        }
    }

    /// One successful read of `count` at `at`.
    pub fn observe(&mut self, count: u64, at: SystemTime) {
        self.reads += 1;
        self.latest = Some(count);
        if self.peak.is_none_or(|p| count > p) {
            self.peak = Some(count);
            self.peak_at = Some(at);
        }
        if self.limit.is_some_and(|l| count >= l) {
            self.reads_at_limit += 1;
            self.first_at_limit.get_or_insert(at);
            self.last_at_limit = Some(at);
        }
    }

    pub fn fail(&mut self, error: String) {
        self.failed_reads += 1;
        self.last_error = Some(error);
    }

    /// Whether any read of the window reached the limit.
    pub fn reached_limit(&self) -> bool {
        self.reads_at_limit > 0
    }
}

struct State {
    window: PeakWindow,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a window half-updated in a way
        // that matters: keep going with what is there.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reading thread; stopped (promptly, not after its period) on `stop` or drop.
pub struct PeakTracker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PeakTracker {
    /// `<procfs>/sys/net/netfilter/nf_conntrack_count` of the host.
    pub fn count_path(root: &HostRoot) -> PathBuf {
        root.proc(&["sys", "net", "netfilter", "nf_conntrack_count"])
    }

    /// Starts reading the host's count every `period`, the first read right away.
    pub fn start(root: &HostRoot, period: Duration, limit: Option<u64>) -> std::io::Result<Self> {
        Self::start_reading(Self::count_path(root), period, limit)
    }

    /// Starts reading any file holding one integer (fixtures in tests).
    pub fn start_reading(
        path: PathBuf,
        period: Duration,
        limit: Option<u64>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                window: PeakWindow::new(SystemTime::now(), None, limit),
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("conntrack-peak".into())
                .spawn(move || read_loop(&shared, &path, period))?
        };
        Ok(PeakTracker {
            shared,
            thread: Some(thread),
        })
    }

    /// The count at or above which a read is "at the limit" (e.g. the full ratio of
    /// nf_conntrack_max, which the collector knows); applies from the next read.
    pub fn set_limit(&self, limit: Option<u64>) {
        self.shared.lock().window.limit = limit;
    }

    /// The window so far, and a new one starts now (carrying the latest count and
    /// the limit, not the peak).
    pub fn take(&self) -> PeakWindow {
        let mut state = self.shared.lock();
        let next = PeakWindow::new(SystemTime::now(), state.window.latest, state.window.limit);
        std::mem::replace(&mut state.window, next)
    }

    /// The window so far, left running.
    pub fn peek(&self) -> PeakWindow {
        self.shared.lock().window.clone()
    }

    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PeakTracker {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The count file, held open between reads: opening it walks `/proc/sys` down to the
/// namespace's sysctl table, most of a read's cost at one read a second. A held read
/// that fails is made again by path, which names what is wrong, and the file is
/// opened anew for the next.
struct CountFile<'a> {
    path: &'a Path,
    held: Option<File>,
}

impl CountFile<'_> {
    fn read(&mut self) -> Result<u64, ReadError> {
        let parse = |f: &File| {
            read_from_start(f, |text| text.trim().parse())?
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        match read_held(&mut self.held, true, || File::open(self.path), parse) {
            Some(count) => Ok(count),
            None => read_u64(self.path),
        }
    }
}

fn read_loop(shared: &Shared, path: &Path, period: Duration) {
    let mut file = CountFile { path, held: None };
    loop {
        let read = file.read();
        let at = SystemTime::now();
        let mut state = shared.lock();
        if state.stop {
            return;
        }
        match read {
            Ok(count) => state.window.observe(count, at),
            Err(e) => state.window.fail(e.to_string()),
        }
        // Sleeps the period unless told to stop; a spurious wake-up only reads early.
        let (state, _) = shared
            .wake
            .wait_timeout_while(state, period, |s| !s.stop)
            .unwrap_or_else(|e| e.into_inner());
        if state.stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn a_window_keeps_the_peak_and_when_it_was_at_the_limit() {
        let mut w = PeakWindow::new(t(0), None, Some(500));
        for (i, count) in [100, 480, 512, 505, 300, 120].into_iter().enumerate() {
            w.observe(count, t(i as u64 + 1));
        }
        assert_eq!(w.peak, Some(512));
        assert_eq!(w.peak_at, Some(t(3)));
        assert_eq!(w.latest, Some(120), "it drained before the window ended");
        assert_eq!(w.reads_at_limit, 2);
        assert_eq!(w.first_at_limit, Some(t(3)));
        assert_eq!(w.last_at_limit, Some(t(4)));
        assert!(w.reached_limit());
    }

    #[test]
    fn the_first_of_equal_peaks_is_kept_and_no_limit_means_never_at_it() {
        let mut w = PeakWindow::new(t(0), Some(7), None);
        w.observe(9, t(1));
        w.observe(9, t(2));
        assert_eq!(w.peak_at, Some(t(1)));
        assert!(!w.reached_limit());
        w.fail("bad".into());
        assert_eq!((w.reads, w.failed_reads), (2, 1));
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_thread_follows_a_changing_file_and_take_starts_a_new_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nf_conntrack_count");
        std::fs::write(&path, "100\n").unwrap();
        let tracker =
            PeakTracker::start_reading(path.clone(), Duration::from_millis(10), Some(400)).unwrap();
        wait_until("the first read", || tracker.peek().peak == Some(100));
        std::fs::write(&path, "450\n").unwrap();
        wait_until("the peak", || tracker.peek().peak == Some(450));
        std::fs::write(&path, "200\n").unwrap();
        wait_until("the drain", || tracker.peek().latest == Some(200));
        let w = tracker.take();
        assert_eq!(w.peak, Some(450), "the peak outlives the drain");
        assert!(w.reached_limit());
        assert!(w.first_at_limit.unwrap() <= w.last_at_limit.unwrap());

        let next = tracker.peek();
        assert_eq!(next.latest, Some(200), "carried over");
        assert_eq!(next.peak, None, "not carried over");
        wait_until("a read in the new window", || {
            tracker.peek().peak == Some(200)
        });
        assert!(!tracker.peek().reached_limit());

        tracker.set_limit(Some(150));
        wait_until("the new limit to apply", || tracker.peek().reached_limit());
    }

    #[test]
    fn a_malformed_or_missing_file_is_a_failed_read_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nf_conntrack_count");
        std::fs::write(&path, "garbage").unwrap();
        let tracker =
            PeakTracker::start_reading(path.clone(), Duration::from_millis(10), None).unwrap();
        wait_until("a failed read", || tracker.peek().failed_reads >= 1);
        let w = tracker.peek();
        assert_eq!(w.peak, None);
        assert!(
            w.last_error
                .as_deref()
                .unwrap()
                .contains("nf_conntrack_count"),
            "{w:?}"
        );
        std::fs::remove_file(&path).unwrap();
        let before = tracker.peek().failed_reads;
        wait_until("a failed read of a missing file", || {
            tracker.peek().failed_reads > before
        });
        std::fs::write(&path, "42").unwrap();
        wait_until("recovery", || tracker.peek().peak == Some(42));
    }

    #[test]
    fn stopping_does_not_wait_for_the_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nf_conntrack_count");
        std::fs::write(&path, "1").unwrap();
        let tracker = PeakTracker::start_reading(path, Duration::from_secs(3600), None).unwrap();
        wait_until("the first read", || tracker.peek().reads == 1);
        let started = Instant::now();
        tracker.stop();
        // A generous bound: the point is "not an hour", not a timing claim.
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
