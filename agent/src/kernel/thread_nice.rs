//! Collections give way to scrapes. Linux keeps a nice value per thread, so the
//! threads that collect and evaluate run a few steps nicer than the workers that
//! answer `/metrics` and the API: when both want the CPU, the answer goes first and
//! the collection finishes a moment later. Within the agent's own cgroup only; the
//! pod's CPU share against other pods is the cgroup's, not the threads'.

/// How much nicer than the process a collection runs. At 10 a thread weighs about a
/// tenth of one at 0, so a scrape waits for no collection, while collections still
/// get the CPU the serving threads leave idle (nearly all of it).
const STEPS: i32 = 10;

/// The calling thread made [`STEPS`] nicer than the process; back as it was when
/// dropped. Threads started meanwhile inherit the lowered value.
pub struct Lowered {
    before: Option<i32>,
}

impl Lowered {
    pub fn new() -> Self {
        let target = process_nice().map(|p| (p + STEPS).min(MAX_NICE));
        let before = nice_of(gettid());
        let before = match (before, target) {
            (Some(b), Some(t)) if b < t => set_nice(t).then_some(b),
            _ => None,
        };
        Self { before }
    }
}

impl Default for Lowered {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lowered {
    fn drop(&mut self) {
        if let Some(b) = self.before {
            set_nice(b);
        }
    }
}

/// Puts the calling thread back to the process's nice value: for a long-lived thread
/// a collection starts whose timing is the measurement (the fsync probe), which
/// must not wait behind the agent's other threads.
pub fn as_process() {
    if let Some(n) = process_nice() {
        set_nice(n);
    }
}

/// The calling thread's id, asked of the kernel once per thread: every collection
/// lowers and restores its thread, and each of these is a system call.
fn gettid() -> libc::id_t {
    thread_local! {
        // SAFETY: gettid has no preconditions.
        static TID: libc::id_t = unsafe { libc::gettid() as libc::id_t };
    }
    TID.with(|t| *t)
}

/// The nice value of the process's main thread (its tid is the pid).
fn process_nice() -> Option<i32> {
    static PID: std::sync::LazyLock<libc::id_t> =
        std::sync::LazyLock::new(|| std::process::id() as libc::id_t);
    nice_of(*PID)
}

fn nice_of(tid: libc::id_t) -> Option<i32> {
    // getpriority returns -1 both for an error and for nice -1: errno tells them apart.
    nix::errno::Errno::clear();
    // SAFETY: getpriority only reads the scheduler's value for `tid`.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    (n != -1 || nix::errno::Errno::last_raw() == 0).then_some(n)
}

const MAX_NICE: i32 = 19;

/// Best effort: raising a thread's nice value needs no privilege, lowering it back
/// may (CAP_SYS_NICE or RLIMIT_NICE), and failing only changes who goes first. A
/// thread left nicer is not made nicer again by the next [`Lowered`].
fn set_nice(n: i32) -> bool {
    // SAFETY: setpriority only changes the scheduler's value for the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, gettid(), n) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::testing::as_root;

    fn own() -> i32 {
        nice_of(gettid()).unwrap()
    }

    #[test]
    fn a_collection_thread_and_what_it_starts_give_way_until_it_ends() {
        let lowered = (process_nice().unwrap() + STEPS).min(MAX_NICE);
        std::thread::spawn(move || {
            let before = own();
            let started = {
                let _g = Lowered::new();
                assert_eq!(own(), lowered);
                std::thread::spawn(own).join().unwrap()
            };
            assert_eq!(started, lowered, "threads a collection starts inherit");
            if as_root("lowering a nice value") {
                assert_eq!(own(), before);
                let probe = std::thread::spawn(|| {
                    let _g = Lowered::new();
                    as_process();
                    own()
                });
                assert_eq!(probe.join().unwrap(), process_nice().unwrap());
            }
        })
        .join()
        .unwrap();
    }
}
