//! The latest samples of each collector, a short history for rates, each collector's
//! status, and the current findings. Scrapes and API calls only read from here.

use crate::finding::Finding;
use crate::sample::{AnySample, CollectError, Compacted, Sample, Unavailable};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Bounds memory whatever the window/interval ratio.
const MAX_HISTORY: usize = 512;

/// Older samples of a [`Sample::THINNABLE`] collector are kept no closer together
/// than the retention divided by this: a sample every 13.6 s of a 5 minute window
/// shows how counters rose as well as one every second, at a fraction of the memory
/// (at 500 pods and `--interval 1s`, 300 samples of every cgroup's counters). So a
/// short interval's window starts about where the default interval's does. The step
/// stays under 15 s so that collections every 15 s, a few milliseconds early or late,
/// are all kept.
const KEPT_PER_RETENTION: u32 = 22;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Enabled, not sampled yet.
    Pending,
    Ok,
    Unavailable {
        what: String,
        hint: String,
    },
    Error {
        message: String,
    },
    /// A collection has not returned for longer than the collector timeout.
    Hung {
        #[serde(serialize_with = "crate::time::serialize")]
        since: SystemTime,
    },
}

#[derive(Debug, Clone)]
pub struct Stamped {
    pub at: SystemTime,
    pub sample: Arc<dyn AnySample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CollectorState {
    pub status: Status,
    #[serde(serialize_with = "crate::time::serialize_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub last_attempt: Option<SystemTime>,
    #[serde(serialize_with = "crate::time::serialize_duration_opt")]
    pub last_duration: Option<Duration>,
    pub runs_total: u64,
    pub failures_total: u64,
    /// CPU (user and system) of every collection so far, on the collection thread and
    /// the helper threads it joined.
    #[serde(
        rename = "cpu_seconds_total",
        serialize_with = "crate::time::serialize_duration"
    )]
    pub cpu_total: Duration,
    #[serde(skip)]
    pub history: VecDeque<Stamped>,
}

impl CollectorState {
    fn new(interval: Duration) -> Self {
        Self {
            status: Status::Pending,
            interval,
            last_attempt: None,
            last_duration: None,
            runs_total: 0,
            failures_total: 0,
            cpu_total: Duration::ZERO,
            history: VecDeque::new(),
        }
    }

    pub fn latest(&self) -> Option<&Stamped> {
        self.history.back()
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

/// How one signal's rules fared at their last evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RulesState {
    /// Why the last evaluation failed (its findings are then unknown); None when it ran.
    pub error: Option<String>,
    pub failures_total: u64,
}

/// Something the agent set up on the host for itself at start (its notrack table):
/// whether it is in place, and what it is, for the API and the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    #[serde(flatten)]
    pub state: SetupState,
    /// What is in place or was asked for (`table`, `ports`, ...).
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SetupState {
    Installed,
    /// Turned off by a flag.
    Disabled,
    /// The host cannot have it (a capability or kernel module missing).
    Unavailable {
        what: String,
        hint: String,
    },
    Error {
        message: String,
    },
}

/// A consistent copy of the store for rules and renderers; samples are shared, not
/// copied.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node: String,
    pub collectors: BTreeMap<&'static str, CollectorState>,
    pub findings: Arc<Vec<Finding>>,
    pub rules: BTreeMap<&'static str, RulesState>,
    /// The rule window (--window), for readers that show rates over it.
    pub window: Duration,
    /// What the agent set up on the host for itself, by name (`notrack`).
    pub setup: BTreeMap<&'static str, Setup>,
}

