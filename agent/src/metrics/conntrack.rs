use super::family::Families;
use crate::collect::ConntrackSample;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

const STAT_HELP: [(&str, &str); 10] = [
    ("found", "Conntrack lookups that found an entry"),
    ("invalid", "Packets conntrack could not track (invalid)"),
    ("insert", "Entries inserted"),
    (
        "insert_failed",
        "Entries that could not be inserted (the UDP insert race behind DNS timeouts)",
    ),
    (
        "drop",
        "Packets dropped because the conntrack table was full",
    ),
    (
        "early_drop",
        "Entries evicted early to make room in a full table",
    ),
    ("error", "ICMP errors conntrack could not match"),
    (
        "search_restart",
        "Lookups restarted because the hash table was resized",
    ),
    ("clash_resolve", "Insert clashes that were resolved"),
    (
        "chaintoolong",
        "Entries refused because their hash chain was too long",
    ),
];

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<ConntrackSample>() else {
        return Ok(());
    };
    e.gauge_value(
        "nodediag_conntrack_entries",
        "Entries in the conntrack table of the host network namespace (net.netfilter.nf_conntrack_count).",
        s.entries,
    )?;
    e.gauge_value(
        "nodediag_conntrack_entries_peak",
        "Highest entry count of the host network namespace's conntrack table read since the previous sample (nf_conntrack_count, read every --conntrack.peak-interval).",
        s.peak_entries(),
    )?;
    e.gauge_value(
        "nodediag_conntrack_entries_limit",
        "Size limit of the conntrack table (net.netfilter.nf_conntrack_max).",
        s.max,
    )?;
    if let Some(b) = s.buckets {
        e.gauge_value(
            "nodediag_conntrack_buckets",
            "Hash buckets of the conntrack table (net.netfilter.nf_conntrack_buckets).",
            b,
        )?;
    }
    let Some(stats) = s.stats else { return Ok(()) };
    for ((name, value), (_, help)) in stats.fields().into_iter().zip(STAT_HELP) {
        let Some(v) = value else { continue };
        e.counter_value(
            &format!("nodediag_conntrack_{name}_total"),
            &format!("{help}; per-CPU conntrack statistics summed (ctnetlink, or /proc/net/stat/nf_conntrack)."),
            v,
        )?;
    }
    Ok(())
}
