//! conntrack_table_full, conntrack_table_high, conntrack_drops, conntrack_insert_failed.
//!
//! "Full" is judged from evidence over the rule window, not from the count at the
//! instant of the latest sample: the peak of the count reads between samples, or
//! drops rising while the kernel logs "table full". A table that filled and drained
//! is reported with when it was full.

use super::window::{increase, span, within};
use super::{conntrack_top, Finding, FindingDef, RuleContext, Severity};
use crate::collect::{ConntrackSample, KmsgSample};
use crate::finding::worst_level;
use crate::flags::parse_ratio;
use crate::kernel::kmsg::EventKind;
use crate::store::Snapshot;
use crate::text::round4;
use crate::time::rfc3339;
use std::time::SystemTime;

pub const TABLE_FULL: FindingDef = FindingDef {
    id: "conntrack_table_full",
    remedy: "Raise net.netfilter.nf_conntrack_max (and the hashsize module parameter); find the pods opening the flows: GET /api/v1/conntrack/top on this agent.",
};
pub const TABLE_HIGH: FindingDef = FindingDef {
    id: "conntrack_table_high",
    remedy: "Raise net.netfilter.nf_conntrack_max before the table fills and drops packets; find the pods opening the flows: GET /api/v1/conntrack/top on this agent.",
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
    let usage = usage(snapshot, recent, ctx);
    if let Some(f) = table_usage(&usage, latest, t, at) {
        out.push(match conntrack_top::remedy_sentence(snapshot, ctx, at) {
            Some(sentence) => f.remedy_adds(sentence),
            None => f,
        });
    }
    out.extend(drops(recent, latest, at));
    out.extend(insert_failed(recent, latest, at));
}

