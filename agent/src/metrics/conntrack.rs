use super::encode::{Encoder, Kind};
use crate::collect::ConntrackSample;
use crate::store::Snapshot;

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

pub fn render(snap: &Snapshot, e: &mut Encoder) {
    let Some((_, s)) = snap.latest::<ConntrackSample>() else {
        return;
    };
    e.single(
        "nodediag_conntrack_entries",
        Kind::Gauge,
        "Entries in the conntrack table of the host network namespace (net.netfilter.nf_conntrack_count).",
        s.entries as f64,
    );
    e.single(
        "nodediag_conntrack_entries_peak",
        Kind::Gauge,
        "Highest entry count of the host network namespace's conntrack table read since the previous sample (nf_conntrack_count, read every --conntrack.peak-interval).",
        s.peak_entries() as f64,
    );
    e.single(
        "nodediag_conntrack_entries_limit",
        Kind::Gauge,
        "Size limit of the conntrack table (net.netfilter.nf_conntrack_max).",
        s.max as f64,
    );
    if let Some(b) = s.buckets {
        e.single(
            "nodediag_conntrack_buckets",
            Kind::Gauge,
            "Hash buckets of the conntrack table (net.netfilter.nf_conntrack_buckets).",
            b as f64,
        );
    }
    let Some(stats) = s.stats else { return };
    for ((name, value), (_, help)) in stats.fields().into_iter().zip(STAT_HELP) {
        let Some(v) = value else { continue };
        let metric = format!("nodediag_conntrack_{name}_total");
        e.single(
            &metric,
            Kind::Counter,
            &format!("{help}; per-CPU conntrack statistics summed (ctnetlink, or /proc/net/stat/nf_conntrack)."),
            v as f64,
        );
    }
}
