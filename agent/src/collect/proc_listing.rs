//! One listing of `/proc` a tick for the collectors that go through every process:
//! the netns walk (which the dns collector shares) and the inotify count of the
//! pressure collector. Both run on the same tick by default and list the same
//! directory: at 500 pods about 570 entries, 0.8 ms a listing. The first of them in
//! a tick lists; the other, moments later, takes that listing.
//!
//! A process that exits between the listing and a collector's read of it is what
//! each collector already handles (an unreadable link, a process found gone at the
//! next round); taking a listing up to [`SAME_TICK`] old only widens that window.

use super::SAME_TICK;
use crate::host::HostRoot;
use crate::kernel::process::{list_processes, ProcEntry};
use crate::kernel::ReadError;
use std::sync::{Arc, Mutex};
use std::time::Instant;

struct Listing {
    root: HostRoot,
    at: Instant,
    entries: Arc<[ProcEntry]>,
}

/// The last listing, for the callers of one tick.
struct SharedListing(Mutex<Option<Listing>>);

static SHARED: SharedListing = SharedListing::new();

/// The processes of `root`'s procfs, listed now or less than [`SAME_TICK`] ago.
pub(crate) fn processes(root: &HostRoot) -> Result<Arc<[ProcEntry]>, ReadError> {
    SHARED.processes(root)
}

impl SharedListing {
    const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// A failed listing is not kept: the next caller lists again.
    fn processes(&self, root: &HostRoot) -> Result<Arc<[ProcEntry]>, ReadError> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = last.as_ref() {
            if l.root == *root && l.at.elapsed() < SAME_TICK {
                return Ok(l.entries.clone());
            }
        }
        let at = Instant::now();
        let entries: Arc<[ProcEntry]> = list_processes(root)?.into();
        *last = Some(Listing {
            root: root.clone(),
            at,
            entries: entries.clone(),
        });
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fixture(pids: &[u32]) -> (tempfile::TempDir, HostRoot) {
        let t = tempfile::tempdir().unwrap();
        for pid in pids {
            std::fs::create_dir(t.path().join(pid.to_string())).unwrap();
        }
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        (t, root)
    }

    fn pids(entries: &[ProcEntry]) -> Vec<u32> {
        let mut p: Vec<u32> = entries.iter().map(|e| e.pid).collect();
        p.sort_unstable();
        p
    }

    #[test]
    fn a_listing_is_shared_within_a_tick_and_made_again_after() {
        let (t, root) = fixture(&[1, 7]);
        let shared = SharedListing::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = Instant::now();
            let first = shared.processes(&root).unwrap();
            std::fs::create_dir(t.path().join("9")).unwrap();
            let second = shared.processes(&root).unwrap();
            if before.elapsed() < SAME_TICK {
                assert!(Arc::ptr_eq(&first, &second), "listed again within a tick");
                assert_eq!(pids(&second), [1, 7]);
                break;
            }
            // Descheduled past the tick: try again.
            std::fs::remove_dir(t.path().join("9")).unwrap();
            assert!(Instant::now() < deadline, "never two calls within a tick");
            std::thread::sleep(SAME_TICK);
        }
        std::thread::sleep(SAME_TICK);
        assert_eq!(pids(&shared.processes(&root).unwrap()), [1, 7, 9]);
        // Another root is never given this one's listing.
        let (_other, other_root) = fixture(&[3]);
        assert_eq!(pids(&shared.processes(&other_root).unwrap()), [3]);
    }

    #[test]
    fn a_failed_listing_is_an_error_naming_the_directory() {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: t.path().join("gone"),
            ..HostRoot::default()
        };
        let shared = SharedListing::new();
        let e = shared.processes(&root).unwrap_err();
        assert_eq!(e.path, t.path().join("gone"));
        assert!(e.is_not_found());
        std::fs::create_dir(t.path().join("gone")).unwrap();
        std::fs::create_dir(t.path().join("gone/5")).unwrap();
        assert_eq!(pids(&shared.processes(&root).unwrap()), [5], "not kept");
    }
}
