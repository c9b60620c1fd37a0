//! Rules: pure functions from the store's samples (and their history) to findings.

pub mod catalog;
pub mod cgroup;
pub mod conntrack;
pub mod disk;
pub mod kmsg;
pub mod netns;
pub mod nic;
pub mod oom;
pub mod pressure;
pub mod window;

use crate::config::Thresholds;
use crate::store::Snapshot;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    /// What the finding is about: an interface, a directory, a pod, or `host`.
    pub subject: String,
    pub summary: String,
    /// The numbers that triggered it.
    pub evidence: BTreeMap<&'static str, serde_json::Value>,
    pub remedy: &'static str,
    /// When it was first seen active (continuously since).
    #[serde(serialize_with = "crate::time::serialize")]
    pub since: SystemTime,
}

impl Finding {
    /// `id` must be in the catalog; the remedy comes from there.
    pub fn new(
        id: &'static str,
        severity: Severity,
        subject: impl Into<String>,
        summary: impl Into<String>,
        at: SystemTime,
    ) -> Self {
        let def = catalog::find(id).unwrap_or_else(|| panic!("finding {id} not in catalog"));
        Self {
            id: def.id,
            severity,
            subject: subject.into(),
            summary: summary.into(),
            evidence: BTreeMap::new(),
            remedy: def.remedy,
            since: at,
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.evidence.insert(name, value.into());
        self
    }
}

/// Kernel log lines kept in a finding's evidence.
pub const KERNEL_LOG_LINES: usize = 5;

/// What rules read besides samples.
#[derive(Debug, Clone)]
pub struct RuleContext<'a> {
    pub thresholds: &'a Thresholds,
    pub window: Duration,
}

/// Evaluates every rule; findings sorted worst first.
pub fn evaluate(snapshot: &Snapshot, ctx: &RuleContext) -> Vec<Finding> {
    let mut findings = Vec::new();
    conntrack::rules(snapshot, ctx, &mut findings);
    nic::rules(snapshot, ctx, &mut findings);
    cgroup::rules(snapshot, ctx, &mut findings);
    pressure::rules(snapshot, ctx, &mut findings);
    oom::rules(snapshot, ctx, &mut findings);
    kmsg::rules(snapshot, ctx, &mut findings);
    netns::rules(snapshot, ctx, &mut findings);
    disk::rules(snapshot, ctx, &mut findings);
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
    use crate::collect::Sample;
    use crate::config::Thresholds;
    use crate::store::{Snapshot, Store};
    use std::time::{Duration, SystemTime};

    pub const INTERVAL: Duration = Duration::from_secs(15);
    pub const WINDOW: Duration = Duration::from_secs(300);

    /// A fixed start, so times in evidence are reproducible.
    pub fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    /// A store holding `samples` of one collector, the i-th taken at t0 + i * 15 s.
    pub fn store_with(collector: &'static str, samples: impl IntoIterator<Item = Sample>) -> Store {
        let store = Store::new("n".into(), WINDOW);
        store.register(collector, INTERVAL);
        for (i, s) in samples.into_iter().enumerate() {
            store.record(collector, t0() + INTERVAL * i as u32, Duration::ZERO, Ok(s));
        }
        store
    }

    pub type Rules = fn(&Snapshot, &RuleContext, &mut Vec<Finding>);

    pub fn run_rules(rules: Rules, store: &Store, thresholds: &Thresholds) -> Vec<Finding> {
        let ctx = RuleContext {
            thresholds,
            window: WINDOW,
        };
        let mut out = Vec::new();
        rules(&store.snapshot(), &ctx, &mut out);
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
        let f = |at| Finding::new("nic_link_down", Severity::Critical, "eth0", "down", at);
        let mut tracker = SinceTracker::default();
        assert_eq!(tracker.update(vec![f(t0)])[0].since, t0);
        assert_eq!(tracker.update(vec![f(t1)])[0].since, t0);
        assert!(tracker.update(vec![]).is_empty());
        assert_eq!(tracker.update(vec![f(t1)])[0].since, t1);
    }
}
