//! conntrack_table_full, conntrack_table_high, conntrack_drops, conntrack_insert_failed.

use super::window::{increase, span, within};
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::ConntrackSample;
use crate::finding::worst_level;
use crate::flags::parse_ratio;
use crate::store::Snapshot;
use crate::text::round4;
use std::time::SystemTime;

pub const TABLE_FULL: FindingDef = FindingDef {
    id: "conntrack_table_full",
    remedy: "Raise net.netfilter.nf_conntrack_max (and the hashsize module parameter); find the pods opening the flows (conntrack -L | sort by source).",
};
pub const TABLE_HIGH: FindingDef = FindingDef {
    id: "conntrack_table_high",
    remedy: "Raise net.netfilter.nf_conntrack_max before the table fills and drops packets; find the pods opening the flows.",
};
pub const DROPS: FindingDef = FindingDef {
    id: "conntrack_drops",
    remedy: "The table is full now and packets (DNS first) are being dropped: raise net.netfilter.nf_conntrack_max, shorten timeouts, find the flow source.",
};
pub const INSERT_FAILED: FindingDef = FindingDef {
    id: "conntrack_insert_failed",
    remedy: "The UDP conntrack insert race behind 5 s DNS timeouts: run NodeLocal DNSCache, use --random-fully SNAT, or a kernel with the clash-resolution fix.",
};
pub const FINDINGS: &[&FindingDef] = &[&TABLE_FULL, &TABLE_HIGH, &DROPS, &INSERT_FAILED];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "Conntrack")]
pub struct Thresholds {
    /// conntrack_table_full (critical) at this fraction of nf_conntrack_max.
    #[arg(long = "conntrack.full-ratio", env = "NODEDIAG_CONNTRACK_FULL_RATIO", default_value = "0.95", value_parser = parse_ratio, value_name = "RATIO")]
    pub full_ratio: f64,

    /// conntrack_table_high (warning) at this fraction of nf_conntrack_max.
    #[arg(long = "conntrack.high-ratio", env = "NODEDIAG_CONNTRACK_HIGH_RATIO", default_value = "0.80", value_parser = parse_ratio, value_name = "RATIO")]
    pub high_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

const SUBJECT: &str = "host";

pub fn rules(snapshot: &Snapshot, t: &Thresholds, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let history = snapshot.history::<ConntrackSample>();
    let Some(&(at, latest)) = history.last() else {
        return;
    };
    let recent = within(&history, ctx.window);
    out.extend(table_usage(latest, t, at));
    out.extend(drops(recent, latest, at));
    out.extend(insert_failed(recent, latest, at));
}

/// conntrack_table_full or, below it, conntrack_table_high.
fn table_usage(latest: &ConntrackSample, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let ratio = latest.usage_ratio()?;
    let levels = [
        (t.full_ratio, Severity::Critical),
        (t.high_ratio, Severity::Warning),
    ];
    let (severity, threshold) = worst_level(&levels, |t| ratio >= t)?;
    let def = match severity {
        Severity::Critical => &TABLE_FULL,
        _ => &TABLE_HIGH,
    };
    Some(
        Finding::new(
            def,
            severity,
            SUBJECT,
            format!(
                "conntrack table {:.0}% full ({} of {} entries)",
                ratio * 100.0,
                latest.entries,
                latest.max
            ),
            at,
        )
        .with("entries", latest.entries)
        .with("max", latest.max)
        .with("usage_ratio", round4(ratio))
        .with("threshold_ratio", threshold),
    )
}

type Window<'a> = &'a [(SystemTime, &'a ConntrackSample)];

fn drops(recent: Window, latest: &ConntrackSample, at: SystemTime) -> Option<Finding> {
    let dropped = increase(recent.iter().filter_map(|(_, s)| s.dropped()));
    if dropped == 0 {
        return None;
    }
    let seconds = span(recent).as_secs();
    Some(
        Finding::new(
            &DROPS,
            Severity::Critical,
            SUBJECT,
            format!("conntrack dropped {dropped} packets in the last {seconds}s"),
            at,
        )
        .with("dropped_in_window", dropped)
        .with("window_seconds", seconds)
        .with("entries", latest.entries)
        .with("max", latest.max),
    )
}

fn insert_failed(recent: Window, latest: &ConntrackSample, at: SystemTime) -> Option<Finding> {
    let stat = |pick: fn(&crate::kernel::conntrack::ConntrackStats) -> Option<u64>| {
        increase(
            recent
                .iter()
                .filter_map(|(_, s)| s.stats.as_ref().and_then(pick)),
        )
    };
    let failed = stat(|s| s.insert_failed);
    if failed == 0 {
        return None;
    }
    let seconds = span(recent).as_secs();
    let mut f = Finding::new(
        &INSERT_FAILED,
        Severity::Warning,
        SUBJECT,
        format!("{failed} conntrack inserts failed in the last {seconds}s (DNS over UDP races)"),
        at,
    )
    .with("insert_failed_in_window", failed)
    .with("window_seconds", seconds);
    if latest.stats.is_some_and(|s| s.clash_resolve.is_some()) {
        f = f.with("clash_resolve_in_window", stat(|s| s.clash_resolve));
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::testing::{run_rules, store_with};
    use crate::kernel::conntrack::ConntrackStats;

    fn sample(entries: u64, drop: u64, insert_failed: u64) -> ConntrackSample {
        ConntrackSample {
            entries,
            max: 1000,
            buckets: Some(256),
            stats: Some(ConntrackStats {
                drop: Some(drop),
                early_drop: Some(0),
                insert_failed: Some(insert_failed),
                ..Default::default()
            }),
            stats_source: None,
            unavailable: vec![],
        }
    }

    fn run(samples: &[(u64, u64, u64)]) -> Vec<Finding> {
        let store = store_with(samples.iter().map(|(e, d, f)| sample(*e, *d, *f)));
        run_rules(rules, &store, &Thresholds::default())
    }

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id).collect()
    }

    #[test]
    fn usage_thresholds_are_inclusive_and_exclusive_of_each_other() {
        assert!(run(&[(799, 0, 0)]).is_empty());
        assert_eq!(ids(&run(&[(800, 0, 0)])), ["conntrack_table_high"]);
        assert_eq!(ids(&run(&[(949, 0, 0)])), ["conntrack_table_high"]);
        let full = run(&[(950, 0, 0)]);
        assert_eq!(ids(&full), ["conntrack_table_full"]);
        assert_eq!(full[0].severity, Severity::Critical);
        assert_eq!(full[0].evidence["entries"], 950);
    }

    #[test]
    fn drops_need_a_rise_not_a_nonzero_counter() {
        assert!(run(&[(10, 5, 0), (10, 5, 0)]).is_empty());
        let f = run(&[(10, 5, 0), (10, 9, 0)]);
        assert_eq!(ids(&f), ["conntrack_drops"]);
        assert_eq!(f[0].evidence["dropped_in_window"], 4);
        assert_eq!(f[0].evidence["window_seconds"], 15);
    }

    #[test]
    fn insert_failed_rising_is_a_warning() {
        let f = run(&[(10, 0, 1), (10, 0, 3), (10, 0, 3)]);
        assert_eq!(ids(&f), ["conntrack_insert_failed"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence["insert_failed_in_window"], 2);
    }

    #[test]
    fn old_rises_fall_out_of_the_window() {
        // 25 samples at 15 s: the rise happened 360 s before the newest sample.
        let mut s = vec![(10, 0, 0), (10, 7, 0)];
        s.extend(std::iter::repeat_n((10, 7, 0), 23));
        assert!(run(&s).is_empty());
    }
}