type Window<'a> = &'a [(SystemTime, &'a ConntrackSample)];

/// What the rule window says about the table's size: the highest count any read saw,
/// when reads were at the full level, and the drops and kernel log lines that say
/// the kernel found it full. Other families (DNS) may use it to say whether the
/// table was full when they failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub max: u64,
    /// The highest count in the window (the peaks of the reads between samples and
    /// the samples' own reads), and when.
    pub peak_entries: u64,
    pub peak_at: SystemTime,
    /// First and last read at the collector's full level within the window.
    pub full_from: Option<SystemTime>,
    pub full_until: Option<SystemTime>,
    /// drop + early_drop rise over the window.
    pub dropped: u64,
    /// Kernel log "table full" lines within the window, oldest first (at most
    /// KERNEL_LOG_LINES).
    pub table_full_lines: Vec<String>,
    pub window_seconds: u64,
}

impl Usage {
    pub fn peak_ratio(&self) -> Option<f64> {
        (self.max > 0).then(|| self.peak_entries as f64 / self.max as f64)
    }

    /// Drops rose while the kernel said the table was full: full, whatever the
    /// reads caught.
    pub fn full_by_log(&self) -> bool {
        self.dropped > 0 && !self.table_full_lines.is_empty()
    }
}

/// The table's use over the window of the latest conntrack samples; `usage` of the
/// whole snapshot for callers outside this family.
pub fn usage_of(snapshot: &Snapshot, ctx: &RuleContext) -> Option<Usage> {
    let history = snapshot.history::<ConntrackSample>();
    history.last()?;
    Some(usage(snapshot, within(&history, ctx.window), ctx))
}

fn usage(snapshot: &Snapshot, recent: Window, ctx: &RuleContext) -> Usage {
    let (at, latest) = *recent.last().expect("a window has its newest sample");
    let mut u = Usage {
        max: latest.max,
        peak_entries: latest.entries,
        peak_at: at,
        full_from: None,
        full_until: None,
        dropped: increase(recent.iter().filter_map(|(_, s)| s.dropped())),
        table_full_lines: Vec::new(),
        window_seconds: span(recent).as_secs(),
    };
    for (sampled, s) in recent {
        let (entries, when) = match &s.peak {
            Some(p) if p.entries > s.entries => (p.entries, p.at),
            _ => (s.entries, *sampled),
        };
        // The newest of equal peaks: "was at 512 at 12:00:05" is the latest news.
        if entries >= u.peak_entries {
            u.peak_entries = entries;
            u.peak_at = when;
        }
        if let Some(p) = &s.peak {
            u.full_from = u.full_from.or(p.full_from);
            u.full_until = p.full_until.or(u.full_until);
        }
    }
    if let Some((_, log)) = snapshot.latest::<KmsgSample>() {
        let mut lines: Vec<String> = log
            .of_kind(EventKind::ConntrackTableFull)
            .filter(|e| super::oom::in_window(e.seen_at, at, ctx))
            .rev()
            .take(super::KERNEL_LOG_LINES)
            .map(|e| e.line.clone())
            .collect();
        lines.reverse();
        u.table_full_lines = lines;
    }
    u
}

/// conntrack_table_full (from the peak, or from drops with kernel log lines) or,
/// below it, conntrack_table_high.
fn table_usage(
    u: &Usage,
    latest: &ConntrackSample,
    t: &Thresholds,
    at: SystemTime,
) -> Option<Finding> {
    let now_ratio = latest.usage_ratio()?;
    let peak_ratio = u.peak_ratio()?;
    let levels = [
        (t.full_ratio, Severity::Critical),
        (t.high_ratio, Severity::Warning),
    ];
    let by_peak = worst_level(&levels, |t| peak_ratio >= t);
    let by_log = u.full_by_log();
    let (severity, threshold) = match by_peak {
        Some((Severity::Critical, th)) => (Severity::Critical, th),
        _ if by_log => (Severity::Critical, t.full_ratio),
        Some(level) => level,
        None => return None,
    };
    let full = severity == Severity::Critical;
    let def = if full { &TABLE_FULL } else { &TABLE_HIGH };
    let pct = |r: f64| format!("{:.0}%", r * 100.0);
    let still = worst_level(&levels, |t| now_ratio >= t).is_some_and(|(s, _)| s == severity);
    let summary = if still {
        format!(
            "conntrack table {} full ({} of {} entries)",
            pct(now_ratio),
            latest.entries,
            latest.max
        )
    } else if by_peak.is_some_and(|(s, _)| s == severity) {
        let during = match (u.full_from, u.full_until) {
            (Some(a), Some(b)) if full => {
                format!(", full from {} to {}", rfc3339(a), rfc3339(b))
            }
            _ => String::new(),
        };
        format!(
            "conntrack table {} {} ({} of {} entries at {}{during}); now {} ({} entries)",
            if full { "was" } else { "reached" },
            if full {
                format!("full, {}", pct(peak_ratio))
            } else {
                pct(peak_ratio)
            },
            u.peak_entries,
            u.max,
            rfc3339(u.peak_at),
            pct(now_ratio),
            latest.entries
        )
    } else {
        format!(
            "conntrack table full: {} packets dropped and the kernel logged \"table full\" in the last {}s (the count read {} of {} at most)",
            u.dropped, u.window_seconds, u.peak_entries, u.max
        )
    };
    let mut detected_by = Vec::new();
    if by_peak.is_some_and(|(s, _)| s == severity) {
        detected_by.push("peak");
    }
    if full && by_log {
        detected_by.extend(["drops", "kernel_log"]);
    }
    let mut f = Finding::new(def, severity, SUBJECT, summary, at)
        .with("entries", latest.entries)
        .with("max", latest.max)
        .with("usage_ratio", round4(now_ratio))
        .with("threshold_ratio", threshold)
        .with("peak_entries", u.peak_entries)
        .with("peak_ratio", round4(peak_ratio))
        .with("peak_at", rfc3339(u.peak_at))
        .with("detected_by", detected_by);
    if full {
        if let (Some(a), Some(b)) = (u.full_from, u.full_until) {
            f = f
                .with("full_from", rfc3339(a))
                .with("full_until", rfc3339(b));
        }
    }
    if full && by_log {
        f = f
            .with("dropped_in_window", u.dropped)
            .with("window_seconds", u.window_seconds)
            .with("kernel_log", u.table_full_lines.clone());
    }
    Some(f)
}

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
            peak: None,
            top: None,
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

    use crate::collect::conntrack::CountPeak;
    use crate::diagnose::testing::{add_samples, t0, INTERVAL};

    /// A sample whose reads since the previous one peaked at `peak`, full (>= 950)
    /// from `full` seconds after t0 to `full_until` when given.
    fn peaked(entries: u64, drop: u64, peak: u64, full: Option<(u64, u64)>) -> ConntrackSample {
        let at = |s: u64| t0() + std::time::Duration::from_secs(s);
        ConntrackSample {
            peak: Some(CountPeak {
                entries: peak,
                at: at(full.map_or(1, |f| f.0)),
                since: t0(),
                reads: 15,
                failed_reads: 0,
                full_level: Some(950),
                reads_full: full.map_or(0, |(a, b)| b - a + 1),
                full_from: full.map(|f| at(f.0)),
                full_until: full.map(|f| at(f.1)),
            }),
            ..sample(entries, drop, 0)
        }
    }

    #[test]
    fn a_table_that_filled_and_drained_between_samples_is_full_with_when() {
        let store = store_with([sample(100, 0, 0), peaked(120, 0, 990, Some((3, 7)))]);
        let f = run_rules(rules, &store, &Thresholds::default());
        assert_eq!(ids(&f), ["conntrack_table_full"]);
        let e = &f[0].evidence;
        assert_eq!(e["entries"], 120, "the count now");
        assert_eq!(e["peak_entries"], 990);
        assert_eq!(e["detected_by"], serde_json::json!(["peak"]));
        assert_eq!(e["full_from"], "1970-01-12T13:46:43.000Z");
        assert_eq!(e["full_until"], "1970-01-12T13:46:47.000Z");
        assert_eq!(
            f[0].summary,
            "conntrack table was full, 99% (990 of 1000 entries at 1970-01-12T13:46:43.000Z, full from 1970-01-12T13:46:43.000Z to 1970-01-12T13:46:47.000Z); now 12% (120 entries)"
        );
        assert!(
            f[0].remedy.contains("GET /api/v1/conntrack/top"),
            "{}",
            f[0].remedy
        );
        // Still reported while the peak is in the rule window, gone after it.
        let mut later = vec![sample(100, 0, 0), peaked(120, 0, 990, Some((3, 7)))];
        later.extend(std::iter::repeat_n(sample(120, 0, 0), 19));
        let f = run_rules(rules, &store_with(later.clone()), &Thresholds::default());
        assert_eq!(ids(&f), ["conntrack_table_full"]);
        later.extend(std::iter::repeat_n(sample(120, 0, 0), 2));
        assert!(run_rules(rules, &store_with(later), &Thresholds::default()).is_empty());
    }

    #[test]
    fn a_peak_between_the_levels_is_high_and_says_it_reached_it() {
        let store = store_with([sample(100, 0, 0), peaked(300, 0, 850, None)]);
        let f = run_rules(rules, &store, &Thresholds::default());
        assert_eq!(ids(&f), ["conntrack_table_high"]);
        assert!(
            f[0].summary
                .starts_with("conntrack table reached 85% (850 of 1000 entries at "),
            "{}",
            f[0].summary
        );
        assert!(!f[0].evidence.contains_key("full_from"));
    }

    fn kmsg_full(lines: &[u64]) -> crate::collect::KmsgSample {
        use crate::collect::kmsg::{LogSource, LoggedEvent};
        use crate::kernel::kmsg::Matcher;
        let mut m = Matcher::default();
        let line = "nf_conntrack: nf_conntrack: table full, dropping packet";
        crate::collect::KmsgSample {
            source: LogSource::Kmsg,
            path: None,
            events: lines
                .iter()
                .map(|s| LoggedEvent {
                    seen_at: t0() + std::time::Duration::from_secs(*s),
                    monotonic_us: None,
                    line: line.into(),
                    event: m.feed(line).expect("a table full line"),
                    pod: None,
                    attributed: false,
                })
                .collect(),
            totals: Default::default(),
            records_read: lines.len() as u64,
            unavailable: vec![],
        }
    }

    #[test]
    fn drops_with_table_full_lines_are_full_whatever_the_count_read() {
        // 474 of 1000 at every read, as in the issue: entries came and went.
        let store = store_with([sample(474, 3, 0), sample(474, 40, 0)]);
        add_samples(&store, [kmsg_full(&[10])]);
        let f = run_rules(rules, &store, &Thresholds::default());
        assert_eq!(ids(&f), ["conntrack_table_full", "conntrack_drops"]);
        let e = &f[0].evidence;
        assert_eq!(e["detected_by"], serde_json::json!(["drops", "kernel_log"]));
        assert_eq!(e["dropped_in_window"], 37);
        assert_eq!(e["kernel_log"].as_array().unwrap().len(), 1);
        assert_eq!(e["peak_entries"], 474);
        assert_eq!(
            f[0].summary,
            "conntrack table full: 37 packets dropped and the kernel logged \"table full\" in the last 15s (the count read 474 of 1000 at most)"
        );
        // Drops without the kernel saying why: drops (and high), not full.
        assert_eq!(ids(&run(&[(474, 3, 0), (474, 40, 0)])), ["conntrack_drops"]);
        assert_eq!(
            ids(&run(&[(900, 3, 0), (900, 40, 0)])),
            ["conntrack_table_high", "conntrack_drops"]
        );
        // A line older than the window says nothing of these drops.
        let store = store_with([sample(900, 3, 0), sample(900, 3, 0), sample(900, 40, 0)]);
        add_samples(&store, [kmsg_full(&[0])]);
        let mut f = Vec::new();
        let ctx = RuleContext {
            window: INTERVAL + INTERVAL / 3,
        };
        rules(&store.snapshot(), &Thresholds::default(), &ctx, &mut f);
        assert_eq!(ids(&f), ["conntrack_table_high", "conntrack_drops"]);
    }

    #[test]
    fn the_remedy_names_the_top_pods_of_a_recent_dump() {
        use crate::collect::conntrack_dumper::{TopDump, Trigger};
        use crate::collect::conntrack_top::TopBuilder;
        use crate::kernel::conntrack_dump::ConntrackEntry;
        let mut b = TopBuilder::new();
        for (src, n) in [("10.244.1.7", 41), ("10.244.2.9", 59)] {
            for _ in 0..n {
                b.add(&ConntrackEntry::dns_query_from(src));
            }
        }
        let dump =
            std::sync::Arc::new(TopDump::from_counts(b, t0(), Trigger::Threshold, Some(100)));
        let mut full = sample(990, 0, 0);
        full.top = Some(dump);
        let store = store_with([full]);
        let mut ns = crate::diagnose::pod_addresses::tests::sample(vec![], vec![]);
        ns.ipam[0].owned = vec![crate::collect::netns::Reservation {
            ip: "10.244.2.9".parse().unwrap(),
            container_id: None,
            interface: None,
            pod: Some(crate::diagnose::pod_addresses::tests::pod("shop", "cart-0")),
        }];
        add_samples(&store, [ns]);
        let f = run_rules(rules, &store, &Thresholds::default());
        assert_eq!(ids(&f), ["conntrack_table_full"]);
        assert!(
            f[0].remedy.ends_with("The top sources are shop/cart-0 (59%) and 10.244.1.7 (41%) of the 100 entries read at 1970-01-12T13:46:40.000Z; the top destination is 10.96.0.10:53/udp (100%)."),
            "{}",
            f[0].remedy
        );
        assert!(f[0].remedy.starts_with(TABLE_FULL.remedy));
    }
}
