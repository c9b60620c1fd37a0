//! Runs each collector on its own interval on a blocking thread. A collector that
//! panics is reported as failed and keeps its schedule; one that hangs is reported as
//! hung and is not started again until it returns, so threads never pile up.
//! Collections run nicer than the threads that serve ([`thread_nice`]).
//!
//! Collections take turns: collectors that share an interval start together, and
//! on two cores two of them at once read the kernel and allocate side by side,
//! contending for the allocator's one arena and each other's caches. One at a time,
//! a round at 500 pods cost about 1.4 ms less CPU (two agents side by side, twice
//! swapping places). A collection that waits on something else does not take a
//! turn (DNS on the server; the disk collector's first, on its first probes), and
//! none waits for its turn longer than [`TURN_WAIT`] or behind one that hung.

use super::refresh::Rounds;
use crate::collect::{DynCollector, Enabled};
use crate::kernel::{thread_cpu, thread_nice};
use crate::sample::{AnySample, CollectError};
use crate::store::Store;
use crate::text::panic_message;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

/// The longest a collection waits for its turn before it runs beside the others:
/// well past a healthy round's (tens of milliseconds at 1000 pods), well short of
/// the interval, so a collector slow for its own reasons delays the rest by this at
/// most.
const TURN_WAIT: Duration = Duration::from_secs(1);

/// Runs one collection on the calling (blocking) thread, turning a panic into an error.
pub fn collect_once(collector: &mut dyn DynCollector) -> Result<Arc<dyn AnySample>, CollectError> {
    match catch_unwind(AssertUnwindSafe(|| collector.collect_any())) {
        Ok(result) => result,
        Err(panic) => Err(CollectError::Failed(format!(
            "collector panicked: {}",
            panic_message(&*panic)
        ))),
    }
}

/// One collection, and the CPU it used on this thread and on the helper threads it
/// joined.
fn collect_measured(
    collector: &mut dyn DynCollector,
) -> (Result<Arc<dyn AnySample>, CollectError>, Duration) {
    let _lowered = thread_nice::Lowered::new();
    thread_cpu::take_charged();
    let before = thread_cpu::thread_cpu();
    let result = collect_once(collector);
    let cpu = thread_cpu::thread_cpu().saturating_sub(before) + thread_cpu::take_charged();
    (result, cpu)
}

/// Starts every collector; `rounds` hears when each collection starts and ends (to
/// evaluate findings once the round is in).
pub fn spawn_all(
    store: Arc<Store>,
    collectors: Vec<Enabled>,
    timeout: Duration,
    rounds: Arc<Rounds>,
) -> Vec<JoinHandle<()>> {
    let turns = Arc::new(Semaphore::new(1));
    collectors
        .into_iter()
        .map(|enabled| {
            store.register(enabled.collector.name(), enabled.interval);
            tokio::spawn(run(
                enabled,
                store.clone(),
                timeout,
                rounds.clone(),
                turns.clone(),
            ))
        })
        .collect()
}

/// This collection's turn, or None when it waited [`TURN_WAIT`] in vain.
async fn wait_for_turn(turns: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    let waited = tokio::time::timeout(TURN_WAIT, turns.clone().acquire_owned()).await;
    waited.ok()?.ok()
}

