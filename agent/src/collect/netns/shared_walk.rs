//! One walk of procfs a round for the collectors that look for the pods' network
//! namespaces (netns, dns). Both walk every process (its namespace, cgroups and start
//! time) and both run on the same tick by default: at 500 pods the walk was most of
//! the dns collector's CPU and a third of the netns collector's. The first of them in
//! a tick walks; the other, arriving while it walks, takes its result. Only a walk
//! that started moments ago is taken: the netns collector reads links after the walk
//! and its sample must agree with itself, no worse than when it walked alone.
//!
//! Each walk also leaves the next what stays true of a running process (its start
//! time, the container cgroup it was put in, and its namespace between the walks
//! that read every link, [`super::NETNS_REREAD`] apart), so a walk reads files only
//! for processes new since and links only for young ones: at 500 pods that took the
//! walk from about 1,600 file reads a round to 570 namespace links, then to the
//! listing of `/proc` and a few links.

use super::scan::{self, ProcMemo, ProcScan};
use crate::collect::pods::{PodIndex, PodLogsMemo};
use crate::collect::{proc_listing, SAME_TICK};
use crate::host::HostRoot;
use crate::sample::{CollectError, Unavailable};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The processes by namespace, and what the pod index could not read.
pub(crate) struct Walk {
    pub procs: ProcScan,
    pub index_missing: Vec<Unavailable>,
}

struct Last {
    root: HostRoot,
    started: Instant,
    walk: Arc<Walk>,
    /// What the walks learned of each running process, for the next walk.
    memo: ProcMemo,
    pod_logs: PodLogsMemo,
}

static LAST: Mutex<Option<Last>> = Mutex::new(None);

/// The walk of `root`'s procfs, now or started less than [`SAME_TICK`] ago. The lock is
/// held while walking, so a collector that asks meanwhile waits for the result
/// instead of walking too.
pub(crate) fn processes(root: &HostRoot) -> Result<Arc<Walk>, CollectError> {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = last.as_ref() {
        if l.root == *root && l.started.elapsed() < SAME_TICK {
            return Ok(l.walk.clone());
        }
    }
    let (mut memo, mut pod_logs) = match last.take() {
        Some(l) if l.root == *root => (l.memo, l.pod_logs),
        _ => Default::default(),
    };
    let started = Instant::now();
    let (index, index_missing) = PodIndex::read_with(root, &mut pod_logs);
    let entries = proc_listing::processes(root)?;
    let procs = scan::processes(root, &entries, &index, &mut memo)?;
    let walk = Arc::new(Walk {
        procs,
        index_missing,
    });
    *last = Some(Last {
        root: root.clone(),
        started,
        walk: walk.clone(),
        memo,
        pod_logs,
    });
    Ok(walk)
}
