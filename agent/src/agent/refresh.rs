//! Findings are evaluated again after samples arrive, once for a burst of them and
//! off the threads that serve requests. Collectors that share an interval finish
//! within moments of each other: evaluating every rule after each of them did the
//! same work once per collector (on a 500-pod node, a quarter of the agent's CPU),
//! on an async worker a scrape might have been waiting for. The memory the round
//! freed is given back then too. Each signal's metrics are encoded as soon as its
//! collector records, for the next scrape to find ready.

use super::Agent;
use crate::kernel::thread_nice;
use crate::metrics::exposition::Exposition;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long after a sample the evaluation waits for the rest of the round.
const GATHER: Duration = Duration::from_millis(100);

/// How long it waits at most for collectors still running: one that hangs or runs
/// long does not hold the findings of the others back longer than this.
const GATHER_AT_MOST: Duration = Duration::from_secs(1);

/// What the scheduler tells the evaluation: a collection started, or one ended
/// (with a sample, an error, or hung).
#[derive(Default)]
pub struct Rounds {
    wanted: Notify,
    collecting: AtomicUsize,
    metrics: Option<Arc<Exposition>>,
}

impl Rounds {
    /// Rounds whose recorded collections are encoded in `metrics` ahead of scrapes.
    pub fn encoding_into(metrics: Arc<Exposition>) -> Rounds {
        Rounds {
            metrics: Some(metrics),
            ..Rounds::default()
        }
    }

    pub fn started(&self) {
        self.collecting.fetch_add(1, Ordering::SeqCst);
    }

    /// A collection ended and its result goes into the store now: scrapes keep its
    /// signal's last encoding until the new one is made (see [`Rounds::recorded`]).
    pub fn recording(&self, collector: &'static str) {
        if let Some(m) = &self.metrics {
            m.will_warm(collector);
        }
    }

    /// A collection's result is in the store: its metrics are encoded for the next
    /// scrape at once, on the collection's own thread (off the threads that serve,
    /// and without another thread woken for it).
    pub fn recorded(&self, collector: &'static str) {
        if let Some(m) = &self.metrics {
            let _lowered = thread_nice::Lowered::new();
            if let Err(e) = m.warm_signal(collector) {
                tracing::warn!(error = %e, "encoding /metrics ahead of the next scrape");
            }
        }
    }

    /// A collection ended (with a sample, an error, or cancelled).
    pub fn ended(&self) {
        self.collecting.fetch_sub(1, Ordering::SeqCst);
        self.wanted.notify_one();
    }

    /// A collection is still running past its timeout, now marked hung in the store.
    pub fn hung(&self) {
        self.wanted.notify_one();
    }

    /// Returns once a burst of results is in: some time after the first, once no
    /// collection is running or [`GATHER_AT_MOST`] after the first. A result arriving
    /// while the caller evaluates wakes the next call at once.
    async fn burst(&self) {
        self.wanted.notified().await;
        let deadline = Instant::now() + GATHER_AT_MOST;
        tokio::time::sleep(GATHER).await;
        while self.collecting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, self.wanted.notified()).await;
        }
    }
}

/// The handle the scheduler reports to, and the task that evaluates after each
/// burst of samples.
pub fn spawn(agent: Arc<Agent>, metrics: Arc<Exposition>) -> (Arc<Rounds>, JoinHandle<()>) {
    let rounds = Arc::new(Rounds::encoding_into(metrics));
    let waiting = rounds.clone();
    let task = tokio::spawn(async move {
        loop {
            waiting.burst().await;
            let a = agent.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _lowered = thread_nice::Lowered::new();
                a.refresh_findings();
                crate::memory::return_free_pages();
            })
            .await;
        }
    });
    (rounds, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_ends_when_the_last_collection_does() {
        let rounds = Arc::new(Rounds::default());
        rounds.started();
        rounds.started();
        rounds.ended();
        let r = rounds.clone();
        let ended_at = tokio::spawn(async move {
            r.burst().await;
            Instant::now()
        });
        let begun = Instant::now();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!ended_at.is_finished(), "one collection still runs");
        rounds.ended();
        let at = ended_at.await.unwrap();
        assert_eq!(at - begun, Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_collection_that_never_ends_holds_a_burst_back_only_so_long() {
        let rounds = Rounds::default();
        rounds.started();
        rounds.started();
        rounds.ended();
        let begun = Instant::now();
        rounds.burst().await;
        assert_eq!(begun.elapsed(), GATHER_AT_MOST);
        // Alone, a result waits only for the others of its tick.
        rounds.hung();
        let begun = Instant::now();
        rounds.collecting.store(0, Ordering::SeqCst);
        rounds.burst().await;
        assert_eq!(begun.elapsed(), GATHER);
    }
}