impl Snapshot {
    /// The samples of a collector currently sampling fine, oldest first. A collector
    /// in error contributes nothing, so no rule judges the node on stale data.
    pub fn history<T: Sample>(&self) -> Vec<(SystemTime, &T)> {
        match self.collectors.get(T::COLLECTOR) {
            Some(state) if state.is_ok() => state
                .history
                .iter()
                .filter_map(|s| Some((s.at, s.sample.downcast::<T>()?)))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn latest<T: Sample>(&self) -> Option<(SystemTime, &T)> {
        self.history::<T>().pop()
    }

    /// What encoding a signal's families reads: its collector's state with the
    /// latest sample alone, and nothing of the other collectors, findings or rules.
    /// Cheap to take under the lock, so the encoding itself runs outside it.
    pub fn latest_of(&self, name: &str) -> Snapshot {
        let collectors = self
            .collectors
            .get_key_value(name)
            .map(|(&name, c)| {
                let state = CollectorState {
                    status: c.status.clone(),
                    history: c.history.back().cloned().into_iter().collect(),
                    ..*c
                };
                (name, state)
            })
            .into_iter()
            .collect();
        Snapshot {
            node: self.node.clone(),
            collectors,
            window: self.window,
            ..Snapshot::default()
        }
    }

    /// Collectors that cannot yet be relied on: never sampled (pending, hung or failing
    /// since start). One whose kernel feature is missing is settled, not waiting.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.collectors
            .iter()
            .filter(|(_, c)| {
                c.history.is_empty() && !matches!(c.status, Status::Unavailable { .. })
            })
            .map(|(n, _)| *n)
            .collect()
    }

    /// Parts of the latest samples that exist on the host but did not read, by
    /// collector: what a report cannot vouch for.
    pub fn unreadable_parts(&self) -> impl Iterator<Item = (&'static str, &Unavailable)> {
        self.collectors.iter().flat_map(|(name, c)| {
            c.latest()
                .filter(|_| c.is_ok())
                .into_iter()
                .flat_map(|s| s.sample.unavailable().iter())
                .filter(|u| u.unreadable)
                .map(move |u| (*name, u))
        })
    }

    pub fn ready(&self) -> bool {
        self.not_ready().is_empty()
    }

    /// Signals whose rules failed at the last evaluation.
    pub fn failed_rules(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.rules
            .iter()
            .filter_map(|(n, r)| Some((*n, r.error.as_deref()?)))
    }
}

pub struct Store {
    inner: RwLock<Snapshot>,
    /// History older than this is dropped: the rule window plus slack for an interval.
    retention: Duration,
    /// Findings were evaluated on samples of every collector: until then the agent is
    /// not ready, though every collector has sampled (findings are evaluated a
    /// moment after the samples of a round, off the request threads).
    judged: AtomicBool,
}

impl Store {
    pub fn new(node: String, retention: Duration) -> Self {
        Self {
            inner: RwLock::new(Snapshot {
                node,
                window: retention,
                ..Snapshot::default()
            }),
            retention,
            judged: AtomicBool::new(false),
        }
    }

    /// Findings have been evaluated on a snapshot where every collector had sampled.
    pub fn mark_judged(&self) {
        self.judged.store(true, Ordering::Release);
    }

    pub fn judged(&self) -> bool {
        self.judged.load(Ordering::Acquire)
    }

    pub fn register(&self, name: &'static str, interval: Duration) {
        self.write()
            .collectors
            .insert(name, CollectorState::new(interval));
    }

    pub fn record(
        &self,
        name: &'static str,
        at: SystemTime,
        took: Duration,
        result: Result<Arc<dyn AnySample>, CollectError>,
    ) {
        // The sample the new one replaces as the newest is cut down to what rules
        // read of older samples; outside the lock, so scrapes do not wait for it.
        let previous = match &result {
            Ok(_) => self.read(|s| {
                let h = &s.collectors.get(name)?.history;
                Some((h.len(), h.back()?.sample.clone()))
            }),
            Err(_) => None,
        };
        let compacted = previous.map(|(len, p)| (len, p.compact_any()));
        // Samples leaving the window are freed after the lock is released: freeing
        // 500 pods' worth takes long enough to hold up every scrape waiting on it.
        // (Declared before the guard, so dropped after it.)
        let mut leaving: Vec<Arc<dyn AnySample>> = Vec::new();
        let mut inner = self.write();
        let Some(state) = inner.collectors.get_mut(name) else {
            return;
        };
        state.runs_total += 1;
        state.last_attempt = Some(at);
        state.last_duration = Some(took);
        match result {
            Ok(sample) => {
                state.status = Status::Ok;
                // One collection at a time per collector: the newest is still the one
                // compacted above.
                match compacted {
                    Some((len, Compacted::Part(part))) if state.history.len() == len => {
                        if let Some(last) = state.history.back_mut() {
                            leaving.push(std::mem::replace(&mut last.sample, part));
                        }
                    }
                    Some((len, Compacted::Nothing)) if state.history.len() == len => {
                        leaving.extend(state.history.pop_back().map(|s| s.sample));
                    }
                    _ => {}
                }
                state.history.push_back(Stamped { at, sample });
                let n = state.history.len();
                if n >= 3 && state.history[n - 1].sample.thinnable() {
                    let (older, demoted) = (state.history[n - 3].at, state.history[n - 2].at);
                    if demoted
                        .duration_since(older)
                        .is_ok_and(|gap| gap < self.retention / KEPT_PER_RETENTION)
                    {
                        leaving.extend(state.history.remove(n - 2).map(|s| s.sample));
                    }
                }
                let horizon = self.retention + state.interval * 2;
                while state.history.len() > 2
                    && (state.history.len() > MAX_HISTORY
                        || at
                            .duration_since(state.history[0].at)
                            .is_ok_and(|age| age > horizon))
                {
                    leaving.extend(state.history.pop_front().map(|s| s.sample));
                }
            }
            Err(CollectError::Unavailable(Unavailable { what, hint, .. })) => {
                state.status = Status::Unavailable { what, hint };
            }
            Err(e) => {
                state.failures_total += 1;
                state.status = Status::Error {
                    message: e.to_string(),
                };
            }
        }
    }

