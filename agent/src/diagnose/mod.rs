//! Rules: pure functions from the store's samples (and their history) to findings.

pub mod cgroup;
pub mod conntrack;
pub mod conntrack_top;
pub mod disk;
pub mod dns;
pub mod kmsg;
pub mod netns;
pub mod nic;
pub mod oom;
pub mod pod_addresses;
pub mod pressure;
pub mod window;

pub use crate::finding::{Finding, FindingDef, Severity};
use crate::store::Snapshot;
use crate::text::panic_message;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime};

/// Kernel log lines kept in a finding's evidence.
pub const KERNEL_LOG_LINES: usize = 5;

/// What every rule reads besides samples and its own family's thresholds.
#[derive(Debug, Clone)]
pub struct RuleContext {
    pub window: Duration,
}

/// One family's rules with their thresholds bound (see `signals`).
pub type RuleSet = Box<dyn Fn(&Snapshot, &RuleContext, &mut Vec<Finding>) + Send + Sync>;

/// The findings of every family whose rules ran, and the families whose rules failed.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub findings: Vec<Finding>,
    /// (family, what went wrong): its findings are unknown, the others stand.
    pub failures: Vec<(&'static str, String)>,
}

/// Evaluates every family's rules, each on its own: a rule that panics on data it did
/// not expect costs that family's findings, never the others'. Findings worst first.
pub fn evaluate(
    snapshot: &Snapshot,
    ctx: &RuleContext,
    families: &[(&'static str, RuleSet)],
) -> Evaluation {
    let mut out = Evaluation::default();
    for (family, rules) in families {
        let mut found = Vec::new();
        match catch_unwind(AssertUnwindSafe(|| rules(snapshot, ctx, &mut found))) {
            Ok(()) => out.findings.extend(found),
            Err(panic) => out.failures.push((family, panic_message(&*panic))),
        }
    }
    // Last: it decorates findings of any family with kernel log lines, and the
    // conntrack findings with the DNS failures of the same window.
    let decorated = catch_unwind(AssertUnwindSafe(|| {
        let mut findings = out.findings.clone();
        kmsg::attach_evidence(snapshot, ctx, &mut findings);
        dns::attach_to_conntrack(snapshot, ctx, &mut findings);
        findings
    }));
    match decorated {
        Ok(findings) => out.findings = findings,
        Err(panic) => out
            .failures
            .push(("kernel log evidence", panic_message(&*panic))),
    }
    out.findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.id.cmp(b.id))
            .then(a.subject.cmp(&b.subject))
    });
    out
}

/// Remembers when each (id, subject) was first seen so `since` survives re-evaluation.
#[derive(Debug, Default)]
pub struct SinceTracker {
    first_seen: HashMap<(&'static str, String), SystemTime>,
}

impl SinceTracker {
    pub fn update(&mut self, mut findings: Vec<Finding>) -> Vec<Finding> {
        let mut seen = HashMap::with_capacity(findings.len());
        for f in &mut findings {
            let key = (f.id, f.subject.clone());
            let since = *self.first_seen.get(&key).unwrap_or(&f.since);
            f.since = since;
            seen.insert(key, since);
        }
        self.first_seen = seen;
        findings
    }
}

/// Shared by the rule tests of every family: a store of one collector's samples
/// 15 s apart, and one family's rules run on it with the default 5 min window.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Finding, RuleContext};
    use crate::sample::Sample;
    use crate::store::{Snapshot, Store};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    pub const INTERVAL: Duration = Duration::from_secs(15);
    pub const WINDOW: Duration = Duration::from_secs(300);

    /// A fixed start, so times in evidence are reproducible.
    pub fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    /// A store holding `samples` of one collector, the i-th taken at t0 + i * 15 s.
    pub fn store_with<S: Sample>(samples: impl IntoIterator<Item = S>) -> Store {
        let store = Store::new("n".into(), WINDOW);
        add_samples(&store, samples);
        store
    }

    /// Registers a second collector's samples in a store, on the same clock.
    pub fn add_samples<S: Sample>(store: &Store, samples: impl IntoIterator<Item = S>) {
        add_samples_every(store, INTERVAL, samples);
    }