async fn run(
    enabled: Enabled,
    store: Arc<Store>,
    timeout: Duration,
    rounds: Arc<Rounds>,
    turns: Arc<Semaphore>,
) {
    let name = enabled.collector.name();
    let mut ticker = tokio::time::interval(enabled.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut collector = Some(enabled.collector);
    loop {
        ticker.tick().await;
        let Some(mut c) = collector.take() else {
            return;
        };
        // Counted from before its turn, so findings wait for the collections queued.
        rounds.started();
        let mut turn = if c.takes_turns() {
            wait_for_turn(&turns).await
        } else {
            None
        };
        let at = SystemTime::now();
        let started = Instant::now();
        let (s, r) = (store.clone(), rounds.clone());
        // Recorded on the collection's thread, not on the async worker that awaits it:
        // recording cuts the replaced sample down and frees what leaves the window,
        // at 500 pods up to a millisecond, which a scrape queued on that worker
        // waited for (the slowest scrapes' time to first byte).
        let mut handle = tokio::task::spawn_blocking(move || {
            let (result, cpu) = collect_measured(c.as_mut());
            if let Err(e) = &result {
                tracing::debug!(collector = name, error = %e, "collection did not succeed");
            }
            r.recording(name);
            s.record(name, at, started.elapsed(), result);
            s.add_cpu(name, cpu);
            r.recorded(name);
            c
        });
        let joined = match tokio::time::timeout(timeout, &mut handle).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(collector = name, ?timeout, "collection hung");
                store.mark_hung(name, at);
                rounds.hung();
                // The collections queued behind it go on.
                turn.take();
                handle.await
            }
        };
        match joined {
            Ok(c) => collector = Some(c),
            Err(e) => {
                // Only cancellation at shutdown gets here: panics are caught inside.
                // Not encoded ahead: scrapes encode the error for themselves.
                store.record(
                    name,
                    at,
                    started.elapsed(),
                    Err(CollectError::Failed(format!("collection task ended: {e}"))),
                );
                rounds.ended();
                return;
            }
        }
        rounds.ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Collector;
    use crate::sample::{Sample, Unavailable};
    use crate::store::Status;
    use std::sync::atomic::Ordering::SeqCst;

    #[derive(Debug, serde::Serialize)]
    struct PanicsSample;
    impl Sample for PanicsSample {
        const COLLECTOR: &'static str = "panics";
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
    }

    struct Panics;
    impl Collector for Panics {
        type Sample = PanicsSample;
        fn collect(&mut self) -> Result<PanicsSample, CollectError> {
            panic!("malformed kernel file")
        }
    }

    #[derive(Debug, serde::Serialize)]
    struct HangsSample;
    impl Sample for HangsSample {
        const COLLECTOR: &'static str = "hangs";
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
    }

    struct Hangs(Duration);
    impl Collector for Hangs {
        type Sample = HangsSample;
        fn collect(&mut self) -> Result<HangsSample, CollectError> {
            std::thread::sleep(self.0);
            Ok(HangsSample)
        }
    }

    /// `enabled` scheduled with `timeout`, into a store of their own.
    fn schedule(enabled: Vec<Enabled>, timeout: Duration) -> (Arc<Store>, Vec<JoinHandle<()>>) {
        let store = Arc::new(Store::new("n".into(), Duration::from_secs(60)));
        let handles = spawn_all(store.clone(), enabled, timeout, Arc::new(Rounds::default()));
        (store, handles)
    }

    async fn wait_for(store: &Store, what: impl Fn(&crate::store::Snapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.read(&what) {
            assert!(Instant::now() < deadline, "condition not reached in 10s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[derive(Debug, serde::Serialize)]
    struct CountsSample;
    impl Sample for CountsSample {
        const COLLECTOR: &'static str = "counts";
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
    }

    struct Counts;
    impl Collector for Counts {
        type Sample = CountsSample;
        fn collect(&mut self) -> Result<CountsSample, CollectError> {
            Ok(CountsSample)
        }
    }

    thread_local! {
        /// Encodings made on this thread: the test's, where it scrapes.
        static ENCODED_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn encode_counts(
        snap: &crate::store::Snapshot,
        e: &mut prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use crate::metrics::family::Families;
        ENCODED_HERE.set(ENCODED_HERE.get() + 1);
        let runs = snap.collectors.get("counts").map_or(0, |c| c.runs_total);
        e.gauge_value("counts_runs", "Collections of counts.", runs)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_collection_is_encoded_on_its_thread_ahead_of_the_next_scrape() {
        use crate::metrics::exposition::{Exposition, Format};
        use std::io::Read;
        let store = Arc::new(Store::new("n".into(), Duration::from_secs(60)));
        let metrics = Arc::new(Exposition::of_signal::<CountsSample>(
            store.clone(),
            encode_counts,
        ));
        // In gzip, as Prometheus scrapes: the runs the scrape shows.
        let scrape = || {
            let parts = metrics.scrape(Format::Text, true).unwrap().concat();
            let mut text = String::new();
            flate2::read::GzDecoder::new(&parts[..])
                .read_to_string(&mut text)
                .unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix("counts_runs "))
                .and_then(|n| n.parse::<u64>().ok())
        };
        let enabled = vec![Enabled {
            collector: Box::new(Counts),
            interval: Duration::from_millis(20),
        }];
        let rounds = Arc::new(Rounds::encoding_into(metrics.clone()));
        let _h = spawn_all(store.clone(), enabled, Duration::from_secs(5), rounds);
        let runs = || store.read(|s| s.collectors["counts"].runs_total);
        wait_for(&store, |s| s.collectors["counts"].runs_total >= 1).await;
        // The first scrape encodes for itself, and tells that text is scraped in gzip.
        assert!(scrape().is_some());
        let encoded_by_scrapes = ENCODED_HERE.get();
        for _ in 0..5 {
            let next = runs() + 1;
            wait_for(&store, |s| s.collectors["counts"].runs_total >= next).await;
            // Scrapes while it is being encoded get the collection before it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while scrape().is_none_or(|shown| shown < next) {
                assert!(Instant::now() < deadline, "collection {next} never scraped");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(
            ENCODED_HERE.get(),
            encoded_by_scrapes,
            "a scrape encoded for itself: the collection was not encoded ahead of it"
        );
    }

    /// What the turn-taking collectors below saw: how many were collecting at once
    /// (at most), and how many collections ended while a watched one was running.
    #[derive(Default)]
    struct Overlap {
        inside: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        watched_running: std::sync::atomic::AtomicBool,
        ended_beside_watched: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug, serde::Serialize)]
    struct TurnSample<const I: usize>;
    impl<const I: usize> Sample for TurnSample<I> {
        const COLLECTOR: &'static str = ["t0", "t1", "t2", "watched"][I];
        fn unavailable(&self) -> &[Unavailable] {
            &[]
        }
    }

    /// Collects for `busy`; the collector numbered 3 is the watched one.
    struct Turn<const I: usize> {
        overlap: Arc<Overlap>,
        busy: Duration,
        takes_turns: bool,
    }

    impl<const I: usize> Collector for Turn<I> {
        type Sample = TurnSample<I>;
        fn collect(&mut self) -> Result<TurnSample<I>, CollectError> {
            let o = &self.overlap;
            let watched = I == 3;
            if watched {
                o.watched_running.store(true, SeqCst);
            } else {
                let now = o.inside.fetch_add(1, SeqCst) + 1;
                o.most.fetch_max(now, SeqCst);
            }
            std::thread::sleep(self.busy);
            if watched {
                o.watched_running.store(false, SeqCst);
            } else {
                o.inside.fetch_sub(1, SeqCst);
                if o.watched_running.load(SeqCst) {
                    o.ended_beside_watched.fetch_add(1, SeqCst);
                }
            }
            Ok(TurnSample)
        }
        fn takes_turns(&self) -> bool {
            self.takes_turns
        }
    }

    fn turn<const I: usize>(overlap: &Arc<Overlap>, busy_ms: u64, takes_turns: bool) -> Enabled {
        Enabled {
            collector: Box::new(Turn::<I> {
                overlap: overlap.clone(),
                busy: Duration::from_millis(busy_ms),
                takes_turns,
            }),
            interval: Duration::from_millis(10),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collections_take_turns_beside_one_that_does_not() {
        let overlap = Arc::new(Overlap::default());
        let enabled = vec![
            turn::<0>(&overlap, 5, true),
            turn::<1>(&overlap, 5, true),
            turn::<2>(&overlap, 5, true),
            // Like DNS: long, and out of turn.
            turn::<3>(&overlap, 300, false),
        ];
        let (store, _h) = schedule(enabled, Duration::from_secs(5));
        wait_for(&store, |s| {
            ["t0", "t1", "t2"]
                .iter()
                .all(|n| s.collectors[*n].runs_total >= 5)
                && s.collectors["watched"].runs_total >= 2
        })
        .await;
        assert_eq!(
            overlap.most.load(SeqCst),
            1,
            "two turn-takers collected at once"
        );
        assert!(
            overlap.ended_beside_watched.load(SeqCst) >= 3,
            "the collector out of turn held the others back"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_collection_gives_up_its_turn() {
        let overlap = Arc::new(Overlap::default());
        // The watched one takes turns here and hangs (2 s, timeout 50 ms): the other
        // collects while it hangs.
        let enabled = vec![
            turn::<3>(&overlap, 2000, true),
            turn::<0>(&overlap, 1, true),
        ];
        let (store, _h) = schedule(enabled, Duration::from_millis(50));
        wait_for(&store, |s| {
            matches!(s.collectors["watched"].status, Status::Hung { .. })
        })
        .await;
        wait_for(&store, |s| s.collectors["t0"].runs_total >= 4).await;
        // Had it kept its turn, the other would have waited TURN_WAIT and then run
        // beside it at most twice before it returned.
        assert!(
            overlap.ended_beside_watched.load(SeqCst) >= 3,
            "the hung collection kept its turn"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_collector_is_reported_and_keeps_running() {
        let enabled = vec![Enabled {
            collector: Box::new(Panics),
            interval: Duration::from_millis(20),
        }];
        let (store, _h) = schedule(enabled, Duration::from_secs(5));
        wait_for(&store, |s| s.collectors["panics"].runs_total >= 2).await;
        let snap = store.snapshot();
        match &snap.collectors["panics"].status {
            Status::Error { message } => assert!(message.contains("malformed kernel file")),
            other => panic!("unexpected status {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_collector_is_reported_then_recovers_without_piling_up() {
        let enabled = vec![Enabled {
            collector: Box::new(Hangs(Duration::from_millis(400))),
            interval: Duration::from_millis(10),
        }];
        let (store, _h) = schedule(enabled, Duration::from_millis(50));
        wait_for(&store, |s| {
            matches!(s.collectors["hangs"].status, Status::Hung { .. })
        })
        .await;
        assert_eq!(store.snapshot().collectors["hangs"].runs_total, 0);
        wait_for(&store, |s| s.collectors["hangs"].status == Status::Ok).await;
        // One collection at a time: it took 400 ms, so exactly one run finished.
        assert_eq!(store.snapshot().collectors["hangs"].runs_total, 1);
    }
}
