//! Who fills the conntrack table: entries of a dump folded into top sources (with
//! the pod that owns each address), top destinations (`10.96.0.10:53/udp`),
//! protocols and states, each with its share of all entries. Pure: the caller feeds
//! entries (from `kernel::conntrack_dump`) and says which address belongs to whom.
//!
//! Counts are exact: one counter per distinct source and destination, so memory
//! grows with the number of distinct keys (bounded by the dump's entry budget), not
//! with the entries themselves.

use crate::kernel::conntrack_dump::{ConntrackEntry, TcpState};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;

/// Address -> owner label, e.g. a pod as `namespace/name`.
pub type Owners = HashMap<IpAddr, String>;

/// Where the original direction of an entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: Option<u16>,
    pub proto: u8,
}

impl fmt::Display for Destination {
    /// `10.96.0.10:53/udp`, `[fd00::a]:443/tcp`, `10.0.0.1/icmp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}")?,
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}")?,
            (a, None) => write!(f, "{a}")?,
        }
        write!(f, "/{}", proto_name(self.proto))
    }
}

/// The usual name of an IP protocol number, else the number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        33 => "dccp".into(),
        47 => "gre".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        n => n.to_string(),
    }
}

/// One line of a top list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    pub key: String,
    /// The pod (or other owner) of a source address, when the caller knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub entries: u64,
    /// entries / all entries of the dump, 0..1.
    pub share: f64,
}

/// The first rows of a ranking, and what the rest add up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopList {
    pub rows: Vec<TopRow>,
    /// Entries of the keys past the last row.
    pub other_entries: u64,
    pub other_share: f64,
    /// How many keys there were in all.
    pub distinct: u64,
}

/// An entry count and its share of all entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Count {
    pub entries: u64,
    pub share: f64,
}

/// States of the entries. `unreplied` and `assured` never overlap but do not add up
/// to all entries: an entry can have had a reply without being assured yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StateCounts {
    /// No packet came back (no IPS_SEEN_REPLY): DNS to a dead server, scans, SYN floods.
    pub unreplied: Count,
    /// IPS_ASSURED: established both ways; early_drop never evicts these.
    pub assured: Count,
    /// TCP entries by tracking state (`time_wait`, `established`, ...).
    pub tcp: TopList,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConntrackTop {
    pub entries: u64,
    /// By original source address.
    pub sources: TopList,
    /// By owner: the source addresses of one pod added up; an address no one owns
    /// is its own row, keyed by the address.
    pub owners: TopList,
    /// By original destination address, port and protocol.
    pub destinations: TopList,
    pub protocols: TopList,
    pub states: StateCounts,
}

/// Folds entries one at a time; `finish` ranks them, as often as asked (the owners
/// of addresses may be known only later, when the ranking is shown).
#[derive(Debug, Clone, Default)]
pub struct TopBuilder {
    entries: u64,
    sources: HashMap<IpAddr, u64>,
    destinations: HashMap<Destination, u64>,
    protocols: BTreeMap<u8, u64>,
    tcp_states: BTreeMap<TcpState, u64>,
    unreplied: u64,
    assured: u64,
}

impl TopBuilder {
    pub fn new() -> TopBuilder {
        TopBuilder::default()
    }

    pub fn add(&mut self, e: &ConntrackEntry) {
        let t = &e.original;
        self.entries += 1;
        *self.sources.entry(t.src).or_default() += 1;
        let dst = Destination {
            addr: t.dst,
            port: t.dst_port,
            proto: t.proto,
        };
        *self.destinations.entry(dst).or_default() += 1;
        *self.protocols.entry(t.proto).or_default() += 1;
        if let Some(s) = e.tcp_state {
            *self.tcp_states.entry(s).or_default() += 1;
        }
        if !e.seen_reply() {
            self.unreplied += 1;
        }
        if e.assured() {
            self.assured += 1;
        }
    }

