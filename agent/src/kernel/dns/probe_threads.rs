//! The threads DNS probes run on, kept from one round to the next. A probe needs a
//! thread to itself, as entering a pod's network namespace moves the thread that
//! does it, and a round makes one probe per target at once (the host and three
//! pods by default). A thread started for each probe and ended with it (a `clone`,
//! a stack mapped and unmapped, a cold start) cost more than the probe's `setns`:
//! with the threads kept, the hand-over, `setns` there and back and the hand-back
//! took 0.02 ms a namespace where a thread of its own took 0.05 (examples/dns_probe
//! `--setns-only`, 300 namespaces), and the agent about 0.3 ms a round less at 500
//! pods.
//!
//! A kept thread enters the target's namespace for a probe and goes back to the
//! agent's before it reports, so a waiting thread is always in the agent's
//! namespace. One that cannot go back, or whose probe panicked, ends with its
//! probe. No thread that collects or serves ever changes namespace.

use super::probe::{run, Handback, PendingProbe, ProbeError, ProbeReport, ProbeSpec};
use crate::kernel::netns::{enter, open_ns, OWN};
use crate::kernel::thread_cpu;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

/// Threads kept waiting at most: a round past it (`--dns.pods` goes to 100) starts
/// the rest and lets them end.
const KEEP: usize = 16;

struct Job {
    spec: ProbeSpec,
    netns: Option<PathBuf>,
    deadline: Instant,
    reply: mpsc::SyncSender<Handback>,
    /// The thread's own inbox, for it to wait on again once done.
    inbox: Sender<Job>,
}

type Waiting = Mutex<Vec<Sender<Job>>>;

/// Probe threads waiting for a probe. Dropped, it lets them end.
#[derive(Default)]
pub struct ProbeThreads {
    waiting: Arc<Waiting>,
    started: AtomicUsize,
}

impl ProbeThreads {
    /// Starts the probe on a waiting thread, or a new one, inside the network
    /// namespace of `netns` (a pin or `/proc/<pid>/ns/net`), or in the agent's own
    /// namespace when None.
    pub fn spawn(
        &self,
        spec: ProbeSpec,
        netns: Option<PathBuf>,
        deadline: Instant,
    ) -> Result<PendingProbe, ProbeError> {
        let (reply, rx) = mpsc::sync_channel(1);
        let inbox = match lock(&self.waiting).pop() {
            Some(inbox) => inbox,
            None => self.start()?,
        };
        let job = Job {
            spec,
            netns,
            deadline,
            reply,
            inbox: inbox.clone(),
        };
        // A waiting thread ends only once its inbox is dropped: this send reaches it.
        inbox.send(job).map_err(|_| ProbeError::Lost)?;
        Ok(PendingProbe::new(rx, deadline))
    }

    /// Runs one probe per target at once, each on its own thread, and collects the
    /// reports in the targets' order.
    pub fn run_all(
        &self,
        targets: Vec<(Option<PathBuf>, ProbeSpec)>,
        deadline: Instant,
    ) -> Vec<Result<ProbeReport, ProbeError>> {
        let pending: Vec<_> = targets
            .into_iter()
            .map(|(netns, spec)| self.spawn(spec, netns, deadline))
            .collect();
        pending
            .into_iter()
            .map(|p| p.and_then(PendingProbe::wait))
            .collect()
    }

    /// Threads started so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }

    fn start(&self) -> Result<Sender<Job>, ProbeError> {
        let (inbox, jobs) = mpsc::channel();
        let waiting = Arc::downgrade(&self.waiting);
        std::thread::Builder::new()
            .name("dns-probe".into())
            .spawn(move || serve(&jobs, &waiting))
            .map_err(ProbeError::Spawn)?;
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(inbox)
    }
}

fn lock(waiting: &Waiting) -> MutexGuard<'_, Vec<Sender<Job>>> {
    // A list of inboxes: nothing a panic could leave half-done.
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}

/// A probe thread: takes probes until it is not kept or cannot go home. It lists
/// itself as waiting before it reports, so the caller's next probe finds it.
fn serve(jobs: &Receiver<Job>, waiting: &Weak<Waiting>) {
    let home = open_ns(Path::new(OWN));
    while let Ok(job) = jobs.recv() {
        let Job {
            spec,
            netns,
            deadline,
            reply,
            inbox,
        } = job;
        let before = thread_cpu::thread_cpu();
        let (report, away) = match netns {
            None => (probe(&spec, deadline), false),
            Some(path) => match open_ns(&path).and_then(|ns| enter(&ns)) {
                Ok(()) => (probe(&spec, deadline), true),
                Err(source) => (Some(Err(ProbeError::EnterNetns { path, source })), false),
            },
        };
        let home_again = !away || home.as_ref().is_ok_and(|h| enter(h).is_ok());
        // Panicked: the caller hears that the thread ended without a report.
        let Some(report) = report else {
            return;
        };
        let kept = home_again && keep(waiting, inbox);
        // The caller may have given up on us; then nobody wants the report.
        let _ = reply.send((report, thread_cpu::thread_cpu().saturating_sub(before)));
        if !kept {
            return;
        }
    }
}

