//! The kernel log follower: a dedicated thread reads `/dev/kmsg` from its end as
//! records arrive and keeps a bounded ring of the ones that explain a root cause
//! (OOM victims, conntrack table full, stuck netdev unregistration, filesystems going
//! read-only). Where the device is refused (a device cgroup in an unprivileged
//! container), syslog(2) is polled instead, which needs only CAP_SYSLOG.

use super::Collector;
use crate::collect::pods::{Attribution, PodIndex};
use crate::host::HostRoot;
use crate::kernel::kmsg::{self, EventKind, KernelEvent, LogRecord, Matcher, RecordSplitter};
use crate::sample::{CollectError, Compacted, Sample, Unavailable};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Matching lines kept as evidence.
pub const RING_CAPACITY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    /// `/dev/kmsg`, followed by a thread.
    Kmsg,
    /// syslog(2) `SYSLOG_ACTION_READ_ALL`, polled each interval.
    Syslog,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggedEvent {
    /// When nodediag read it (the log is followed live, so within a second of it
    /// being logged for /dev/kmsg, within an interval for syslog).
    #[serde(serialize_with = "crate::time::serialize")]
    pub seen_at: SystemTime,
    /// Microseconds since boot, from the record.
    pub monotonic_us: Option<u64>,
    pub line: String,
    pub event: KernelEvent,
    /// The pod of an OOM victim's memory cgroup, when it is one.
    pub pod: Option<Attribution>,
    /// The pod attribution was attempted.
    #[serde(skip)]
    pub attributed: bool,
}

