//! The conntrack collector's line in the report.

use crate::collect::conntrack::{ConntrackSample, StatsSource};

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
    out
}
