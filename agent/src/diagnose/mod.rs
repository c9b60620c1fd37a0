//! Rules: pure functions from the store's samples (and their history) to findings.

pub mod cgroup;
pub mod conntrack;
pub mod disk;
pub mod kmsg;
pub mod netns;
pub mod nic;
pub mod oom;
pub mod pressure;
pub mod window;

pub use crate::finding::{Finding, FindingDef, Severity};
use crate::store::Snapshot;
use std::collections::HashMap;
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

/// Evaluates every family's rules; findings sorted worst first.
pub fn evaluate(snapshot: &Snapshot, ctx: &RuleContext, families: &[RuleSet]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for rules in families {
        rules(snapshot, ctx, &mut findings);
    }
    // Last: it decorates findings of any family with kernel log lines.
    kmsg::attach_evidence(snapshot, ctx, &mut findings);
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.id.cmp(b.id))
            .then(a.subject.cmp(&b.subject))
    });
    findings
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
        store.register(S::COLLECTOR, INTERVAL);
        for (i, s) in samples.into_iter().enumerate() {
            store.record(
                S::COLLECTOR,
                t0() + INTERVAL * i as u32,
                Duration::ZERO,
                Ok(Arc::new(s)),
            );
        }
    }

    /// Every family's rules at their default thresholds, as `nodediag serve` runs them.
    pub fn evaluate_all(store: &Store) -> Vec<Finding> {
        use super::*;
        let families: Vec<super::RuleSet> = vec![
            Box::new(|s, c, o| conntrack::rules(s, &Default::default(), c, o)),
            Box::new(|s, c, o| nic::rules(s, &Default::default(), c, o)),
            Box::new(|s, c, o| cgroup::rules(s, &Default::default(), c, o)),
            Box::new(|s, c, o| pressure::rules(s, &Default::default(), c, o)),
            Box::new(oom::rules),
            Box::new(|s, c, o| kmsg::rules(s, &Default::default(), c, o)),
            Box::new(|s, c, o| netns::rules(s, &Default::default(), c, o)),
            Box::new(|s, c, o| disk::rules(s, &Default::default(), c, o)),
        ];
        super::evaluate(&store.snapshot(), &ctx(), &families)
    }

    pub fn ctx() -> RuleContext {
        RuleContext { window: WINDOW }
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
