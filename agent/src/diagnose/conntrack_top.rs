//! Who fills the conntrack table, as findings, the report and the API name them: the
//! counts of the latest dump ranked, each source address named by the pod that owns
//! it (see `pod_addresses`).

use super::{pod_addresses, RuleContext};
use crate::collect::conntrack_dumper::TopDump;
use crate::collect::conntrack_top::{ConntrackTop, TopList};
use crate::collect::ConntrackSample;
use crate::store::Snapshot;
use crate::time::rfc3339;
use std::sync::Arc;
use std::time::SystemTime;

/// Sources a remedy names.
const REMEDY_SOURCES: usize = 3;

/// `dump` ranked with the owners the latest netns sample knows.
pub fn ranked(snap: &Snapshot, dump: &TopDump, limit: usize) -> ConntrackTop {
    dump.rank(&pod_addresses::from_snapshot(snap), limit)
}

/// The latest conntrack sample's dump, when there is one.
pub fn latest_dump(snap: &Snapshot) -> Option<Arc<TopDump>> {
    snap.latest::<ConntrackSample>()?.1.top.clone()
}

/// "The top sources are shop/cart-0 (41%), ...": what the latest dump says, for the
/// remedy of a finding at `at`. None without a dump of the rule window, or when the
/// dump read no entry.
pub fn remedy_sentence(snap: &Snapshot, ctx: &RuleContext, at: SystemTime) -> Option<String> {
    let dump = latest_dump(snap)?;
    if dump.age(at) > ctx.window {
        return None;
    }
    let top = ranked(snap, &dump, REMEDY_SOURCES);
    sentence(&top, &dump)
}

fn sentence(top: &ConntrackTop, dump: &TopDump) -> Option<String> {
    let sources = listed(&top.owners)?;
    let mut out = format!(
        "The top sources are {sources} of the {} entries read at {}",
        top.entries,
        rfc3339(dump.finished_at)
    );
    if dump.cut.is_some() {
        out.push_str(" (a cut dump: shares of the part read)");
    }
    if let Some(d) = top.destinations.rows.first() {
        out.push_str(&format!(
            "; the top destination is {} ({})",
            d.key,
            percent(d.share)
        ));
    }
    out.push('.');
    Some(out)
}

/// `a (41%), b (12%) and c (3%)`.
fn listed(list: &TopList) -> Option<String> {
    let items: Vec<String> = list
        .rows
        .iter()
        .map(|r| format!("{} ({})", r.key, percent(r.share)))
        .collect();
    match items.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [rest @ .., last] => Some(format!("{} and {last}", rest.join(", "))),
    }
}

/// Whole percent, but never "0%" for a share that is there.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p > 0.0 && p < 1.0 {
        "<1%".into()
    } else {
        format!("{p:.0}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::conntrack_dumper::Trigger;
    use crate::collect::conntrack_top::TopBuilder;
    use crate::kernel::conntrack_dump::{ConntrackEntry, DumpCut, Tuple};
    use std::time::Duration;

    fn entry(src: &str, dst: &str, dport: u16) -> ConntrackEntry {
        ConntrackEntry {
            original: Tuple {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                proto: 17,
                src_port: Some(40000),
                dst_port: Some(dport),
                icmp: None,
            },
            reply: None,
            status: 0,
            tcp_state: None,
            timeout_secs: None,
            mark: None,
            zone: None,
        }
    }

    #[test]
    fn the_sentence_names_owners_shares_and_the_top_destination() {
        let mut b = TopBuilder::new();
        for _ in 0..41 {
            b.add(&entry("10.244.1.7", "10.96.0.10", 53));
        }
        for _ in 0..12 {
            b.add(&entry("10.0.0.5", "10.96.0.10", 53));
        }
        for i in 0..47 {
            b.add(&entry(&format!("10.244.2.{}", i + 1), "10.96.0.1", 443));
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut dump = TopDump::from_counts(b, at, Trigger::Threshold, Some(100));
        let owners = [("10.244.1.7".parse().unwrap(), "shop/cart-0".to_string())].into();
        let top = dump.rank(&owners, REMEDY_SOURCES);
        let s = sentence(&top, &dump).unwrap();
        assert!(
            s.starts_with("The top sources are shop/cart-0 (41%), 10.0.0.5 (12%) and 10.244.2.1 (1%) of the 100 entries read at 2023-11-14T22:13:20.000Z"),
            "{s}"
        );
        assert!(
            s.ends_with("; the top destination is 10.96.0.10:53/udp (53%)."),
            "{s}"
        );
        dump.cut = Some(DumpCut::Deadline);
        assert!(sentence(&top, &dump).unwrap().contains("a cut dump"));
        let empty = TopDump::from_counts(TopBuilder::new(), at, Trigger::Request, Some(0));
        assert_eq!(sentence(&empty.rank(&owners, 3), &empty), None);
    }

    #[test]
    fn small_shares_are_not_rounded_away() {
        assert_eq!(percent(0.004), "<1%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.415), "42%");
    }
}
