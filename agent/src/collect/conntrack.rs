//! Conntrack table usage and failure counters of the host network namespace, the
//! peak of the entry count between samples, and, when the table is high, a dump of
//! it (who fills it).
//!
//! Entries come and go faster than a sample every 15 s sees: a table that was full
//! for a few seconds reads 474 of 512 at the instant of the sample. So a thread reads
//! the count every `--conntrack.peak-interval` (one small file) and each sample
//! carries the peak since the previous one, with when the count was at the full
//! level. When the peak reaches the high level the collector dumps the table once
//! (then at most once per rule window), so the report can name the pods filling it
//! while they still do.

use super::conntrack_dumper::{TopDump, TopDumper, Trigger};
use super::conntrack_peak::{PeakTracker, PeakWindow};
use super::Collector;
use crate::host::HostRoot;
use crate::kernel::conntrack::{self, ConntrackStats};
use crate::kernel::ctnetlink;
use crate::sample::{CollectError, Sample, Unavailable};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsSource {
    Netlink,
    Procfs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConntrackSample {
    pub entries: u64,
    pub max: u64,
    pub buckets: Option<u64>,
    /// Per-CPU statistics summed; None when neither ctnetlink nor the proc file answers.
    pub stats: Option<ConntrackStats>,
    pub stats_source: Option<StatsSource>,
    /// The entry count read every peak interval since the previous sample (this
    /// sample's own read included).
    pub peak: Option<CountPeak>,
    /// The collector's latest dump of the table, made when the table reached its
    /// high level: its counts are ranked where owners of addresses are known. Only
    /// these, at most one per rule window, so the history holds one or two dumps
    /// whatever the endpoint is asked.
    pub top: Option<Arc<TopDump>>,
    pub unavailable: Vec<Unavailable>,
}

/// What the count reads between two samples saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CountPeak {
    /// The highest count read, and when.
    pub entries: u64,
    #[serde(serialize_with = "crate::time::serialize")]
    pub at: SystemTime,
    /// Start of the reads: the previous sample.
    #[serde(serialize_with = "crate::time::serialize")]
    pub since: SystemTime,
    pub reads: u64,
    /// Reads that failed (file gone, not a number); the peak ignores them.
    pub failed_reads: u64,
    /// The count a read had to reach to be at the full level (the full ratio of
    /// nf_conntrack_max), and the reads that did, first and last.
    pub full_level: Option<u64>,
    pub reads_full: u64,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub full_from: Option<SystemTime>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub full_until: Option<SystemTime>,
}

impl CountPeak {
    fn from_window(w: &PeakWindow, fallback: (u64, SystemTime)) -> CountPeak {
        let (entries, at) = match (w.peak, w.peak_at) {
            (Some(p), Some(at)) => (p, at),
            _ => fallback,
        };
        CountPeak {
            entries,
            at,
            since: w.started_at,
            reads: w.reads,
            failed_reads: w.failed_reads,
            full_level: w.limit,
            reads_full: w.reads_at_limit,
            full_from: w.first_at_limit,
            full_until: w.last_at_limit,
        }
    }
}

/// The levels the collector watches, as fractions of nf_conntrack_max: the signal
/// hands over the rule thresholds, so "full" means the same to the reads and to
/// the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Reads at or above it are "full" (their first and last time are kept).
    pub full_ratio: f64,
    /// A peak at or above it makes the collector dump the table.
    pub high_ratio: f64,
}

/// The smallest count whose ratio to `max` reaches `ratio`, compared as the rules
/// compare (`count / max >= ratio` in f64), so both agree on the boundary.
pub fn level(ratio: f64, max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let reaches = |n: u64| n as f64 / max as f64 >= ratio;
    let mut n = ((ratio * max as f64).floor().max(0.0) as u64).min(max);
    while n > 0 && reaches(n - 1) {
        n -= 1;
    }
    while !reaches(n) && n <= max {
        n += 1;
    }
    n
}

impl Sample for ConntrackSample {
    const COLLECTOR: &'static str = "conntrack";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }
}

impl ConntrackSample {
    pub fn usage_ratio(&self) -> Option<f64> {
        (self.max > 0).then(|| self.entries as f64 / self.max as f64)
    }

    /// Packets the table could not take: `drop` plus `early_drop`.
    pub fn dropped(&self) -> Option<u64> {
        let s = self.stats?;
        Some(s.drop.unwrap_or(0) + s.early_drop.unwrap_or(0))
    }

    /// The highest count of the sample: its peak, else its own read.
    pub fn peak_entries(&self) -> u64 {
        self.peak
            .as_ref()
            .map_or(self.entries, |p| p.entries.max(self.entries))
    }
}