    /// As [`add_samples`], the i-th taken at t0 + i * `interval`.
    pub fn add_samples_every<S: Sample>(
        store: &Store,
        interval: Duration,
        samples: impl IntoIterator<Item = S>,
    ) {
        store.register(S::COLLECTOR, interval);
        for (i, s) in samples.into_iter().enumerate() {
            store.record(
                S::COLLECTOR,
                t0() + interval * i as u32,
                Duration::ZERO,
                Ok(Arc::new(s)),
            );
        }
    }

    /// The families that read the kernel log or decorate with it, at their defaults.
    pub fn evaluate_log_families(store: &Store) -> Vec<Finding> {
        use super::*;
        let families: Vec<(&'static str, super::RuleSet)> = vec![
            (
                "conntrack",
                Box::new(|s, c, o| conntrack::rules(s, &Default::default(), c, o)),
            ),
            (
                "pressure",
                Box::new(|s, c, o| pressure::rules(s, &Default::default(), c, o)),
            ),
            ("oom", Box::new(oom::rules)),
            (
                "kmsg",
                Box::new(|s, c, o| kmsg::rules(s, &Default::default(), c, o)),
            ),
        ];
        let evaluation = super::evaluate(&store.snapshot(), &ctx(), &families);
        assert!(evaluation.failures.is_empty(), "{:?}", evaluation.failures);
        evaluation.findings
    }

    pub fn ctx() -> RuleContext {
        RuleContext { window: WINDOW }
    }

    /// `store`'s snapshot with its samples of `S` whole again, as the store got
    /// them: what a view over the compacted window must answer the same as.
    pub fn uncompacted<S: Sample + Clone>(store: &Store, samples: &[S]) -> Snapshot {
        let mut snap = store.snapshot();
        let history = &mut snap
            .collectors
            .get_mut(S::COLLECTOR)
            .expect("registered")
            .history;
        assert_eq!(history.len(), samples.len(), "every sample kept");
        for (kept, whole) in history.iter_mut().zip(samples) {
            kept.sample = Arc::new(whole.clone());
        }
        snap
    }

    /// Runs one family's rules, its thresholds given, on a store.
    pub fn run_rules<T>(
        rules: fn(&Snapshot, &T, &RuleContext, &mut Vec<Finding>),
        store: &Store,
        thresholds: &T,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        rules(&store.snapshot(), thresholds, &ctx(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_family_costs_its_findings_only() {
        let store = testing::store_with(Vec::<crate::collect::NicSample>::new());
        let families: Vec<(&'static str, RuleSet)> = vec![
            (
                "broken",
                Box::new(|_, _, out: &mut Vec<Finding>| {
                    out.push(Finding::new(
                        &nic::ERRORS,
                        Severity::Warning,
                        "half-made",
                        "never seen",
                        testing::t0(),
                    ));
                    let id = "é容器ä";
                    let _ = &id[..1];
                }),
            ),
            (
                "fine",
                Box::new(|_, _, out: &mut Vec<Finding>| {
                    out.push(Finding::new(
                        &nic::LINK_DOWN,
                        Severity::Critical,
                        "eth0",
                        "down",
                        testing::t0(),
                    ))
                }),
            ),
        ];
        let e = evaluate(&store.snapshot(), &testing::ctx(), &families);
        assert_eq!(e.findings.len(), 1);
        assert_eq!(e.findings[0].id, "nic_link_down");
        assert_eq!(e.failures.len(), 1);
        assert_eq!(e.failures[0].0, "broken");
        assert!(
            e.failures[0].1.contains("char boundary"),
            "{:?}",
            e.failures
        );
    }

    #[test]
    fn since_is_kept_while_active_and_reset_after() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let t1 = t0 + Duration::from_secs(15);
        let f = |at| Finding::new(&nic::LINK_DOWN, Severity::Critical, "eth0", "down", at);
        let mut tracker = SinceTracker::default();
        assert_eq!(tracker.update(vec![f(t0)])[0].since, t0);
        assert_eq!(tracker.update(vec![f(t1)])[0].since, t0);
        assert!(tracker.update(vec![]).is_empty());
        assert_eq!(tracker.update(vec![f(t1)])[0].since, t1);
    }
}
