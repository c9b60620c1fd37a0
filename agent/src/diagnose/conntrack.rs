//! conntrack_table_full, conntrack_table_high, conntrack_drops, conntrack_insert_failed.

use super::window::{increase, span, within};
use super::{Finding, RuleContext, Severity};
use crate::collect::ConntrackSample;
use crate::store::Snapshot;

const SUBJECT: &str = "host";

pub fn rules(snapshot: &Snapshot, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let history = snapshot.history::<ConntrackSample>();
    let Some(&(at, latest)) = history.last() else {
        return;
    };
    let t = ctx.thresholds;
    if let Some(ratio) = latest.usage_ratio() {
        let (id, severity, threshold) = if ratio >= t.conntrack_full_ratio {
            (
                "conntrack_table_full",
                Severity::Critical,
                t.conntrack_full_ratio,
            )
        } else if ratio >= t.conntrack_high_ratio {
            (
                "conntrack_table_high",
                Severity::Warning,
                t.conntrack_high_ratio,
            )
        } else {
            ("", Severity::Info, 0.0)
        };
        if !id.is_empty() {
            out.push(
                Finding::new(
                    id,
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
                .with("usage_ratio", round(ratio))
                .with("threshold_ratio", threshold),
            );
        }
    }

    let recent = within(&history, ctx.window);
    let seconds = span(recent).as_secs();
    let dropped = increase(recent.iter().filter_map(|(_, s)| s.dropped()));
    if dropped > 0 {
        out.push(
            Finding::new(
                "conntrack_drops",
                Severity::Critical,
                SUBJECT,
                format!("conntrack dropped {dropped} packets in the last {seconds}s"),
                at,
            )
            .with("dropped_in_window", dropped)
            .with("window_seconds", seconds)
            .with("entries", latest.entries)
            .with("max", latest.max),
        );
    }
    let failed = increase(
        recent
            .iter()
            .filter_map(|(_, s)| s.stats.and_then(|st| st.insert_failed)),
    );
    if failed > 0 {
        let mut f = Finding::new(
            "conntrack_insert_failed",
            Severity::Warning,
            SUBJECT,
            format!(
                "{failed} conntrack inserts failed in the last {seconds}s (DNS over UDP races)"
            ),
            at,
        )
        .with("insert_failed_in_window", failed)
        .with("window_seconds", seconds);
        let clash = increase(
            recent
                .iter()
                .filter_map(|(_, s)| s.stats.and_then(|st| st.clash_resolve)),
        );
        if latest.stats.is_some_and(|s| s.clash_resolve.is_some()) {
            f = f.with("clash_resolve_in_window", clash);
        }
        out.push(f);
    }
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Sample;
    use crate::config::Thresholds;
    use crate::diagnose::testing::{run_rules, store_with};
    use crate::kernel::conntrack::ConntrackStats;

    fn sample(entries: u64, drop: u64, insert_failed: u64) -> Sample {
        Sample::Conntrack(ConntrackSample {
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
        })
    }

    fn run(samples: &[(u64, u64, u64)]) -> Vec<Finding> {
        let store = store_with(
            "conntrack",
            samples.iter().map(|(e, d, f)| sample(*e, *d, *f)),
        );
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
