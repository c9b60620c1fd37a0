//! Latencies in exponential buckets, as Prometheus native histograms define them
//! (schema 3): bucket `i` holds the values in (2^((i-1)/8), 2^(i/8)], so each bucket
//! is 2^(1/8) = 1.0905 times as wide as the one below and a quantile read from the
//! buckets is within 9% of the true value, whatever the range. Values at or below
//! the zero threshold go to a zero bucket. Counts are since the collector started;
//! only buckets with observations are kept, so latencies from 10 µs to 100 s take at
//! most 8 × 24 = 192 of them.
//!
//! Kept next to the classic buckets by the collectors that time things (the fsync
//! probe, the DNS probe), as plain counts: `metrics` encodes them at scrape time.

use std::collections::BTreeMap;

/// 2^SCHEMA buckets per doubling. client_golang's default bucket factor, 1.1, picks
/// the same schema.
pub const SCHEMA: i32 = 3;
const PER_DOUBLING: i32 = 1 << SCHEMA;

/// Values at or below this count in the zero bucket: 2^-128, client_golang's
/// default, so every latency the clock can tell from zero has a bucket of its own.
/// Being above 0, it also marks the histogram as native before any observation.
pub const ZERO_THRESHOLD: f64 = 2.938735877055719e-39;

/// 2^(k/8 - 1) for k in 0..8: where each of a doubling's eight buckets starts, for
/// a mantissa in [0.5, 1).
const LOWER_BOUNDS: [f64; PER_DOUBLING as usize] = [
    0.5,
    0.5452538663326288,
    0.5946035575013605,
    0.6484197773255048,
    std::f64::consts::FRAC_1_SQRT_2,
    0.7711054127039704,
    0.8408964152537145,
    0.9170040432046712,
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeHistogram {
    zero_count: u64,
    /// Observations per bucket index; only buckets that have some.
    buckets: BTreeMap<i32, u64>,
}

impl NativeHistogram {
    /// Latencies are never negative or NaN; anything not above the zero threshold
    /// (NaN included) counts in the zero bucket, so the buckets always add up to the
    /// number of observations.
    pub fn observe(&mut self, v: f64) {
        if v > ZERO_THRESHOLD {
            *self.buckets.entry(bucket_index(v)).or_default() += 1;
        } else {
            self.zero_count += 1;
        }
    }

    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// (bucket index, observations) in increasing index order, empty buckets left out.
    pub fn buckets(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.buckets.iter().map(|(&i, &n)| (i, n))
    }

    pub fn count(&self) -> u64 {
        self.zero_count + self.buckets.values().sum::<u64>()
    }
}

/// The index of the bucket holding `v` (> 0): the `i` with 2^((i-1)/8) < v <= 2^(i/8).
/// Read from the float's exponent and mantissa, so values on a bound (powers of two
/// among them) land in the bucket that bound closes, with no rounding of a logarithm.
pub fn bucket_index(v: f64) -> i32 {
    let (mantissa, exp) = frexp(v);
    let within = LOWER_BOUNDS.iter().filter(|&&b| b < mantissa).count() as i32;
    (exp - 1) * PER_DOUBLING + within
}

/// The upper bound of bucket `i`: 2^(i/8).
pub fn upper_bound(i: i32) -> f64 {
    (f64::from(i) / f64::from(PER_DOUBLING)).exp2()
}

/// `v` as mantissa × 2^exp with the mantissa in [0.5, 1), for normal positive `v`
/// (the zero threshold keeps subnormals out).
fn frexp(v: f64) -> (f64, i32) {
    const MANTISSA_BITS: u64 = (1 << 52) - 1;
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let mantissa = f64::from_bits((bits & MANTISSA_BITS) | (1022 << 52));
    (mantissa, biased - 1022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_the_eighths_of_a_doubling() {
        for (k, b) in LOWER_BOUNDS.iter().enumerate() {
            let exact = (k as f64 / 8.0 - 1.0).exp2();
            assert!(
                (b - exact).abs() <= f64::EPSILON * exact,
                "{k}: {b} vs {exact}"
            );
        }
    }

    #[test]
    fn values_land_in_the_bucket_their_bounds_say() {
        // Indices worked out by hand: ceil(8 * log2(v)).
        for (v, i) in [
            (1.0, 0),
            (0.5, -8),
            (0.51, -7),
            (2.0, 8),
            (1.01, 1),
            (0.001, -79),  // log2 = -9.966
            (0.004, -63),  // log2 = -7.966
            (0.0125, -50), // log2 = -6.322
            (10.0, 27),    // log2 = 3.322
            (1e-6, -159),  // log2 = -19.93
        ] {
            assert_eq!(bucket_index(v), i, "{v}");
            assert!(upper_bound(i - 1) < v && v <= upper_bound(i) * (1.0 + 1e-15));
        }
        // A power of two closes its own bucket; just above any bound, the next opens.
        for i in -200..100 {
            let b = upper_bound(i);
            if i % 8 == 0 {
                assert_eq!(bucket_index(b), i, "2^{}", i / 8);
            }
            assert_eq!(bucket_index(b * (1.0 + 1e-12)), i + 1);
        }
    }

    #[test]
    fn counts_are_sparse_and_add_up() {
        let mut h = NativeHistogram::default();
        for v in [0.001, 0.001, 0.0011, 2.0, 0.0, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.zero_count(), 2);
        assert_eq!(
            h.buckets().collect::<Vec<_>>(),
            [(-79, 2), (-78, 1), (8, 1)]
        );
        assert_eq!(h.count(), 6);
    }
}
