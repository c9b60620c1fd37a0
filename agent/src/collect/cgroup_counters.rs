//! Every cgroup's `cpu.stat` counters of one round, packed as the rule window keeps
//! them: at 500 pods and `--interval 1s` the window's 22 cgroup samples held 1.1 MiB
//! as `(key, CpuStat)` pairs of 48 bytes, for counters that are mostly zero (a cgroup
//! without a CPU limit is never throttled) or a few bytes of significant digits.

use crate::kernel::cgroup::CpuStat;
use std::sync::Arc;

/// One cgroup's counters: its path key ([`super::cgroup::path_key`]) and `cpu.stat`.
pub type Counters = (u64, CpuStat);

/// The counters of a round's cgroups, sorted by key. The keys are shared with the
/// previous round's while the node's cgroups stay the same, and each `cpu.stat` is a
/// byte saying which of its four counters are there and not zero, then those
/// counters as LEB128 varints: about 9 bytes a cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedCounters {
    keys: Arc<[u64]>,
    stats: Box<[u8]>,
}

const PERIODS: u8 = 1;
const THROTTLED: u8 = 2;
const THROTTLED_NS: u8 = 4;
/// Usage is known (cgroup v2, or v1 with cpuacct); it may be zero.
const USAGE: u8 = 8;

impl PackedCounters {
    /// Packs `counters`, which must be sorted by key, reusing `previous` (the last
    /// round's [`PackedCounters::keys`]) when the keys are the same.
    pub fn pack(counters: &[Counters], previous: &Arc<[u64]>) -> PackedCounters {
        let keys = if previous
            .iter()
            .copied()
            .eq(counters.iter().map(|(k, _)| *k))
        {
            previous.clone()
        } else {
            counters.iter().map(|(k, _)| *k).collect()
        };
        let mut stats = Vec::with_capacity(counters.len() * 10);
        for (_, s) in counters {
            let fields = [
                (PERIODS, Some(s.nr_periods).filter(|&v| v != 0)),
                (THROTTLED, Some(s.nr_throttled).filter(|&v| v != 0)),
                (THROTTLED_NS, Some(s.throttled_ns).filter(|&v| v != 0)),
                (USAGE, s.usage_ns),
            ];
            stats.push(
                fields
                    .iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(bit, _)| bit)
                    .sum(),
            );
            for value in fields.iter().filter_map(|(_, v)| *v) {
                put_varint(&mut stats, value);
            }
        }
        PackedCounters {
            keys,
            stats: stats.into_boxed_slice(),
        }
    }

    pub fn keys(&self) -> &Arc<[u64]> {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The counters, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Counters> + '_ {
        let mut bytes = self.stats.iter().copied();
        self.keys.iter().map(move |&key| {
            let present = bytes.next().unwrap_or(0);
            let mut field = |bit: u8| (present & bit != 0).then(|| take_varint(&mut bytes));
            let stat = CpuStat {
                nr_periods: field(PERIODS).unwrap_or(0),
                nr_throttled: field(THROTTLED).unwrap_or(0),
                throttled_ns: field(THROTTLED_NS).unwrap_or(0),
                usage_ns: field(USAGE),
            };
            (key, stat)
        })
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The packing is ours and whole, so the bytes always end where a value does.
fn take_varint(bytes: &mut impl Iterator<Item = u8>) -> u64 {
    let mut value = 0u64;
    for (shift, byte) in (0..64).step_by(7).zip(bytes) {
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(p: u64, t: u64, ns: u64, usage: Option<u64>) -> CpuStat {
        CpuStat {
            nr_periods: p,
            nr_throttled: t,
            throttled_ns: ns,
            usage_ns: usage,
        }
    }

    #[test]
    fn every_counter_comes_back_as_it_went_in() {
        let counters = vec![
            (1, stat(0, 0, 0, None)),
            (2, stat(0, 0, 0, Some(0))),
            (3, stat(127, 128, 16_383, Some(16_384))),
            (4, stat(u64::MAX, 1, u64::MAX - 1, Some(u64::MAX))),
            (u64::MAX, stat(7, 0, 0, Some(3_600_000_000_000_000))),
        ];
        let packed = PackedCounters::pack(&counters, &Arc::from([]));
        assert_eq!(packed.iter().collect::<Vec<_>>(), counters);
        assert!(PackedCounters::pack(&[], &Arc::from([])).is_empty());
    }

    #[test]
    fn an_unlimited_cgroup_takes_a_byte_and_its_usage() {
        // A day of CPU time in ns needs 47 bits: seven varint bytes.
        let counters = [(9, stat(0, 0, 0, Some(86_400 * 1_000_000_000)))];
        let packed = PackedCounters::pack(&counters, &Arc::from([]));
        assert_eq!(packed.stats.len(), 1 + 7);
    }

    #[test]
    fn keys_are_shared_while_the_cgroups_stay_the_same() {
        let round = |usage| [(1, stat(0, 0, 0, Some(usage))), (5, stat(0, 0, 0, None))];
        let first = PackedCounters::pack(&round(10), &Arc::from([]));
        let second = PackedCounters::pack(&round(20), first.keys());
        assert!(Arc::ptr_eq(&first.keys, &second.keys));
        assert_eq!(second.iter().next(), Some((1, stat(0, 0, 0, Some(20)))));
        let changed = PackedCounters::pack(&[(1, stat(0, 0, 0, None))], second.keys());
        assert!(!Arc::ptr_eq(&changed.keys, &second.keys));
        assert_eq!(changed.iter().count(), 1);
    }
}
