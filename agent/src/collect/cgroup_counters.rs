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
/// 16-bit header of four 4-bit widths, then each counter's significant bytes, little
/// endian: 8 bytes for a cgroup without a limit and a day of CPU time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedCounters {
    keys: Arc<[u64]>,
    stats: Box<[u8]>,
}

/// The width a counter has in a header when there is none: usage, when neither v2's
/// `cpu.stat` nor v1's `cpuacct.usage` gave one.
const ABSENT: usize = 0xf;

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
        let mut stats = Vec::with_capacity(counters.len() * 8);
        for (_, s) in counters {
            let at = stats.len();
            stats.extend_from_slice(&[0, 0]);
            let fields = [
                Some(s.nr_periods),
                Some(s.nr_throttled),
                Some(s.throttled_ns),
                s.usage_ns,
            ];
            let mut header = 0u16;
            for (i, value) in fields.into_iter().enumerate() {
                let width = match value {
                    None => ABSENT,
                    Some(v) => {
                        let width = (u64::BITS - v.leading_zeros()).div_ceil(8) as usize;
                        stats.extend_from_slice(&v.to_le_bytes()[..width]);
                        width
                    }
                };
                header |= (width as u16) << (4 * i);
            }
            stats[at..at + 2].copy_from_slice(&header.to_le_bytes());
        }
        stats.extend_from_slice(&[0; 8]);
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
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            keys: self.keys.iter(),
            bytes: &self.stats,
        }
    }
}

/// The byte width of counter `i` in `header`; None when the counter is absent.
fn width(header: u16, i: u16) -> Option<usize> {
    Some(usize::from(header >> (4 * i) & 0xf)).filter(|&w| w != ABSENT)
}

/// Decodes as it goes: the rules walk every sample of the window each evaluation.
pub struct Iter<'a> {
    keys: std::slice::Iter<'a, u64>,
    bytes: &'a [u8],
}

impl Iterator for Iter<'_> {
    type Item = Counters;

    fn next(&mut self) -> Option<Counters> {
        let &key = self.keys.next()?;
        let (header, rest) = self.bytes.split_first_chunk::<2>()?;
        let header = u16::from_le_bytes(*header);
        self.bytes = rest;
        let mut field = |i: u16| {
            let width = width(header, i)?;
            // A whole word, then the counter's bytes of it: the packing ends in a
            // word of padding so that the last counter can be read so too.
            let word = u64::from_le_bytes(*self.bytes.first_chunk::<8>()?);
            self.bytes = self.bytes.get(width..)?;
            Some(word & u64::MAX.checked_shr(64 - 8 * width as u32).unwrap_or(0))
        };
        let stat = CpuStat {
            nr_periods: field(0).unwrap_or(0),
            nr_throttled: field(1).unwrap_or(0),
            throttled_ns: field(2).unwrap_or(0),
            usage_ns: field(3),
        };
        Some((key, stat))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.keys.size_hint()
    }
}

impl Iter<'_> {
    /// The counters of `key`, passing over smaller keys by their headers alone; None,
    /// with nothing past `key` consumed, when `key` is not there. Keys sought must
    /// rise: the rules look up a few cgroups of every sample in the window.
    pub fn seek(&mut self, key: u64) -> Option<CpuStat> {
        while self.keys.as_slice().first()? < &key {
            self.keys.next();
            let (header, rest) = self.bytes.split_first_chunk::<2>()?;
            let header = u16::from_le_bytes(*header);
            let widths: usize = (0..4).filter_map(|i| width(header, i)).sum();
            self.bytes = rest.get(widths..)?;
        }
        match self.keys.as_slice().first() {
            Some(&k) if k == key => self.next().map(|(_, stat)| stat),
            _ => None,
        }
    }
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
    fn seeking_skips_smaller_keys_and_finds_only_those_there() {
        let counters = [
            (2, stat(1, 0, 0, None)),
            (4, stat(300, 200, 1 << 40, Some(u64::MAX))),
            (6, stat(0, 0, 0, Some(5))),
            (8, stat(9, 9, 9, Some(9))),
        ];
        let packed = PackedCounters::pack(&counters, &Arc::from([]));
        let mut it = packed.iter();
        assert_eq!(it.seek(1), None);
        assert_eq!(it.seek(3), None);
        assert_eq!(it.seek(6), Some(counters[2].1));
        assert_eq!(it.seek(7), None);
        assert_eq!(it.next(), Some(counters[3]));
        assert_eq!(it.seek(9), None);
        let mut it = packed.iter();
        assert_eq!(it.seek(8), Some(counters[3].1));
    }

    #[test]
    fn an_unlimited_cgroup_takes_its_header_and_its_usage() {
        // A day of CPU time in ns needs 47 bits: six bytes.
        let counters = [(9, stat(0, 0, 0, Some(86_400 * 1_000_000_000)))];
        let packed = PackedCounters::pack(&counters, &Arc::from([]));
        assert_eq!(packed.stats.len(), 2 + 6 + 8);
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