/// The probe's report, or None when it panicked.
fn probe(spec: &ProbeSpec, deadline: Instant) -> Option<Result<ProbeReport, ProbeError>> {
    catch_unwind(AssertUnwindSafe(|| run(spec, deadline)))
        .ok()
        .map(Ok)
}

/// Lists the thread as waiting, unless the pool is gone or has enough.
fn keep(waiting: &Weak<Waiting>, inbox: Sender<Job>) -> bool {
    let Some(waiting) = waiting.upgrade() else {
        return false;
    };
    let mut list = lock(&waiting);
    if list.len() >= KEEP {
        return false;
    }
    list.push(inbox);
    true
}

#[cfg(test)]
mod tests {
    use super::super::probe::tests::{coredns, spec, SVC};
    use super::super::search::Verdict;
    use super::super::test_server::TestServer;
    use super::*;
    use nix::sched::{unshare, CloneFlags};
    use std::time::Duration;

    fn in_10s() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// A network namespace of its own (only `lo`, down), held by a thread until
    /// the returned sender is dropped; None where one cannot be made.
    fn new_namespace() -> Option<(PathBuf, mpsc::Sender<()>)> {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (hold, held) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let made = unshare(CloneFlags::CLONE_NEWNET).map(|()| nix::unistd::gettid());
            let ok = made.is_ok();
            tid_tx.send(made).unwrap();
            if ok {
                let _ = held.recv();
            }
        });
        match tid_rx.recv().unwrap() {
            Ok(tid) => Some((format!("/proc/self/task/{tid}/ns/net").into(), hold)),
            Err(e) => {
                eprintln!("skipped: a new network namespace: {e} (needs CAP_SYS_ADMIN)");
                None
            }
        }
    }

    #[test]
    fn a_kept_thread_probes_again_from_the_agents_namespace() {
        let Some((netns, _held)) = new_namespace() else {
            return;
        };
        let server = TestServer::start(|q, _| coredns(q));
        let threads = ProbeThreads::default();
        let away = threads
            .spawn(spec(&server, &[SVC]), Some(netns), in_10s())
            .unwrap()
            .wait()
            .unwrap();
        // The server's loopback address is not up in there.
        assert_eq!(away.lookups[0].verdict, Verdict::Unreachable);
        let home = threads
            .spawn(spec(&server, &[SVC]), None, in_10s())
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(home.lookups[0].verdict, Verdict::Answered);
        assert_eq!(threads.started(), 1, "the same thread, back home");
    }

    #[test]
    fn probes_at_once_get_a_thread_each_and_keep_them() {
        let server = TestServer::start(|q, _| coredns(q));
        let threads = ProbeThreads::default();
        let targets = || (0..3).map(|_| (None, spec(&server, &[SVC]))).collect();
        for _ in 0..2 {
            let reports = threads.run_all(targets(), in_10s());
            assert!(reports
                .iter()
                .all(|r| r.as_ref().unwrap().lookups[0].verdict == Verdict::Answered));
        }
        // Three at once, twice: the second round found them waiting.
        assert_eq!(threads.started(), 3);
    }

    #[test]
    fn a_probe_threads_cpu_is_charged_to_the_thread_that_waited() {
        let server = TestServer::start(|q, _| coredns(q));
        thread_cpu::take_charged();
        let reports =
            ProbeThreads::default().run_all(vec![(None, spec(&server, &[SVC]))], in_10s());
        assert_eq!(
            reports[0].as_ref().unwrap().lookups[0].verdict,
            Verdict::Answered
        );
        // Eight exchanges take CPU of their own: none is 0.
        assert!(thread_cpu::take_charged() > Duration::ZERO);
    }

    #[test]
    fn an_unenterable_namespace_is_an_error_naming_it() {
        let server = TestServer::start(|q, _| coredns(q));
        let threads = ProbeThreads::default();
        let err = threads
            .spawn(
                spec(&server, &[SVC]),
                Some(PathBuf::from("/nonexistent-nodediag/ns/net")),
                in_10s(),
            )
            .unwrap()
            .wait()
            .unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent-nodediag/ns/net"),
            "{err}"
        );
        // The thread never left: it is kept.
        let home = threads
            .spawn(spec(&server, &[SVC]), None, in_10s())
            .unwrap();
        assert_eq!(home.wait().unwrap().lookups[0].verdict, Verdict::Answered);
        assert_eq!(threads.started(), 1);
    }
}
