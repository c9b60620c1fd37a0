//! Rates over the rule window, from a collector's history.

use std::time::{Duration, SystemTime};

/// The samples no older than `window` before the newest one, oldest first.
pub fn within<'a, T>(
    history: &'a [(SystemTime, &'a T)],
    window: Duration,
) -> &'a [(SystemTime, &'a T)] {
    let Some((newest, _)) = history.last() else {
        return history;
    };
    let start = history
        .iter()
        .position(|(at, _)| newest.duration_since(*at).is_ok_and(|age| age <= window))
        .unwrap_or(history.len() - 1);
    &history[start..]
}

/// How much a counter rose across consecutive values, like PromQL's `increase()`: a
/// value lower than the one before is a reset (module reload, new cgroup), and the
/// counter is taken to have restarted from zero. Never negative.
pub fn increase(values: impl IntoIterator<Item = u64>) -> u64 {
    let mut total = 0u64;
    let mut prev: Option<u64> = None;
    for v in values {
        if let Some(p) = prev {
            total = total.saturating_add(if v >= p { v - p } else { v });
        }
        prev = Some(v);
    }
    total
}

/// Seconds between the first and last sample of a slice.
pub fn span(history: &[(SystemTime, impl Sized)]) -> Duration {
    match (history.first(), history.last()) {
        (Some((a, _)), Some((b, _))) => b.duration_since(*a).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_handles_resets_and_flat_counters() {
        assert_eq!(increase([5, 7, 7, 10]), 5);
        assert_eq!(increase([100, 3, 8]), 8, "reset to 3 then +5");
        assert_eq!(increase([9]), 0, "one sample says nothing about a rate");
        assert_eq!(increase(Vec::<u64>::new()), 0);
    }

    #[test]
    fn within_keeps_only_the_window() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let v = 0u8;
        let h = vec![(t(0), &v), (t(100), &v), (t(250), &v), (t(400), &v)];
        let w = within(&h, Duration::from_secs(300));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].0, t(100));
        assert_eq!(span(w), Duration::from_secs(300));
        assert_eq!(within(&h, Duration::from_secs(1)).len(), 1);
    }
}