/// An OOM victim in a pod cgroup not yet looked up in the kubelet's directories.
fn needs_pod(e: &LoggedEvent) -> bool {
    match &e.event {
        KernelEvent::OomKill(k) if !e.attributed => k
            .memory_cgroup
            .as_deref()
            .is_some_and(|c| crate::collect::pods::parse_cgroup_path(c).is_some()),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KmsgSample {
    pub source: LogSource,
    pub path: Option<String>,
    /// Matching lines, oldest first, at most RING_CAPACITY.
    pub events: Vec<LoggedEvent>,
    /// Matches since nodediag started, by kind (every kind present).
    pub totals: BTreeMap<EventKind, u64>,
    pub records_read: u64,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for KmsgSample {
    const COLLECTOR: &'static str = "kmsg";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Each sample holds the whole ring of matched lines, so every reader (the kmsg
    /// and OOM rules, the evidence other findings get, the API) takes the newest.
    fn compact(&self) -> Compacted<Self> {
        Compacted::Nothing
    }
}

impl KmsgSample {
    pub fn of_kind(&self, kind: EventKind) -> impl DoubleEndedIterator<Item = &LoggedEvent> {
        self.events.iter().filter(move |e| e.event.kind() == kind)
    }
}

/// What the follower thread and the collector share.
#[derive(Debug, Default)]
pub struct Journal {
    events: VecDeque<LoggedEvent>,
    totals: BTreeMap<EventKind, u64>,
    records_read: u64,
    matcher: Matcher,
    /// Set when the follower stopped (read error); the collector restarts it.
    stopped: Option<String>,
}

impl Journal {
    pub fn ingest(&mut self, record: LogRecord, now: SystemTime) {
        self.records_read += 1;
        let Some(event) = self.matcher.feed(&record.message) else {
            return;
        };
        *self.totals.entry(event.kind()).or_default() += 1;
        if self.events.len() == RING_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(LoggedEvent {
            seen_at: now,
            monotonic_us: record.monotonic_us,
            line: record.message,
            event,
            pod: None,
            attributed: false,
        });
    }
}

fn follow(mut file: std::fs::File, journal: Arc<Mutex<Journal>>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut splitter = RecordSplitter::default();
    loop {
        match file.read(&mut buf) {
            // A FIFO whose writer closed; /dev/kmsg never returns 0.
            Ok(0) => {
                lock(&journal).stopped = Some("the kernel log reached its end".into());
                return;
            }
            Ok(n) => {
                let now = SystemTime::now();
                let mut j = lock(&journal);
                splitter.push(&buf[..n], |r| j.ingest(r, now));
            }
            // EPIPE: records were overwritten before we read them; the next read
            // continues with the oldest record still there.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                lock(&journal).stopped = Some(format!("reading the kernel log: {e}"));
                return;
            }
        }
    }
}

fn lock(j: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where syslog(2) polling left off: the last record's timestamp and text.
#[derive(Debug, Default)]
struct SyslogCursor {
    last: Option<(Option<u64>, String)>,
}

impl SyslogCursor {
    /// The records after the cursor; the first call only sets it (start at the end).
    fn new_records(&mut self, buffer: &str, first: bool) -> Vec<LogRecord> {
        let records: Vec<LogRecord> = buffer.lines().filter_map(kmsg::parse_syslog_line).collect();
        let start = match &self.last {
            _ if first => records.len(),
            None => 0,
            Some((ts, msg)) => records
                .iter()
                .rposition(|r| r.monotonic_us == *ts && &r.message == msg)
                .map(|i| i + 1)
                // The cursor scrolled out of the buffer: everything is new, but only
                // records newer than it by timestamp.
                .unwrap_or_else(|| {
                    records
                        .iter()
                        .position(|r| r.monotonic_us > *ts)
                        .unwrap_or(records.len())
                }),
        };
        if let Some(r) = records.last() {
            self.last = Some((r.monotonic_us, r.message.clone()));
        }
        records.into_iter().skip(start).collect()
    }
}

enum State {
    NotStarted,
    Following(Arc<Mutex<Journal>>),
    Polling(Arc<Mutex<Journal>>, SyslogCursor),
}

pub struct KmsgCollector {
    root: HostRoot,
    path: PathBuf,
    state: State,
    /// What the last pod index read lacked (no kubelet log directories).
    pod_index_missing: Vec<Unavailable>,
}

impl KmsgCollector {
    pub fn new(root: HostRoot, path: PathBuf) -> Self {
        Self {
            root,
            path,
            state: State::NotStarted,
            pod_index_missing: Vec::new(),
        }
    }

    fn start(&mut self) -> Result<(), CollectError> {
        let open_err = match kmsg::open_at_end(&self.path) {
            Ok(file) => {
                let journal = Arc::new(Mutex::new(Journal::default()));
                let j = journal.clone();
                std::thread::Builder::new()
                    .name("nodediag-kmsg".into())
                    .spawn(move || follow(file, j))
                    .map_err(|e| CollectError::Failed(format!("kernel log thread: {e}")))?;
                self.state = State::Following(journal);
                return Ok(());
            }
            Err(e) => e,
        };
        if open_err.is_not_found() {
            // No device at all: these roots are not a live host (or --path.kmsg is
            // wrong); syslog(2) would read our own kernel, not the one they describe.
            return Err(CollectError::Unavailable(Unavailable::new(
                "kernel log",
                format!(
                    "{}: no such device: mount the host's /dev, or set --path.kmsg",
                    self.path.display()
                ),
            )));
        }
        match kmsg::read_syslog_buffer() {
            Ok(buffer) => {
                let mut cursor = SyslogCursor::default();
                cursor.new_records(&buffer, true);
                self.state = State::Polling(Arc::new(Mutex::new(Journal::default())), cursor);
                tracing::info!(path = %self.path.display(), error = %open_err.source, "kernel log device refused; polling syslog(2)");
                Ok(())
            }
            Err(syslog_err) => Err(CollectError::Unavailable(Unavailable::new(
                "kernel log",
                format!(
                    "{open_err}; syslog(2): {syslog_err}: run privileged, or grant CAP_SYSLOG \
                     (and allow the /dev/kmsg device, char 1:11), or set --path.kmsg"
                ),
            ))),
        }
    }
}

impl Collector for KmsgCollector {
    type Sample = KmsgSample;

    fn collect(&mut self) -> Result<KmsgSample, CollectError> {
        if matches!(self.state, State::NotStarted) {
            self.start()?;
        }
        let (journal, source) = match &mut self.state {
            State::Following(j) => (j.clone(), LogSource::Kmsg),
            State::Polling(j, cursor) => {
                let buffer = kmsg::read_syslog_buffer()
                    .map_err(|e| CollectError::Failed(format!("syslog(2) read: {e}")))?;
                let now = SystemTime::now();
                let mut guard = lock(j);
                for r in cursor.new_records(&buffer, false) {
                    guard.ingest(r, now);
                }
                (j.clone(), LogSource::Syslog)
            }
            State::NotStarted => unreachable!("started above"),
        };
        if let Some(reason) = lock(&journal).stopped.clone() {
            self.state = State::NotStarted;
            return Err(CollectError::Failed(format!(
                "{}: {reason}; reopening at the next interval",
                self.path.display()
            )));
        }
        // OOM victims are named once, when first published: the pod's log
        // directories are removed with the pod, the kernel log line stays. The lock
        // is held from the naming to the copy below, so that no victim the follower
        // adds in between is published unnamed.
        let mut guard = lock(&journal);
        if guard.events.iter().any(needs_pod) {
            // The directories are read without it: the follower goes on meanwhile.
            drop(guard);
            let (index, missing) = PodIndex::read(&self.root);
            self.pod_index_missing = missing;
            guard = lock(&journal);
            for e in guard.events.iter_mut().filter(|e| needs_pod(e)) {
                if let KernelEvent::OomKill(k) = &e.event {
                    e.pod = k.memory_cgroup.as_deref().and_then(|c| index.attribute(c));
                }
                e.attributed = true;
            }
        }
        let events: Vec<LoggedEvent> = guard.events.iter().cloned().collect();
        let mut totals: BTreeMap<EventKind, u64> =
            EventKind::ALL.into_iter().map(|k| (k, 0)).collect();
        totals.extend(guard.totals.iter().map(|(k, v)| (*k, *v)));
        let records_read = guard.records_read;
        drop(guard);
        let unavailable = self.pod_index_missing.clone();
        Ok(KmsgSample {
            source,
            path: (source == LogSource::Kmsg).then(|| self.path.display().to_string()),
            events,
            totals,
            records_read,
            unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_totals_keep_counting() {
        let mut j = Journal::default();
        let now = SystemTime::now();
        for i in 0..(RING_CAPACITY as u64 + 10) {
            j.ingest(
                LogRecord {
                    level: 4,
                    seq: Some(i),
                    monotonic_us: Some(i),
                    message: "nf_conntrack: table full, dropping packet".into(),
                },
                now,
            );
            j.ingest(
                LogRecord {
                    level: 6,
                    seq: Some(i),
                    monotonic_us: Some(i),
                    message: "eth0: link up".into(),
                },
                now,
            );
        }
        assert_eq!(j.events.len(), RING_CAPACITY);
        assert_eq!(
            j.totals[&EventKind::ConntrackTableFull],
            RING_CAPACITY as u64 + 10
        );
        assert_eq!(j.records_read, 2 * (RING_CAPACITY as u64 + 10));
        assert_eq!(j.events.front().unwrap().monotonic_us, Some(10));
    }

    #[test]
    fn oom_victims_keep_their_pod_after_its_directories_are_gone() {
        use std::io::Write;
        const UID: &str = "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
        const CID: &str = "4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join(format!("var/log/pods/shop_cart-0_{UID}"));
        std::fs::create_dir_all(&pods).unwrap();
        let fifo = dir.path().join("kmsg");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Read-write so opening never blocks and the follower never sees EOF.
        let mut w = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let root = HostRoot {
            proc: dir.path().into(),
            sys: dir.path().into(),
            rootfs: dir.path().into(),
        };
        let mut c = KmsgCollector::new(root, fifo);
        let first = c.collect().unwrap();
        assert!(first.events.is_empty());
        let cg = format!("/kubepods/burstable/pod{UID}/{CID}");
        writeln!(w, "6,1,100,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg={cg},task_memcg={cg},task=app,pid=9,uid=0").unwrap();
        writeln!(
            w,
            "3,2,101,-;Memory cgroup out of memory: Killed process 9 (app) total-vm:1kB"
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let sample = loop {
            let k = c.collect().unwrap();
            if k.records_read == 2 {
                break k;
            }
            assert!(std::time::Instant::now() < deadline, "records not read");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let pod = sample.events[0].pod.clone().expect("attributed");
        assert_eq!(pod.pod.as_deref(), Some("cart-0"));
        assert_eq!(pod.container_id.as_deref(), Some(CID));
        // The kubelet's directories for containers were never there: said so.
        assert!(sample
            .unavailable
            .iter()
            .any(|u| u.what.contains("container log")));
        std::fs::remove_dir_all(&pods).unwrap();
        let again = c.collect().unwrap();
        assert_eq!(again.events[0].pod, Some(pod));
    }

    #[test]
    fn syslog_polling_starts_at_the_end_and_reads_only_new_lines() {
        let mut c = SyslogCursor::default();
        let first =
            "<6>[    1.000000] boot\n<4>[    2.000000] nf_conntrack: table full, dropping packet\n";
        assert!(c.new_records(first, true).is_empty());
        let second = format!("{first}<4>[    3.000000] unregister_netdevice: waiting for lo to become free. Usage count = 1\n");
        let new = c.new_records(&second, false);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].monotonic_us, Some(3_000_000));
        assert!(c.new_records(&second, false).is_empty());
        // The buffer wrapped: the cursor line is gone, newer ones are kept.
        let wrapped = "<4>[    3.500000] a\n<4>[    4.000000] b\n";
        assert_eq!(c.new_records(wrapped, false).len(), 2);
    }
}
