//! The conntrack collector's line in the report, and who fills the table when it is
//! high.

use crate::collect::conntrack::{ConntrackSample, StatsSource};
use crate::collect::conntrack_dumper::Trigger;
use crate::collect::conntrack_top::TopList;
use crate::diagnose::conntrack::{TABLE_FULL, TABLE_HIGH};
use crate::diagnose::conntrack_top::{self, percent};
use crate::kernel::conntrack_dump::DumpCut;
use crate::store::Snapshot;
use crate::time::{age, rfc3339};
use std::fmt::Write;
use std::time::SystemTime;

pub fn summary(s: &ConntrackSample) -> String {
    let mut out = format!(
        "{}/{} entries ({:.1}%)",
        s.entries,
        s.max,
        s.usage_ratio().unwrap_or(0.0) * 100.0
    );
    match (s.stats, s.stats_source) {
        (Some(st), Some(src)) => out.push_str(&format!(
            ", drop {}, early_drop {}, insert_failed {} (from {})",
            st.drop.unwrap_or(0),
            st.early_drop.unwrap_or(0),
            st.insert_failed.unwrap_or(0),
            match src {
                StatsSource::Netlink => "ctnetlink",
                StatsSource::Procfs => "/proc/net/stat",
            }
        )),
        _ => out.push_str(", no failure counters"),
    }
    if let Some(p) = s.peak.as_ref().filter(|p| p.entries > s.entries) {
        out.push_str(&format!(", peak {} since the previous sample", p.entries));
    }
    out
}

/// Rows of each list the report shows; the API shows more.
const REPORT_ROWS: usize = 5;

/// "conntrack top": who fills the table, while conntrack_table_high or _full is
/// active, from the dump the collector made when the table reached its high level
/// (or a request's of the seconds before, which it reused), with its age.
pub fn section(out: &mut String, snap: &Snapshot, now: SystemTime) {
    let active = snap
        .findings
        .iter()
        .any(|f| f.id == TABLE_FULL.id || f.id == TABLE_HIGH.id);
    if !active {
        return;
    }
    let Some(dump) = conntrack_top::latest_dump(snap) else {
        out.push_str(
            "\nconntrack top: no dump of the table yet (GET /api/v1/conntrack/top dumps it now)\n",
        );
        return;
    };
    let top = conntrack_top::ranked(snap, &dump, REPORT_ROWS);
    let why = match dump.trigger {
        Trigger::Threshold => "taken when the table reached its high level",
        Trigger::Request => "taken on request",
    };
    let coverage = match (dump.cut, dump.table_entries) {
        (Some(cut), Some(n)) => format!(
            "{} of {n} entries read in {:.2}s, cut by {}",
            dump.entries_seen,
            dump.elapsed.as_secs_f64(),
            cut_reason(cut)
        ),
        (Some(cut), None) => format!(
            "{} entries read in {:.2}s, cut by {}",
            dump.entries_seen,
            dump.elapsed.as_secs_f64(),
            cut_reason(cut)
        ),
        (None, _) => format!(
            "all {} entries read in {:.2}s",
            dump.entries_seen,
            dump.elapsed.as_secs_f64()
        ),
    };
    let _ = writeln!(
        out,
        "\nconntrack top (dump of {}, {} ago, {why}; {coverage}):",
        rfc3339(dump.finished_at),
        age(now, dump.finished_at)
    );
    rows(out, "sources (pods)", &top.owners);
    rows(out, "destinations", &top.destinations);
    let s = &top.states;
    let mut states = format!(
        "  states: {} unreplied, {} assured",
        percent(s.unreplied.share),
        percent(s.assured.share)
    );
    if !s.tcp.rows.is_empty() {
        let tcp: Vec<String> = s
            .tcp
            .rows
            .iter()
            .map(|r| format!("{} {}", r.key, percent(r.share)))
            .collect();
        states.push_str(&format!("; tcp {}", tcp.join(", ")));
    }
    let _ = writeln!(out, "{states}");
    out.push_str("  GET /api/v1/conntrack/top for a fresh dump and longer lists\n");
}

fn rows(out: &mut String, title: &str, list: &TopList) {
    let _ = writeln!(out, "  {title}:");
    for r in &list.rows {
        let _ = writeln!(
            out,
            "    {:>4}  {:>8}  {}",
            percent(r.share),
            r.entries,
            r.key
        );
    }
    if list.other_entries > 0 {
        let _ = writeln!(
            out,
            "    {:>4}  {:>8}  {} others",
            percent(list.other_share),
            list.other_entries,
            list.distinct - list.rows.len() as u64
        );
    }
}

fn cut_reason(cut: DumpCut) -> &'static str {
    match cut {
        DumpCut::MaxEntries => "--conntrack.top-max-entries",
        DumpCut::Deadline => "--conntrack.top-timeout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::conntrack_dumper::TopDump;
    use crate::collect::conntrack_top::TopBuilder;
    use crate::finding::{Finding, Severity};
    use crate::kernel::conntrack_dump::ConntrackEntry;
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::Duration;

    fn store(top: Option<Arc<TopDump>>, at: SystemTime) -> Store {
        let store = Store::new("n".into(), Duration::from_secs(300));
        store.register("conntrack", Duration::from_secs(15));
        let sample = ConntrackSample {
            entries: 900,
            max: 1000,
            buckets: None,
            stats: None,
            stats_source: None,
            peak: None,
            top,
            unavailable: vec![],
        };
        store.record("conntrack", at, Duration::ZERO, Ok(Arc::new(sample)));
        store.set_findings(vec![Finding::new(
            &TABLE_HIGH,
            Severity::Warning,
            "host",
            "conntrack table 90% full",
            at,
        )]);
        store
    }

    #[test]
    fn the_section_ranks_the_collectors_dump_with_its_age_and_cut() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut b = TopBuilder::new();
        for _ in 0..3 {
            b.add(&ConntrackEntry::dns_query_from("10.244.1.7"));
        }
        b.add(&ConntrackEntry::dns_query_from("10.244.2.9"));
        let mut dump = TopDump::from_counts(b, at, Trigger::Threshold, Some(40));
        dump.cut = Some(DumpCut::MaxEntries);
        let store = store(Some(Arc::new(dump)), at);
        let mut out = String::new();
        section(&mut out, &store.snapshot(), at + Duration::from_secs(8));
        assert!(
            out.contains("conntrack top (dump of 2023-11-14T22:13:20.000Z, 8s ago, taken when the table reached its high level; 4 of 40 entries read in 0.00s, cut by --conntrack.top-max-entries):"),
            "{out}"
        );
        assert!(out.contains("\n     75%         3  10.244.1.7\n"), "{out}");
        assert!(
            out.contains("  states: 100% unreplied, 0% assured\n"),
            "{out}"
        );

        // No finding, no section; a finding without a dump says how to get one.
        let quiet = Store::new("n".into(), Duration::from_secs(300));
        let mut out = String::new();
        section(&mut out, &quiet.snapshot(), at);
        assert!(out.is_empty());
        let mut out = String::new();
        section(&mut out, &store_without_dump(at).snapshot(), at);
        assert!(out.contains("no dump of the table yet"), "{out}");
    }

    fn store_without_dump(at: SystemTime) -> Store {
        store(None, at)
    }
}