    /// Entries folded in so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Ranks everything, keeping at most `limit` rows per list.
    pub fn finish(&self, owners: &Owners, limit: usize) -> ConntrackTop {
        let total = self.entries;
        let mut by_owner: HashMap<OwnerKey, u64> = HashMap::new();
        for (addr, n) in &self.sources {
            let key = match owners.get(addr) {
                Some(o) => OwnerKey::Owner(o.clone()),
                None => OwnerKey::Address(*addr),
            };
            *by_owner.entry(key).or_default() += n;
        }
        let sources = rank(
            self.sources.iter().map(|(k, n)| (*k, *n)),
            total,
            limit,
            |a| (a.to_string(), owners.get(a).cloned()),
        );
        let owners_list = rank(by_owner, total, limit, |k| match k {
            OwnerKey::Owner(o) => (o.clone(), Some(o.clone())),
            OwnerKey::Address(a) => (a.to_string(), None),
        });
        ConntrackTop {
            entries: total,
            sources,
            owners: owners_list,
            destinations: rank(
                self.destinations.iter().map(|(k, n)| (*k, *n)),
                total,
                limit,
                |d| (d.to_string(), None),
            ),
            protocols: rank(
                self.protocols.iter().map(|(k, n)| (*k, *n)),
                total,
                limit,
                |p| (proto_name(*p), None),
            ),
            states: StateCounts {
                unreplied: count(self.unreplied, total),
                assured: count(self.assured, total),
                tcp: rank(
                    self.tcp_states.iter().map(|(k, n)| (*k, *n)),
                    total,
                    limit,
                    |s| (tcp_state_name(*s), None),
                ),
            },
        }
    }
}

/// Owners sort before bare addresses when their counts tie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum OwnerKey {
    Owner(String),
    Address(IpAddr),
}

fn tcp_state_name(s: TcpState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{s:?}"))
}

fn share(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 / total as f64
    }
}

fn count(n: u64, total: u64) -> Count {
    Count {
        entries: n,
        share: share(n, total),
    }
}

