//! Latencies counted since start, as a Prometheus histogram wants them: classic
//! buckets with fixed bounds, and the same observations in exponential buckets.

use crate::collect::native_histogram::NativeHistogram;
use serde::Serialize;
use std::marker::PhantomData;

/// The classic bucket bounds of one kind of latency, seconds, ascending.
pub trait Bounds {
    const BOUNDS: &'static [f64];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram<B> {
    /// Observations per bucket of `B::BOUNDS`, then the ones above the last bound.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
    /// The same observations in exponential buckets (a Prometheus native histogram).
    #[serde(skip)]
    pub native: NativeHistogram,
    #[serde(skip)]
    bounds: PhantomData<B>,
}

impl<B> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            counts: Vec::new(),
            sum_seconds: 0.0,
            count: 0,
            native: NativeHistogram::default(),
            bounds: PhantomData,
        }
    }
}

impl<B: Bounds> Histogram<B> {
    pub fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; B::BOUNDS.len() + 1];
        }
        let i = B::BOUNDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(B::BOUNDS.len());
        self.counts[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
        self.native.observe(seconds);
    }

    /// (upper bound, cumulative count) for each bound, then (+Inf, count).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        B::BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, le)| {
                acc += self.counts.get(i).copied().unwrap_or(0);
                (le, acc)
            })
            .collect()
    }
}
