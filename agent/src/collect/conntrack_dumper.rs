//! Dumps of the conntrack table, one at a time, shared by whoever asks: an SRE's
//! `GET /api/v1/conntrack/top` and the conntrack collector when the table crosses its
//! high level. A dump costs about a CPU-second per 262,144 entries, most of it the
//! kernel's, so two must never run at once, and nothing runs one on a schedule.
//!
//! - A dump that finished less than [`REUSE_WITHIN`] ago is handed out again: a
//!   `watch curl` loop or a burst of requests costs one dump, not one each.
//! - A request arriving while a dump runs waits for it and gets its result: the
//!   budget bounds that wait.
//! - Each dump is counted by source address, destination and state (a
//!   [`TopBuilder`]), not ranked: who owns an address is known above this layer,
//!   and ranked when shown ([`TopDump::rank`]).
//!
//! Dumps the network namespace of the calling thread (the agent's own: the host's
//! in the DaemonSet, which runs with hostNetwork). Blocking: call it from a
//! blocking thread.

use super::conntrack_top::{ConntrackTop, Owners, TopBuilder};
use crate::host::HostRoot;
use crate::kernel::conntrack;
use crate::kernel::conntrack_dump::{self, DumpBudget, DumpCut, DumpFamily};
use crate::sample::Unavailable;
use serde::Serialize;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// A dump younger than this is handed out instead of dumping again.
pub const REUSE_WITHIN: Duration = Duration::from_secs(5);

/// Past the budget's timeout, how long a caller waits for a dump another started
/// before it gives up (the dump checks its deadline every few dozen entries, so this
/// is only reached when the kernel stalls).
const WAIT_GRACE: Duration = Duration::from_secs(5);

/// What one dump may cost before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TopBudget {
    pub max_entries: u64,
    #[serde(serialize_with = "crate::time::serialize_duration")]
    pub timeout: Duration,
}

/// Why a dump ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Someone asked (`GET /api/v1/conntrack/top`).
    Request,
    /// The collector saw the table at or above its high level.
    Threshold,
}

/// One dump: what it read, what it cost, and its counts, ready to rank.
#[derive(Clone)]
pub struct TopDump {
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub trigger: Trigger,
    pub budget: TopBudget,
    /// Entries counted.
    pub entries_seen: u64,
    /// Messages that were not entries the parser understood.
    pub skipped: u64,
    /// Why the dump stopped before the end of the table; None when it read it all.
    pub cut: Option<DumpCut>,
    pub elapsed: Duration,
    /// `nf_conntrack_count` and `_max` just before the dump (None when unreadable).
    pub table_entries: Option<u64>,
    pub table_max: Option<u64>,
    counts: TopBuilder,
}

impl std::fmt::Debug for TopDump {
    /// Without the counts: one line in a log, not a map per distinct address.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopDump")
            .field("started_at", &self.started_at)
            .field("trigger", &self.trigger)
            .field("entries_seen", &self.entries_seen)
            .field("cut", &self.cut)
            .field("elapsed", &self.elapsed)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TopDump {
    /// Two dumps are the same dump: one start, one end, one count.
    fn eq(&self, other: &Self) -> bool {
        self.started_at == other.started_at
            && self.finished_at == other.finished_at
            && self.entries_seen == other.entries_seen
    }
}

/// The dump as samples and answers show it (the counts are ranked separately).
#[derive(Serialize)]
struct DumpView {
    #[serde(serialize_with = "crate::time::serialize")]
    dumped_at: SystemTime,
    trigger: Trigger,
    entries_seen: u64,
    skipped: u64,
    cut: Option<DumpCut>,
    elapsed_seconds: f64,
    table_entries: Option<u64>,
    table_max: Option<u64>,
    budget: TopBudget,
}

impl Serialize for TopDump {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DumpView {
            dumped_at: self.finished_at,
            trigger: self.trigger,
            entries_seen: self.entries_seen,
            skipped: self.skipped,
            cut: self.cut,
            elapsed_seconds: crate::text::round(self.elapsed.as_secs_f64(), 3),
            table_entries: self.table_entries,
            table_max: self.table_max,
            budget: self.budget,
        }
        .serialize(s)
    }
}

impl TopDump {
    /// The top lists, each address named by its owner where `owners` knows it.
    pub fn rank(&self, owners: &Owners, limit: usize) -> ConntrackTop {
        self.counts.finish(owners, limit)
    }

    /// Time since the dump finished.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.finished_at).unwrap_or_default()
    }

    /// A dump made of given counts, for tests of the layers that show it.
    pub fn from_counts(
        counts: TopBuilder,
        finished_at: SystemTime,
        trigger: Trigger,
        table_entries: Option<u64>,
    ) -> TopDump {
        TopDump {
            started_at: finished_at,
            finished_at,
            trigger,
            budget: TopBudget {
                max_entries: u64::MAX,
                timeout: Duration::ZERO,
            },
            entries_seen: counts.entries(),
            skipped: 0,
            cut: None,
            elapsed: Duration::ZERO,
            table_entries,
            table_max: None,
            counts,
        }
    }
}