    /// Adds the CPU a collection used to its collector's account.
    pub fn add_cpu(&self, name: &'static str, cpu: Duration) {
        if let Some(state) = self.write().collectors.get_mut(name) {
            state.cpu_total += cpu;
        }
    }

    pub fn mark_hung(&self, name: &'static str, since: SystemTime) {
        if let Some(state) = self.write().collectors.get_mut(name) {
            state.failures_total += 1;
            state.status = Status::Hung { since };
        }
    }

    pub fn set_setup(&self, name: &'static str, setup: Setup) {
        self.write().setup.insert(name, setup);
    }

    pub fn set_findings(&self, findings: Vec<Finding>) {
        self.write().findings = Arc::new(findings);
    }

    /// The signals whose rules run, so each has a state from the start.
    pub fn register_rules(&self, names: impl IntoIterator<Item = &'static str>) {
        let mut inner = self.write();
        for name in names {
            inner.rules.entry(name).or_default();
        }
    }

    /// Findings of an evaluation, and which signals' rules failed in it.
    pub fn set_evaluation(&self, findings: Vec<Finding>, failures: &[(&'static str, String)]) {
        let mut inner = self.write();
        inner.findings = Arc::new(findings);
        for state in inner.rules.values_mut() {
            state.error = None;
        }
        for (name, error) in failures {
            let state = inner.rules.entry(name).or_default();
            state.error = Some(error.clone());
            state.failures_total += 1;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads without copying the history, under the lock: for reads as brief as a
    /// copy. While `f` runs, a collector recording waits, and every reader after it.
    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.inner.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads a copy (samples shared): for rendering a report or an API answer,
    /// which at 500 pods takes long enough to hold up scrapes if done under the lock.
    pub fn view<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.snapshot())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        // A panic while holding the lock leaves consistent data (single assignments).
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize)]
    struct Probe;
    impl Sample for Probe {
        const COLLECTOR: &'static str = "probe";
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
    }

    fn sample() -> Result<Arc<dyn AnySample>, CollectError> {
        Ok(Arc::new(Probe))
    }

    /// Keeps its counter in the window, not its detail.
    #[derive(Debug, Serialize)]
    struct Counted {
        counter: u64,
        detail: Vec<u64>,
    }
    impl Sample for Counted {
        const COLLECTOR: &'static str = "counted";
        const THINNABLE: bool = true;
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
        fn compact(&self) -> Compacted<Self> {
            Compacted::Part(Counted {
                counter: self.counter,
                detail: Vec::new(),
            })
        }
    }

    /// A counter, without detail.
    fn counted(counter: u64) -> Result<Arc<dyn AnySample>, CollectError> {
        Ok(Arc::new(Counted {
            counter,
            detail: vec![],
        }))
    }

    /// Read from the newest sample only.
    #[derive(Debug, Serialize)]
    struct Latest(u64);
    impl Sample for Latest {
        const COLLECTOR: &'static str = "latest";
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
        fn compact(&self) -> Compacted<Self> {
            Compacted::Nothing
        }
    }

    #[test]
    fn older_samples_keep_what_rules_read_and_the_newest_is_whole() {
        let store = Store::new("n".into(), Duration::from_secs(60));
        store.register("counted", Duration::from_secs(10));
        store.register("latest", Duration::from_secs(10));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..4u64 {
            let at = t0 + Duration::from_secs(10 * i);
            let counted = Counted {
                counter: i,
                detail: vec![i; 100],
            };
            store.record("counted", at, Duration::ZERO, Ok(Arc::new(counted)));
            store.record("latest", at, Duration::ZERO, Ok(Arc::new(Latest(i))));
        }
        let snap = store.snapshot();
        let h = snap.history::<Counted>();
        assert_eq!(
            h.iter().map(|(_, s)| s.counter).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(h[..3].iter().all(|(_, s)| s.detail.is_empty()));
        assert_eq!(h[3].1.detail.len(), 100, "the newest is whole");
        let l = snap.history::<Latest>();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1 .0, 3);
        assert_eq!(l[0].0, t0 + Duration::from_secs(30));
    }

    #[test]
    fn history_is_trimmed_to_the_retention() {
        let store = Store::new("n".into(), Duration::from_secs(60));
        store.register("probe", Duration::from_secs(10));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..30 {
            store.record(
                "probe",
                t0 + Duration::from_secs(10 * i),
                Duration::ZERO,
                sample(),
            );
        }
        let snap = store.snapshot();
        let h = snap.history::<Probe>();
        // 60 s window + 2 intervals of slack = 80 s: samples at most 80 s old remain.
        assert_eq!(h.len(), 9);
        assert_eq!(h.last().unwrap().0, t0 + Duration::from_secs(290));
    }

    #[test]
    fn short_intervals_keep_older_samples_a_step_apart() {
        let store = Store::new("n".into(), Duration::from_secs(300));
        store.register("counted", Duration::from_secs(1));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 0..600u64 {
            let at = t0 + Duration::from_secs(i);
            store.record("counted", at, Duration::ZERO, counted(i));
        }
        let snap = store.snapshot();
        let h = snap.history::<Counted>();
        let step = Duration::from_secs(300) / KEPT_PER_RETENTION;
        assert!(
            h.len() <= KEPT_PER_RETENTION as usize + 5,
            "{} samples",
            h.len()
        );
        assert_eq!(h.last().unwrap().1.counter, 599, "the newest is kept");
        // The oldest is still about a window (plus two intervals of slack) back.
        let span = h.last().unwrap().0.duration_since(h[0].0).unwrap();
        assert!(span > Duration::from_secs(302) - step, "{span:?}");
        for w in h[..h.len() - 1].windows(2) {
            let gap = w[1].0.duration_since(w[0].0).unwrap();
            assert!(gap >= step && gap < step * 2, "{gap:?}");
        }
        // A sample of its own interval's events is never dropped.
        store.register("probe", Duration::from_secs(1));
        for i in 0..600u64 {
            let at = t0 + Duration::from_secs(i);
            store.record("probe", at, Duration::ZERO, sample());
        }
        assert_eq!(store.snapshot().history::<Probe>().len(), 303);
    }

    #[test]
    fn default_interval_samples_are_all_kept_though_some_come_early() {
        let store = Store::new("n".into(), Duration::from_secs(300));
        store.register("counted", Duration::from_secs(15));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for i in 1..=20u64 {
            // Scheduling jitter: every other collection 20 ms early.
            let early = if i % 2 == 0 { 20 } else { 0 };
            let at = t0 + Duration::from_millis(i * 15_000 - early);
            store.record("counted", at, Duration::ZERO, counted(i));
        }
        assert_eq!(store.snapshot().history::<Counted>().len(), 20);
    }

    #[test]
    fn a_failing_collector_hides_its_stale_samples_from_rules() {
        let store = Store::new("n".into(), Duration::from_secs(60));
        store.register("probe", Duration::from_secs(10));
        let t0 = SystemTime::now();
        store.record("probe", t0, Duration::ZERO, sample());
        assert!(store.snapshot().ready());
        store.record(
            "probe",
            t0,
            Duration::ZERO,
            Err(CollectError::Failed("boom".into())),
        );
        let snap = store.snapshot();
        assert!(snap.latest::<Probe>().is_none());
        assert_eq!(snap.collectors["probe"].failures_total, 1);
        assert_eq!(
            snap.collectors["probe"].status,
            Status::Error {
                message: "boom".into()
            }
        );
    }

    #[test]
    fn not_ready_until_every_collector_sampled() {
        let store = Store::new("n".into(), Duration::from_secs(60));
        store.register("probe", Duration::from_secs(10));
        store.register("conntrack", Duration::from_secs(10));
        store.record("probe", SystemTime::now(), Duration::ZERO, sample());
        assert!(!store.snapshot().ready());
        // Hung or failing since start: still not ready.
        store.mark_hung("conntrack", SystemTime::now());
        assert_eq!(store.snapshot().not_ready(), ["conntrack"]);
        let failed = Err(CollectError::Failed("bad file".into()));
        store.record("conntrack", SystemTime::now(), Duration::ZERO, failed);
        assert_eq!(store.snapshot().not_ready(), ["conntrack"]);
        // A missing kernel feature is a settled answer.
        let missing = Err(CollectError::unavailable("conntrack", "not loaded"));
        store.record("conntrack", SystemTime::now(), Duration::ZERO, missing);
        assert!(store.snapshot().ready());
    }

    #[test]
    fn rule_failures_are_kept_per_signal_until_they_run_again() {
        let store = Store::new("n".into(), Duration::from_secs(60));
        store.register_rules(["disk", "netns"]);
        store.set_evaluation(vec![], &[("netns", "boom".into())]);
        let snap = store.snapshot();
        assert_eq!(snap.failed_rules().collect::<Vec<_>>(), [("netns", "boom")]);
        assert_eq!(snap.rules["netns"].failures_total, 1);
        store.set_evaluation(vec![], &[]);
        let snap = store.snapshot();
        assert_eq!(snap.failed_rules().count(), 0);
        assert_eq!(snap.rules["netns"].failures_total, 1);
        assert_eq!(snap.rules["disk"].failures_total, 0);
    }
}
