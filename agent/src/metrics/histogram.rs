//! One histogram series: the classic buckets every scraper reads, and the native
//! (exponential) buckets the protobuf exposition carries beside them. The text
//! formats have no native buckets and write the classic ones; a Prometheus that
//! ingests native histograms (and so asks for protobuf) keeps the native ones.

use crate::collect::native_histogram::{self, NativeHistogram};
use prometheus_client::encoding::{
    MetricEncoder, NativeHistogram as NativeFields, NativeHistogramBuckets, NoLabelSet,
};
use std::fmt;

/// A histogram as a collector keeps it.
#[derive(Debug, Clone)]
pub struct HistogramSeries<'a> {
    pub sum: f64,
    pub count: u64,
    /// (upper bound, observations in that bucket and above the previous bound), the
    /// last one +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub native: Option<&'a NativeHistogram>,
}

impl<'a> HistogramSeries<'a> {
    /// From per-bucket counts over `bounds` followed by the count above the last
    /// bound (empty before the first observation).
    pub fn new(
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
        count: u64,
        native: Option<&'a NativeHistogram>,
    ) -> Self {
        let buckets = bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, le)| (le, counts.get(i).copied().unwrap_or(0)))
            .collect();
        Self {
            sum,
            count,
            buckets,
            native,
        }
    }
}

pub fn encode(m: &mut MetricEncoder, h: &HistogramSeries) -> fmt::Result {
    let Some(native) = h.native else {
        return m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None);
    };
    let (spans, deltas) = spans_and_deltas(native.buckets());
    let fields = NativeFields {
        schema: native_histogram::SCHEMA,
        zero_threshold: native_histogram::ZERO_THRESHOLD,
        zero_count: native.zero_count(),
        negative: NativeHistogramBuckets {
            spans: &[],
            deltas: &[],
        },
        positive: NativeHistogramBuckets {
            spans: &spans,
            deltas: &deltas,
        },
        created: None,
    };
    m.encode_histogram_with_native::<NoLabelSet>(h.sum, h.count, &h.buckets, None, fields)
}

/// The buckets that have observations, in increasing index order, as Prometheus
/// native histograms carry them: spans of consecutive buckets, each (offset from the
/// end of the previous span, or the first index; length), and each bucket's count as
/// the difference from the bucket before it.
pub fn spans_and_deltas(buckets: impl Iterator<Item = (i32, u64)>) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::new();
    let mut next_index: Option<i32> = None;
    let mut previous = 0i64;
    for (index, count) in buckets {
        match (next_index, spans.last_mut()) {
            (Some(next), Some(span)) if index == next => span.1 += 1,
            (Some(next), _) => spans.push((index - next, 1)),
            (None, _) => spans.push((index, 1)),
        }
        let count = count as i64;
        deltas.push(count - previous);
        previous = count;
        next_index = Some(index + 1);
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_join_consecutive_buckets_and_deltas_chain_across_gaps() {
        let (spans, deltas) =
            spans_and_deltas([(-3, 2), (-2, 5), (-1, 1), (4, 1), (6, 3)].into_iter());
        // -3..=-1, then 4 (4 empty after -1), then 6 (1 empty after 4).
        assert_eq!(spans, [(-3, 3), (4, 1), (1, 1)]);
        assert_eq!(deltas, [2, 3, -4, 0, 2]);
        assert_eq!(spans_and_deltas(std::iter::empty()), (vec![], vec![]));
    }

    #[test]
    fn classic_buckets_end_with_inf() {
        let h = HistogramSeries::new(&[0.1, 1.0], &[1, 0, 2], 5.5, 3, None);
        assert_eq!(h.buckets, [(0.1, 1), (1.0, 0), (f64::INFINITY, 2)]);
        let empty = HistogramSeries::new(&[0.1, 1.0], &[], 0.0, 0, None);
        assert_eq!(empty.buckets, [(0.1, 0), (1.0, 0), (f64::INFINITY, 0)]);
    }
}