/// How the collector reads between samples and when it dumps.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub levels: Levels,
    /// Period of the count reads; zero turns them off.
    pub peak_interval: Duration,
    /// At most one dump of the collector's own per this (the rule window).
    pub dump_spacing: Duration,
}

pub struct ConntrackCollector {
    root: HostRoot,
    netlink: bool,
    watch: Watch,
    /// Started at the first collection, so a collector built and never run (a
    /// disabled one, `check` of other findings) starts no thread.
    tracker: Option<PeakTracker>,
    dumper: Arc<TopDumper>,
    last_dump: Option<Instant>,
    top: Option<Arc<TopDump>>,
}

impl ConntrackCollector {
    pub fn new(root: HostRoot, netlink: bool, watch: Watch, dumper: Arc<TopDumper>) -> Self {
        Self {
            root,
            netlink,
            watch,
            tracker: None,
            dumper,
            last_dump: None,
            top: None,
        }
    }

    /// The reads since the previous sample, this sample's own read folded in.
    fn peak(
        &mut self,
        entries: u64,
        max: u64,
        unavailable: &mut Vec<Unavailable>,
    ) -> Option<CountPeak> {
        if self.watch.peak_interval.is_zero() {
            return None;
        }
        let now = SystemTime::now();
        let full = Some(level(self.watch.levels.full_ratio, max));
        let mut window = match &self.tracker {
            Some(t) => {
                t.set_limit(full);
                t.take()
            }
            None => {
                match PeakTracker::start(&self.root, self.watch.peak_interval, full) {
                    Ok(t) => self.tracker = Some(t),
                    Err(e) => unavailable.push(Unavailable::new(
                        "conntrack count peak",
                        format!("{e}: no thread for the reads between samples; the peak is this sample's count"),
                    )),
                }
                // The reads start now: this sample is the first of the window.
                PeakWindow::new(now, None, full)
            }
        };
        window.observe(entries, now);
        if window.failed_reads > 0 {
            if let Some(e) = &window.last_error {
                unavailable.push(Unavailable::new(
                    "conntrack count peak",
                    format!(
                        "{} of {} reads failed, the last with {e}",
                        window.failed_reads,
                        window.reads + window.failed_reads
                    ),
                ));
            }
        }
        Some(CountPeak::from_window(&window, (entries, now)))
    }

    /// Dumps the table when the peak is high and the last dump is older than the
    /// spacing (a request's of the last seconds serves); the latest such dump.
    fn top(
        &mut self,
        peak: u64,
        max: u64,
        unavailable: &mut Vec<Unavailable>,
    ) -> Option<Arc<TopDump>> {
        let high = peak >= level(self.watch.levels.high_ratio, max) && max > 0;
        let due = self
            .last_dump
            .is_none_or(|t| t.elapsed() >= self.watch.dump_spacing);
        if self.netlink && high && due {
            self.last_dump = Some(Instant::now());
            match self.dumper.fetch(Trigger::Threshold) {
                Ok(fetched) => self.top = Some(fetched.dump),
                Err(e) => unavailable.push(match e {
                    super::conntrack_dumper::DumpError::Unavailable(u) => u,
                    other => Unavailable::new("conntrack dump", other.to_string()),
                }),
            }
        }
        self.top.clone()
    }
}

impl Collector for ConntrackCollector {
    type Sample = ConntrackSample;

