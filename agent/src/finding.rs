//! A finding: one root cause on this node, with the numbers behind it and a remedy.
//! Each rule family declares its findings as [`FindingDef`] constants; the catalog is
//! the union of them (see `signals`).

use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

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

/// A finding's stable id and the remedy it names; the README's "Findings" section
/// documents each id.
#[derive(Debug, PartialEq, Eq)]
pub struct FindingDef {
    pub id: &'static str,
    pub remedy: &'static str,
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
    /// The finding's remedy, which a rule may extend with what it knows of this node
    /// (see [`Finding::remedy_adds`]).
    pub remedy: Cow<'static, str>,
    /// When it was first seen active (continuously since).
    #[serde(serialize_with = "crate::time::serialize")]
    pub since: SystemTime,
}

impl Finding {
    pub fn new(
        def: &'static FindingDef,
        severity: Severity,
        subject: impl Into<String>,
        summary: impl Into<String>,
        at: SystemTime,
    ) -> Self {
        Self {
            id: def.id,
            severity,
            subject: subject.into(),
            summary: summary.into(),
            evidence: BTreeMap::new(),
            remedy: Cow::Borrowed(def.remedy),
            since: at,
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.evidence.insert(name, value.into());
        self
    }

    /// Appends a sentence to the remedy: what this node's data says beyond the
    /// catalog's words (e.g. which pods fill the conntrack table).
    pub fn remedy_adds(mut self, sentence: impl AsRef<str>) -> Self {
        let sentence = sentence.as_ref().trim();
        if !sentence.is_empty() {
            let remedy = self.remedy.to_mut();
            remedy.push(' ');
            remedy.push_str(sentence);
        }
        self
    }
}

/// The worst of `levels` (threshold and severity, worst first) whose threshold the
/// value reached, as `reached` decides: `|t| ratio >= t` for a usage limit, `|t| free < t`
/// for a floor. Every rule picks its level this way, so the comparison is written where
/// the catalog's wording ("> 90%", ">= 95%") can be checked against it.
pub fn worst_level(
    levels: &[(f64, Severity)],
    reached: impl Fn(f64) -> bool,
) -> Option<(Severity, f64)> {
    levels
        .iter()
        .find(|(threshold, _)| reached(*threshold))
        .map(|&(threshold, severity)| (severity, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_pick_the_worst_reached() {
        let usage = [(0.95, Severity::Critical), (0.8, Severity::Warning)];
        let at_least = |v: f64| worst_level(&usage, |t| v >= t);
        assert_eq!(at_least(0.79), None);
        assert_eq!(at_least(0.8), Some((Severity::Warning, 0.8)));
        assert_eq!(at_least(0.99), Some((Severity::Critical, 0.95)));
        assert_eq!(worst_level(&usage, |t| 0.8 > t), None, "strictly above");
        let free = [(0.05, Severity::Critical), (0.1, Severity::Warning)];
        let below = |v: f64| worst_level(&free, |t| v < t);
        assert_eq!(below(0.1), None);
        assert_eq!(below(0.07), Some((Severity::Warning, 0.1)));
        assert_eq!(below(0.01), Some((Severity::Critical, 0.05)));
    }
}