/// A dump handed out, and whether it was made for this caller.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub dump: Arc<TopDump>,
    /// Made for someone else: running when this caller came, or finished less than
    /// [`REUSE_WITHIN`] before.
    pub shared: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The host cannot give a dump: no netlink, no CAP_NET_ADMIN, no ctnetlink.
    #[error("{}: unavailable ({})", .0.what, .0.hint)]
    Unavailable(Unavailable),
    #[error("conntrack dump failed: {0}")]
    Failed(std::io::Error),
    /// Another dump did not finish within its budget and the grace after it.
    #[error("another conntrack dump has been running for longer than its budget")]
    Busy,
}

struct Gate {
    running: bool,
    last: Option<Arc<TopDump>>,
}

/// The one place this process dumps the conntrack table from.
pub struct TopDumper {
    root: HostRoot,
    netlink: bool,
    budget: TopBudget,
    gate: Mutex<Gate>,
    done: Condvar,
}

impl TopDumper {
    /// `netlink` false (`--no-netlink`) makes every dump unavailable.
    pub fn new(root: HostRoot, netlink: bool, budget: TopBudget) -> TopDumper {
        TopDumper {
            root,
            netlink,
            budget,
            gate: Mutex::new(Gate {
                running: false,
                last: None,
            }),
            done: Condvar::new(),
        }
    }

    pub fn budget(&self) -> TopBudget {
        self.budget
    }

    /// The latest dump, whoever asked for it.
    pub fn last(&self) -> Option<Arc<TopDump>> {
        self.lock().last.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        // The guarded state is a flag and an Arc, each assigned whole.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A recent dump, the one running now, or a new one (see the module doc).
    pub fn fetch(&self, trigger: Trigger) -> Result<Fetched, DumpError> {
        self.fetch_with(|| self.dump_now(trigger))
    }

    fn fetch_with(
        &self,
        dump: impl FnOnce() -> Result<Arc<TopDump>, DumpError>,
    ) -> Result<Fetched, DumpError> {
        let asked = SystemTime::now();
        let mut gate = self.lock();
        if gate.running {
            let wait = self.budget.timeout + WAIT_GRACE;
            let (g, timeout) = self
                .done
                .wait_timeout_while(gate, wait, |g| g.running)
                .unwrap_or_else(|e| e.into_inner());
            gate = g;
            if timeout.timed_out() {
                return Err(DumpError::Busy);
            }
        }
        if let Some(last) = gate.last.as_ref().filter(|d| {
            // Finished after this caller asked (it waited for it), or recently.
            d.finished_at >= asked || d.age(asked) < REUSE_WITHIN
        }) {
            return Ok(Fetched {
                dump: last.clone(),
                shared: true,
            });
        }
        gate.running = true;
        drop(gate);
        // Reopens the gate even if the dump panics, so no caller waits forever.
        struct Reopen<'a>(&'a TopDumper);
        impl Drop for Reopen<'_> {
            fn drop(&mut self) {
                self.0.lock().running = false;
                self.0.done.notify_all();
            }
        }
        let reopen = Reopen(self);
        let result = dump();
        if let Ok(d) = &result {
            self.lock().last = Some(d.clone());
        }
        drop(reopen);
        result.map(|dump| Fetched {
            dump,
            shared: false,
        })
    }

    fn dump_now(&self, trigger: Trigger) -> Result<Arc<TopDump>, DumpError> {
        if !self.netlink {
            return Err(DumpError::Unavailable(Unavailable::new(
                "conntrack dump",
                "netlink is off (--no-netlink): which pods fill the table cannot be read",
            )));
        }
        let table = conntrack::read_table(&self.root).ok();
        let started_at = SystemTime::now();
        let started = Instant::now();
        let mut counts = TopBuilder::new();
        let budget = DumpBudget::new(self.budget.max_entries, self.budget.timeout);
        let summary =
            conntrack_dump::dump(DumpFamily::All, budget, |e| counts.add(e)).map_err(dump_error)?;
        Ok(Arc::new(TopDump {
            started_at,
            finished_at: SystemTime::now(),
            trigger,
            budget: self.budget,
            entries_seen: summary.entries,
            skipped: summary.skipped,
            cut: summary.cut,
            elapsed: started.elapsed(),
            table_entries: table.map(|t| t.entries),
            table_max: table.map(|t| t.max),
            counts,
        }))
    }
}