/// Count descending, then key ascending: the same table always ranks the same way.
fn rank<K: Ord>(
    counts: impl IntoIterator<Item = (K, u64)>,
    total: u64,
    limit: usize,
    label: impl Fn(&K) -> (String, Option<String>),
) -> TopList {
    let mut all: Vec<(K, u64)> = counts.into_iter().collect();
    let distinct = all.len() as u64;
    let limit = limit.min(all.len());
    if limit > 0 && limit < all.len() {
        all.select_nth_unstable_by(limit - 1, |a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    let rest: u64 = all[limit..].iter().map(|(_, n)| n).sum();
    all.truncate(limit);
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    TopList {
        rows: all
            .iter()
            .map(|(k, n)| {
                let (key, owner) = label(k);
                TopRow {
                    key,
                    owner,
                    entries: *n,
                    share: share(*n, total),
                }
            })
            .collect(),
        other_entries: rest,
        other_share: share(rest, total),
        distinct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack_dump::{Tuple, IPS_ASSURED, IPS_SEEN_REPLY};

    fn entry(src: &str, dst: &str, proto: u8, dport: Option<u16>, status: u32) -> ConntrackEntry {
        ConntrackEntry {
            original: Tuple {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                proto,
                src_port: dport.map(|_| 40000),
                dst_port: dport,
                icmp: None,
            },
            reply: None,
            status,
            tcp_state: (proto == 6).then_some(TcpState::Established),
            timeout_secs: None,
            mark: None,
            zone: None,
        }
    }

    /// 8 unreplied DNS queries from pod a, 1 from pod b, 1 assured HTTPS from the host.
    fn build() -> ConntrackTop {
        let mut b = TopBuilder::new();
        for _ in 0..8 {
            b.add(&entry("10.244.1.7", "10.96.0.10", 17, Some(53), 0));
        }
        b.add(&entry("10.244.2.9", "10.96.0.10", 17, Some(53), 0));
        b.add(&entry(
            "192.168.1.5",
            "fd00::1",
            6,
            Some(443),
            IPS_SEEN_REPLY | IPS_ASSURED,
        ));
        let owners: Owners = [
            (
                "10.244.1.7".parse().unwrap(),
                "default/dns-hammer".to_string(),
            ),
            (
                "10.244.2.9".parse().unwrap(),
                "kube-system/coredns".to_string(),
            ),
        ]
        .into();
        b.finish(&owners, 2)
    }

    #[test]
    fn sources_are_ranked_with_their_owner_and_the_rest_counted() {
        let top = build();
        assert_eq!(top.entries, 10);
        let s = &top.sources;
        assert_eq!(s.distinct, 3);
        assert_eq!(s.rows.len(), 2);
        assert_eq!(s.rows[0].key, "10.244.1.7");
        assert_eq!(s.rows[0].owner.as_deref(), Some("default/dns-hammer"));
        assert_eq!(s.rows[0].entries, 8);
        assert!((s.rows[0].share - 0.8).abs() < 1e-9);
        // 10.244.2.9 and 192.168.1.5 tie at 1: the smaller address wins the place.
        assert_eq!(s.rows[1].key, "10.244.2.9");
        assert_eq!(s.other_entries, 1);
        assert!((s.other_share - 0.1).abs() < 1e-9);
    }

    #[test]
    fn destinations_read_as_address_port_protocol() {
        let top = build();
        let d = &top.destinations;
        assert_eq!(d.rows[0].key, "10.96.0.10:53/udp");
        assert_eq!(d.rows[0].entries, 9);
        assert!(
            (d.rows[0].share - 0.9).abs() < 1e-9,
            "90% UDP to 10.96.0.10:53"
        );
        assert_eq!(d.rows[1].key, "[fd00::1]:443/tcp");
        assert_eq!(d.other_entries, 0);
        let icmp = Destination {
            addr: "10.0.0.1".parse().unwrap(),
            port: None,
            proto: 1,
        };
        assert_eq!(icmp.to_string(), "10.0.0.1/icmp");
        assert_eq!(proto_name(250), "250");
    }

    #[test]
    fn states_and_protocols_have_shares() {
        let top = build();
        assert_eq!(top.states.unreplied.entries, 9);
        assert!((top.states.unreplied.share - 0.9).abs() < 1e-9);
        assert_eq!(top.states.assured.entries, 1);
        assert_eq!(top.states.tcp.rows[0].key, "established");
        let p: Vec<(&str, u64)> = top
            .protocols
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.entries))
            .collect();
        assert_eq!(p, vec![("udp", 9), ("tcp", 1)]);
    }

    #[test]
    fn owners_add_up_the_addresses_of_one_pod() {
        let mut b = TopBuilder::new();
        for src in ["10.244.1.7", "fd00:244::7", "10.244.1.7"] {
            b.add(&entry(src, "10.96.0.10", 17, Some(53), 0));
        }
        b.add(&entry("10.0.0.1", "10.96.0.10", 17, Some(53), 0));
        let owners: Owners = [
            ("10.244.1.7".parse().unwrap(), "default/a".to_string()),
            ("fd00:244::7".parse().unwrap(), "default/a".to_string()),
        ]
        .into();
        let top = b.finish(&owners, 10);
        assert_eq!(top.sources.rows.len(), 3, "one row per address");
        let o: Vec<(&str, Option<&str>, u64)> = top
            .owners
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.owner.as_deref(), r.entries))
            .collect();
        assert_eq!(
            o,
            vec![("default/a", Some("default/a"), 3), ("10.0.0.1", None, 1)]
        );
    }

    #[test]
    fn ranking_is_deterministic_whatever_the_insertion_order() {
        let keys = ["10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.4"];
        let mut tops = Vec::new();
        for rotate in 0..keys.len() {
            let mut b = TopBuilder::new();
            for k in keys.iter().cycle().skip(rotate).take(keys.len()) {
                // 10.0.0.4 has 2 entries, the others tie at 1.
                b.add(&entry(k, "10.96.0.1", 6, Some(443), 0));
                if *k == "10.0.0.4" {
                    b.add(&entry(k, "10.96.0.1", 6, Some(443), 0));
                }
            }
            tops.push(b.finish(&Owners::new(), 3));
        }
        let keys_of = |t: &ConntrackTop| -> Vec<String> {
            t.sources.rows.iter().map(|r| r.key.clone()).collect()
        };
        assert_eq!(keys_of(&tops[0]), vec!["10.0.0.4", "10.0.0.1", "10.0.0.2"]);
        assert!(tops.iter().all(|t| t == &tops[0]));
    }

    #[test]
    fn an_empty_table_has_no_rows_and_no_nan() {
        let top = TopBuilder::new().finish(&Owners::new(), 5);
        assert_eq!(top.entries, 0);
        assert!(top.sources.rows.is_empty());
        assert_eq!(top.states.unreplied.share, 0.0);
        assert_eq!(top.sources.other_share, 0.0);
        let top = TopBuilder::new().finish(&Owners::new(), 0);
        assert_eq!(top.sources.distinct, 0);
    }

    #[test]
    fn a_limit_of_zero_keeps_only_the_other_count() {
        let mut b = TopBuilder::new();
        b.add(&entry("10.0.0.1", "10.96.0.1", 17, Some(53), 0));
        let top = b.finish(&Owners::new(), 0);
        assert!(top.sources.rows.is_empty());
        assert_eq!(top.sources.other_entries, 1);
        assert_eq!(top.sources.distinct, 1);
    }
}