    fn collect(&mut self) -> Result<ConntrackSample, CollectError> {
        let table = conntrack::read_table(&self.root).map_err(|e| {
            if e.is_not_found() {
                CollectError::Unavailable(Unavailable::new(
                    "conntrack",
                    format!(
                        "{} does not exist: nf_conntrack is not loaded, so nothing is tracked \
                         (modprobe nf_conntrack if kube-proxy should be using it)",
                        e.path.display()
                    ),
                ))
            } else {
                e.into()
            }
        })?;
        let mut unavailable = Vec::new();
        let mut stats = None;
        let mut source = None;
        if self.netlink {
            match ctnetlink::read_stats() {
                Ok(s) => {
                    stats = Some(s);
                    source = Some(StatsSource::Netlink);
                }
                Err(e) => unavailable.push(Unavailable::new(
                    "ctnetlink statistics",
                    format!(
                        "{e}: needs CAP_NET_ADMIN; falling back to /proc/net/stat/nf_conntrack"
                    ),
                )),
            }
        }
        if stats.is_none() {
            match conntrack::read_proc_stats(&self.root) {
                Ok(s) => {
                    stats = Some(s);
                    source = Some(StatsSource::Procfs);
                }
                // Only a missing file is about the kernel's build; one that does not
                // parse is named with its problem.
                Err(e) if e.is_not_found() => unavailable.push(Unavailable::new(
                    "/proc/net/stat/nf_conntrack",
                    format!(
                        "{e}: kernels since 5.15.65 are often built without \
                         CONFIG_NF_CONNTRACK_PROCFS; grant CAP_NET_ADMIN for ctnetlink"
                    ),
                )),
                Err(e) => unavailable.push(Unavailable::unreadable(&e)),
            }
        }
        let peak = self.peak(table.entries, table.max, &mut unavailable);
        let highest = peak.as_ref().map_or(table.entries, |p| p.entries);
        let top = self.top(highest, table.max, &mut unavailable);
        Ok(ConntrackSample {
            entries: table.entries,
            max: table.max,
            buckets: match conntrack::read_buckets(&self.root) {
                Ok(b) => b,
                Err(e) => {
                    unavailable.push(Unavailable::unreadable(&e));
                    None
                }
            },
            stats,
            stats_source: source,
            peak,
            top,
            unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::conntrack_dumper::TopBudget;

    #[test]
    fn the_level_agrees_with_the_rules_comparison() {
        for max in [1u64, 7, 64, 512, 1000, 262_144, 1 << 40] {
            for ratio in [0.0, 0.05, 0.8, 0.95, 0.999, 1.0] {
                let n = level(ratio, max);
                assert!(n as f64 / max as f64 >= ratio, "{ratio} of {max}: {n}");
                if n > 0 {
                    assert!(
                        ((n - 1) as f64 / max as f64) < ratio,
                        "{ratio} of {max}: {n}"
                    );
                }
            }
        }
        assert_eq!(level(0.95, 1000), 950);
        assert_eq!(level(0.8, 512), 410);
        assert_eq!(level(0.95, 0), 0);
    }

    fn fixture(count: u64, max: u64) -> (tempfile::TempDir, HostRoot) {
        let dir = tempfile::tempdir().unwrap();
        let nf = dir.path().join("sys/net/netfilter");
        std::fs::create_dir_all(&nf).unwrap();
        std::fs::write(nf.join("nf_conntrack_count"), format!("{count}\n")).unwrap();
        std::fs::write(nf.join("nf_conntrack_max"), format!("{max}\n")).unwrap();
        let root = HostRoot {
            proc: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        (dir, root)
    }

    fn collector(root: &HostRoot, peak_interval: Duration) -> ConntrackCollector {
        let watch = Watch {
            levels: Levels {
                full_ratio: 0.95,
                high_ratio: 0.8,
            },
            peak_interval,
            dump_spacing: Duration::from_secs(300),
        };
        let budget = TopBudget {
            max_entries: 10,
            timeout: Duration::from_millis(100),
        };
        let dumper = Arc::new(TopDumper::new(root.clone(), false, budget));
        ConntrackCollector::new(root.clone(), false, watch, dumper)
    }

    #[test]
    fn a_count_that_filled_and_drained_between_samples_is_in_the_next_sample() {
        let (dir, root) = fixture(100, 1000);
        let count = dir.path().join("sys/net/netfilter/nf_conntrack_count");
        let mut c = collector(&root, Duration::from_millis(5));
        let first = c.collect().unwrap();
        let p = first.peak.as_ref().unwrap();
        assert_eq!((p.entries, p.full_level), (100, Some(950)));
        assert_eq!(p.reads_full, 0);
        // Filled, seen by the reads, drained before the next sample.
        std::fs::write(&count, "990").unwrap();
        let tracker = c.tracker.as_ref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tracker.peek().peak != Some(990) {
            assert!(Instant::now() < deadline, "the reads never saw 990");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(&count, "120").unwrap();
        let second = c.collect().unwrap();
        assert_eq!(second.entries, 120);
        let p = second.peak.as_ref().unwrap();
        assert_eq!(p.entries, 990);
        assert!(p.reads_full >= 1);
        assert!(p.full_from.unwrap() <= p.full_until.unwrap());
        assert_eq!(second.peak_entries(), 990);
        // Without netlink no dump is tried, and nothing says it failed.
        assert!(second.top.is_none());
        assert!(second.unavailable.iter().all(|u| !u.what.contains("dump")));
    }

    #[test]
    fn peak_reads_off_means_no_thread_and_no_peak() {
        let (_dir, root) = fixture(5, 10);
        let mut c = collector(&root, Duration::ZERO);
        let s = c.collect().unwrap();
        assert!(s.peak.is_none());
        assert!(c.tracker.is_none());
        assert_eq!(s.peak_entries(), 5);
    }
}
