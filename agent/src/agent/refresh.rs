//! Findings are evaluated again after samples arrive, once for a burst of them and
//! off the threads that serve requests. Collectors that share an interval finish
//! within moments of each other: evaluating every rule after each of them did the
//! same work once per collector (on a 500-pod node, a quarter of the agent's CPU),
//! on an async worker a scrape might have been waiting for. The signals' metrics are
//! encoded then too, for the next scrape to find ready, and the memory the round
//! freed is given back.

use super::Agent;
use crate::metrics::exposition::Exposition;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long after a sample the evaluation waits for the rest of the round.
const GATHER: Duration = Duration::from_millis(100);

/// The callback the scheduler calls after each sample, and the task that evaluates.
/// A sample arriving while an evaluation runs asks for one more after it; any number
/// of them asks for one.
pub fn spawn(
    agent: Arc<Agent>,
    metrics: Arc<Exposition>,
) -> (Arc<dyn Fn() + Send + Sync>, JoinHandle<()>) {
    let wanted = Arc::new(Notify::new());
    let waiting = wanted.clone();
    let task = tokio::spawn(async move {
        loop {
            waiting.notified().await;
            tokio::time::sleep(GATHER).await;
            let (a, m) = (agent.clone(), metrics.clone());
            let _ = tokio::task::spawn_blocking(move || {
                a.refresh_findings();
                if let Err(e) = m.warm() {
                    tracing::warn!(error = %e, "encoding /metrics ahead of the next scrape");
                }
                crate::memory::return_free_pages();
            })
            .await;
        }
    });
    (Arc::new(move || wanted.notify_one()), task)
}