fn dump_error(e: std::io::Error) -> DumpError {
    let unavailable = |hint: &str| {
        DumpError::Unavailable(Unavailable::new(
            "conntrack dump (ctnetlink)",
            format!("{e}: {hint}"),
        ))
    };
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => unavailable(
            "reading the table's entries needs CAP_NET_ADMIN in the host network namespace",
        ),
        Some(libc::EPROTONOSUPPORT | libc::ENOENT | libc::EOPNOTSUPP) => {
            unavailable("ctnetlink is not loaded: modprobe nf_conntrack_netlink")
        }
        _ => DumpError::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack_dump::ConntrackEntry;

    #[test]
    fn a_dump_ranks_with_owners_given_later_and_serializes_without_its_counts() {
        let mut b = TopBuilder::new();
        for _ in 0..3 {
            b.add(&ConntrackEntry::dns_query_from("10.244.1.7"));
        }
        b.add(&ConntrackEntry::dns_query_from("10.244.2.9"));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let dump = TopDump::from_counts(b, at, Trigger::Threshold, Some(4));
        let owners: Owners = [("10.244.1.7".parse().unwrap(), "shop/cart-0".to_string())].into();
        let top = dump.rank(&owners, 5);
        assert_eq!(top.owners.rows[0].key, "shop/cart-0");
        assert_eq!(top.owners.rows[0].entries, 3);
        assert_eq!(
            dump.rank(&Owners::new(), 5).owners.rows[0].key,
            "10.244.1.7"
        );
        let v = serde_json::to_value(&dump).unwrap();
        assert_eq!(v["entries_seen"], 4);
        assert_eq!(v["trigger"], "threshold");
        assert!(v.get("counts").is_none(), "{v}");
        assert_eq!(
            dump.age(at + Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn without_netlink_a_dump_is_unavailable_and_nothing_is_kept() {
        let dumper = TopDumper::new(fixture_root(), false, budget());
        match dumper.fetch(Trigger::Request) {
            Err(DumpError::Unavailable(u)) => assert!(u.hint.contains("--no-netlink"), "{u:?}"),
            other => panic!("{other:?}"),
        }
        assert!(dumper.last().is_none());
        // The gate is open again: a second caller is not left waiting.
        assert!(matches!(
            dumper.fetch(Trigger::Request),
            Err(DumpError::Unavailable(_))
        ));
    }

    fn budget() -> TopBudget {
        TopBudget {
            max_entries: 10,
            timeout: Duration::from_secs(2),
        }
    }

    fn fixture_root() -> HostRoot {
        HostRoot {
            proc: "/nonexistent".into(),
            sys: "/nonexistent".into(),
            rootfs: "/nonexistent".into(),
        }
    }

    fn made_now() -> Result<Arc<TopDump>, DumpError> {
        let mut b = TopBuilder::new();
        b.add(&ConntrackEntry::dns_query_from("10.0.0.1"));
        Ok(Arc::new(TopDump::from_counts(
            b,
            SystemTime::now(),
            Trigger::Request,
            None,
        )))
    }

    #[test]
    fn callers_during_a_dump_share_it_and_a_recent_one_is_reused() {
        let dumper = Arc::new(TopDumper::new(fixture_root(), true, budget()));
        let dumps = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let (dumper, dumps) = (dumper.clone(), dumps.clone());
            std::thread::spawn(move || {
                dumper.fetch_with(|| {
                    dumps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    made_now()
                })
            })
        };
        started_rx.recv().unwrap();
        let second = {
            let (dumper, dumps) = (dumper.clone(), dumps.clone());
            std::thread::spawn(move || {
                dumper.fetch_with(|| {
                    dumps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    made_now()
                })
            })
        };
        // The second caller is waiting on the gate (or about to): let the dump end.
        while !dumper.lock().running {
            std::thread::yield_now();
        }
        release_tx.send(()).unwrap();
        let a = first.join().unwrap().unwrap();
        let b = second.join().unwrap().unwrap();
        assert!(!a.shared);
        assert!(b.shared, "the second caller got the running dump's result");
        assert!(Arc::ptr_eq(&a.dump, &b.dump));
        assert_eq!(dumps.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Within REUSE_WITHIN, a later caller gets it again.
        let c = dumper.fetch_with(|| panic!("no dump expected")).unwrap();
        assert!(c.shared && Arc::ptr_eq(&a.dump, &c.dump));
    }

    #[test]
    fn a_panicking_dump_leaves_the_gate_open() {
        let dumper = TopDumper::new(fixture_root(), true, budget());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = dumper.fetch_with(|| panic!("kernel said nonsense"));
        }));
        assert!(r.is_err());
        assert!(!dumper.lock().running);
        assert!(!dumper.fetch_with(made_now).unwrap().shared);
    }

    #[test]
    fn errors_of_the_socket_say_what_to_do() {
        let e = dump_error(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = dump_error(std::io::Error::from_raw_os_error(libc::EPROTONOSUPPORT));
        assert!(e.to_string().contains("nf_conntrack_netlink"), "{e}");
        assert!(matches!(
            dump_error(std::io::Error::from_raw_os_error(libc::EIO)),
            DumpError::Failed(_)
        ));
    }
}
