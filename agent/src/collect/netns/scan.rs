//! The two views of which namespaces exist: pins (files runtimes bind-mount a
//! namespace on) and processes (`/proc/<pid>/ns/net`, whose cgroups name the pod),
//! joined into one [`NetnsInfo`] per namespace.

use super::{shown_path, AgeSource, HostDir, NetnsInfo, MAX_PIDS_LISTED};
use crate::collect::pods::{self, Attribution, CgroupRef, Name, PodIndex};
use crate::collect::YOUNG_PROCESS;
use crate::host::HostRoot;
use crate::kernel::dir_memo::DirMemo;
use crate::kernel::mountinfo::MountWatch;
use crate::kernel::netns::{self, PinEntry, ProcDir};
use crate::kernel::process::{self, ProcEntry, StartClock};
use crate::kernel::ReadError;
use crate::sample::CollectError;
use foldhash::{HashMap, HashMapExt};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone)]
pub(super) struct PinScan {
    /// Each pinned namespace's pins, by inode.
    pub by_ns: Arc<BTreeMap<u64, Pinned>>,
    pub stale: Vec<String>,
    pub any_dir: bool,
}

/// One namespace's pins.
pub(super) struct Pinned {
    /// Its pins, as shown (under the directory named on the command line).
    pub shown: Arc<[String]>,
    /// Its first pin as read, to enter the namespace by.
    pub first: PathBuf,
    /// Its oldest pin's time.
    pub at: SystemTime,
}

/// What the process scan found about one namespace.
#[derive(Debug, Default)]
pub(crate) struct ProcView {
    pub pids: Vec<u32>,
    pub oldest_start: Option<SystemTime>,
    pub pod: Option<Attribution>,
}

pub(crate) struct ProcScan {
    pub host: Option<u64>,
    pub host_from_pid1: bool,
    pub by_ns: HashMap<u64, ProcView>,
    /// Container ids of every process in a pod cgroup (the live sandboxes), with
    /// their pod.
    pub live_containers: HashMap<Name, Attribution>,
    pub cgroups_readable: bool,
    pub unreadable: u32,
}

/// What the pin directories held, kept while each directory's entries and the
/// mount table are unchanged: a pin is made or removed with its file (the
/// directory's time moves) and mounted or unmounted (the table moves). At 500 pods,
/// stating every pin and its file system each round was a fifth of the collector.
#[derive(Default)]
pub(super) struct PinsMemo {
    mounts: Option<MountWatch>,
    dirs: HashMap<PathBuf, DirMemo<Arc<Vec<PinEntry>>>>,
    /// The last scan, and the directories' entries it was made from: taken again
    /// while they are the same, so a round with no pin made or removed builds no
    /// pin's name or path anew (four allocations and more a namespace, each round).
    last: Option<(Vec<Arc<Vec<PinEntry>>>, PinScan)>,
}

impl PinsMemo {
    /// `dir`'s pins, kept or read again; read every time while the mount table
    /// cannot say whether it changed.
    fn read(&mut self, dir: &Path) -> Result<Arc<Vec<PinEntry>>, ReadError> {
        let read = || netns::read_pins(dir).map(Arc::new);
        if self.mounts.is_none() {
            return read();
        }
        self.dirs
            .entry(dir.to_path_buf())
            .or_default()
            .read(dir, read)
    }

    /// Forgets what was kept when the mount table changed since the last round.
    fn start_round(&mut self, root: &HostRoot) {
        if self.mounts.as_ref().is_none_or(MountWatch::changed) {
            self.dirs.clear();
            self.last = None;
            // Pins are mounts in this process's namespace, where it stats them.
            self.mounts = MountWatch::open(root, "self");
        }
    }
}

pub(super) fn pins(root: &HostRoot, dirs: &[HostDir], memo: &mut PinsMemo) -> PinScan {
    memo.start_round(root);
    let mut any_dir = false;
    let mut read = Vec::new();
    // /var/run is usually a link to /run: read each directory once.
    let mut seen_dirs = HashSet::new();
    for dir in dirs {
        let Ok(identity) = netns::dir_identity(&dir.read) else {
            continue;
        };
        any_dir = true;
        if !seen_dirs.insert(identity) {
            continue;
        }
        if let Ok(entries) = memo.read(&dir.read) {
            read.push((dir, entries));
        }
    }
    if let Some((entries, scan)) = &memo.last {
        let same = entries.len() == read.len()
            && entries
                .iter()
                .zip(&read)
                .all(|(a, (_, b))| Arc::ptr_eq(a, b));
        if same && scan.any_dir == any_dir {
            return scan.clone();
        }
    }
    let mut by_ns: BTreeMap<u64, (Vec<String>, PathBuf, SystemTime)> = BTreeMap::new();
    let mut stale = Vec::new();
    for (dir, entries) in &read {
        for entry in entries.iter() {
            match entry {
                PinEntry::Namespace {
                    path,
                    inode,
                    pinned_at,
                } => {
                    let e = by_ns
                        .entry(*inode)
                        .or_insert_with(|| (Vec::new(), path.clone(), *pinned_at));
                    e.0.push(shown_path(dir, path));
                    e.2 = e.2.min(*pinned_at);
                }
                PinEntry::Stale { path } => stale.push(shown_path(dir, path)),
            }
        }
    }
    let by_ns = by_ns
        .into_iter()
        .map(|(inode, (shown, first, at))| {
            let shown = shown.into();
            (inode, Pinned { shown, first, at })
        })
        .collect();
    let scan = PinScan {
        by_ns: Arc::new(by_ns),
        stale,
        any_dir,
    };
    if memo.mounts.is_some() {
        let entries = read.into_iter().map(|(_, e)| e).collect();
        memo.last = Some((entries, scan.clone()));
    }
    scan
}

/// How often a walk reads every process's namespace link. Between, it reads the
/// links of young processes only: a process is put in its namespace as it starts
/// (runtimes `setns` or `unshare` before running the container's command) and one
/// that moves later is rare, while a process that exits leaves procfs at once, so
/// the namespaces left without a process are seen in the round they are left. At
/// 500 pods the links were 3.1 ms of a 33 ms round, each a path walk into nsfs.
pub const NETNS_REREAD: Duration = Duration::from_secs(300);

/// What a process's files said that stays true for its life, or until the next walk
/// of every link: its start time, its pod cgroup once that is a container's
/// (runtimes move a process there before it runs the container's command, and
/// nothing moves it out), and its namespace. A kernel thread is in no pod and stays
/// in the namespace kthreadd started it in: its link is read once. A node has a few
/// of them per CPU (about 400 at 64 CPUs), each a link and a cgroup file a round
/// before.
#[derive(Debug, Clone, Default)]
struct Settled {
    /// Its container's cgroup, and the pod that names under [`ProcMemo::index`].
    container: Option<(CgroupRef, Attribution)>,
    /// Its cgroups named no pod when it was older than [`YOUNG_PROCESS`]: a process
    /// is put in its container's cgroup as it starts, so one that ran outside every
    /// pod for a minute stays out. Read again with every link, as a namespace is.
    outside_pods: bool,
    start_ticks: Option<u64>,
    kernel_thread: bool,
    /// Its namespace as last read.
    netns: Option<u64>,
}

impl Settled {
    /// A process seen for the first time: its start time from its stat file, and a
    /// kernel thread's namespace (read again each walk until it reads).
    fn first_seen(root: &HostRoot, proc: &ProcDir, pid: u32) -> Self {
        let stat = process::read_stat(root, pid).ok();
        let kernel_thread = stat.is_some_and(|s| s.kernel_thread);
        Settled {
            start_ticks: stat.map(|s| s.start_ticks),
            kernel_thread,
            netns: kernel_thread.then(|| proc.netns_of(pid).ok()).flatten(),
            ..Settled::default()
        }
    }

    /// Its namespace as last read, if that still holds without reading its link: a
    /// kernel thread's always, another process's between full walks once it is
    /// older than [`YOUNG_PROCESS`] (a process of unknown age is read every walk).
    fn kept_netns(&self, full: bool, clock: Option<StartClock>, now: SystemTime) -> Option<u64> {
        if self.kernel_thread {
            return self.netns;
        }
        self.netns.filter(|_| !full && self.is_old(clock, now))
    }

    fn is_old(&self, clock: Option<StartClock>, now: SystemTime) -> bool {
        clock
            .zip(self.start_ticks)
            .map(|(c, t)| c.started(t))
            .is_some_and(|started| {
                now.duration_since(started)
                    .is_ok_and(|age| age >= YOUNG_PROCESS)
            })
    }
}

/// What earlier walks learned of each process still running, so that a walk reads
/// the namespace links of young processes only, and files only for processes new
/// since; and when it last read every link.
#[derive(Debug, Default)]
pub(crate) struct ProcMemo {
    settled: HashMap<ProcEntry, Settled>,
    /// The pod index the settled attributions were made with.
    index: PodIndex,
    full_at: Option<Instant>,
    /// The last scan's namespaces and containers: the next one's maps are made that
    /// size at once rather than grown (and rehashed) to it.
    namespaces: usize,
    containers: usize,
}

/// The processes `entries` lists (a listing of `root`'s procfs made moments ago).
pub(crate) fn processes(
    root: &HostRoot,
    entries: &[ProcEntry],
    index: &PodIndex,
    memo: &mut ProcMemo,
) -> Result<ProcScan, CollectError> {
    let proc = ProcDir::open(root)?;
    let (host, host_from_pid1) = match proc.netns_of(1) {
        Ok(i) => (Some(i), true),
        Err(_) => (proc.netns_of("self").ok(), false),
    };
    let clock = StartClock::read(root).ok();
    let now = SystemTime::now();
    let full = memo.full_at.is_none_or(|t| t.elapsed() >= NETNS_REREAD);
    if full {
        memo.full_at = Some(Instant::now());
    }
    // Names learned since (a pod's log directory made after its processes started)
    // are taken by attributing every process again.
    let same_index = memo.index.same_as(index);
    if !same_index {
        memo.index = index.clone();
    }
    let mut scan = ProcScan {
        host,
        host_from_pid1,
        by_ns: HashMap::with_capacity(memo.namespaces),
        live_containers: HashMap::with_capacity(memo.containers),
        cgroups_readable: false,
        unreadable: 0,
    };
    let mut settled = HashMap::with_capacity(entries.len());
    for &entry in entries {
        let pid = entry.pid;
        let mut known = memo
            .settled
            .remove(&entry)
            .unwrap_or_else(|| Settled::first_seen(root, &proc, pid));
        let inode = match known.kept_netns(full, clock, now) {
            Some(inode) => inode,
            None => match proc.netns_of(pid) {
                Ok(inode) => inode,
                Err(_) => {
                    scan.unreadable += 1;
                    known.netns = None;
                    settled.insert(entry, known);
                    continue;
                }
            },
        };
        known.netns = Some(inode);
        let (pod_cgroup, attribution) = match known.container.take() {
            Some((r, kept)) => {
                scan.cgroups_readable = true;
                let a = if same_index {
                    kept
                } else {
                    index.attribute_ref(&r)
                };
                (Some(r), Some(a))
            }
            None if known.kernel_thread => (None, None),
            None if known.outside_pods && !full => {
                scan.cgroups_readable = true;
                (None, None)
            }
            None => {
                let cgroups = process::read_cgroups(root, pid).ok();
                scan.cgroups_readable |= cgroups.is_some();
                let r = cgroups
                    .as_ref()
                    .and_then(pods::pod_cgroup)
                    .and_then(pods::parse_cgroup_path);
                known.outside_pods = cgroups.is_some() && r.is_none() && known.is_old(clock, now);
                let a = r.as_ref().map(|r| index.attribute_ref(r));
                (r, a)
            }
        };
        if let Some(a) = attribution.as_ref() {
            if let Some(id) = a.container_id.clone() {
                scan.live_containers.insert(id, a.clone());
            }
        }
        let view = scan.by_ns.entry(inode).or_default();
        view.pids.push(pid);
        // The host namespace holds most processes: its age and pod mean nothing.
        if Some(inode) != scan.host {
            if known.start_ticks.is_none() {
                known.start_ticks = process::read_stat(root, pid).ok().map(|s| s.start_ticks);
            }
            if let (Some(c), Some(ticks)) = (clock, known.start_ticks) {
                let s = c.started(ticks);
                view.oldest_start = Some(view.oldest_start.map_or(s, |o| o.min(s)));
            }
            let better = match (&view.pod, &attribution) {
                (None, Some(_)) => true,
                (Some(old), Some(new)) => old.pod.is_none() && new.pod.is_some(),
                _ => false,
            };
            if better {
                view.pod = attribution.clone();
            }
        }
        known.container = pod_cgroup
            .filter(|r| r.container_id.is_some())
            .zip(attribution);
        settled.insert(entry, known);
    }
    memo.settled = settled;
    memo.namespaces = scan.by_ns.len();
    memo.containers = scan.live_containers.len();
    Ok(scan)
}

/// Every namespace once, by inode: pinned ones and those only processes hold. Sorted
/// by inode.
pub(super) fn namespaces(pins: &PinScan, procs: &ProcScan, now: SystemTime) -> Vec<NetnsInfo> {
    let mut inodes: Vec<u64> = pins.by_ns.keys().copied().collect();
    inodes.extend(procs.by_ns.keys().copied());
    inodes.sort_unstable();
    inodes.dedup();
    inodes
        .iter()
        .map(|&inode| {
            let pinned = pins.by_ns.get(&inode);
            let proc_view = procs.by_ns.get(&inode);
            let host = Some(inode) == procs.host;
            let mut pids = proc_view.map(|p| p.pids.clone()).unwrap_or_default();
            pids.sort_unstable();
            let processes = pids.len() as u32;
            pids.truncate(MAX_PIDS_LISTED);
            let (created, age_from) = match (pinned, proc_view.and_then(|p| p.oldest_start)) {
                (Some(p), _) => (Some(p.at), Some(AgeSource::Pin)),
                (None, Some(s)) => (Some(s), Some(AgeSource::Process)),
                _ => (None, None),
            };
            let pod = proc_view.and_then(|p| p.pod.clone());
            NetnsInfo {
                inode,
                host,
                pins: pinned.map(|p| p.shown.clone()).unwrap_or_default(),
                nsid: None,
                processes,
                pids,
                created: created.filter(|_| !host),
                age_seconds: created
                    .filter(|_| !host)
                    .map(|c| now.duration_since(c).unwrap_or_default().as_secs()),
                age_from: age_from.filter(|_| !host),
                former_pod: None,
                pod,
                interfaces: Default::default(),
                interfaces_error: None,
                host_veths: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{host_dirs, DEFAULT_PIN_DIRS};
    use super::*;
    use crate::collect::pods::PodLogsMemo;
    use crate::kernel::testing;

    /// One walk of the processes listed now.
    fn walk(root: &HostRoot, index: &PodIndex, memo: &mut ProcMemo) -> ProcScan {
        let entries = process::list_processes(root).unwrap();
        processes(root, &entries, index, memo).unwrap()
    }

    /// A procfs of processes (pid, stat flags, namespace inode, cgroup file).
    fn fake_proc(dir: &Path, processes: &[(u32, u64, u64, &str)]) {
        for &(pid, flags, ns, cgroup) in processes {
            let d = dir.join(pid.to_string());
            std::fs::create_dir_all(d.join("ns")).unwrap();
            let stat = format!("{pid} (p) S 0 0 0 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 1 0 7 0 0");
            std::fs::write(d.join("stat"), stat).unwrap();
            std::fs::write(d.join("cgroup"), cgroup).unwrap();
            let link = d.join("ns/net");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(format!("net:[{ns}]"), link).unwrap();
        }
    }

    /// A host whose procfs (a temporary directory) was booted an hour ago.
    fn host_booted_an_hour_ago() -> (tempfile::TempDir, HostRoot) {
        let t = tempfile::tempdir().unwrap();
        procfs_booted_an_hour_ago(t.path());
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        (t, root)
    }

    /// A procfs whose boot was an hour ago, for processes of a known age.
    fn procfs_booted_an_hour_ago(dir: &Path) {
        let boot = SystemTime::now() - Duration::from_secs(3600);
        let btime = boot.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        std::fs::write(dir.join("stat"), format!("btime {}\n", btime.as_secs())).unwrap();
    }

    /// Makes `pid` (written by [`fake_proc`]) `secs` old in a procfs booted an hour ago.
    fn started_ago(dir: &Path, pid: u32, secs: u64) {
        let ticks = (3600 - secs) * process::clock_ticks_per_second();
        let stat = format!("{pid} (p) S 0 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {ticks} 0 0");
        std::fs::write(dir.join(format!("{pid}/stat")), stat).unwrap();
    }

    const POD_UID: &str = "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
    const CONTAINER_ID: &str = "4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";

    fn in_pod() -> String {
        format!("0::/kubepods/burstable/pod{POD_UID}/{CONTAINER_ID}\n")
    }

    #[test]
    fn a_kernel_thread_is_read_once_and_in_no_pod() {
        use crate::kernel::process::PF_KTHREAD as KTHREAD;
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        let in_pod = &in_pod();
        // pid 1 on the host; a kernel thread and a process of a pod elsewhere, the
        // kernel thread (oddly) in a pod's cgroup.
        let first = [
            (1, 0, 10, "0::/\n"),
            (2, KTHREAD, 40, in_pod),
            (300, 0, 20, in_pod),
        ];
        fake_proc(t.path(), &first);
        let mut memo = ProcMemo::default();
        let index = PodIndex::default();
        let scan = walk(&root, &index, &mut memo);
        assert_eq!(scan.host, Some(10));
        assert_eq!(scan.by_ns[&40].pids, [2]);
        assert!(
            scan.by_ns[&40].pod.is_none(),
            "a kernel thread is in no pod"
        );
        assert!(scan.by_ns[&20].pod.is_some());
        // Both links now name another namespace: only the process's is read again.
        fake_proc(t.path(), &[(2, KTHREAD, 50, in_pod), (300, 0, 30, in_pod)]);
        let scan = walk(&root, &index, &mut memo);
        assert_eq!(scan.by_ns[&40].pids, [2], "kept from the first read");
        assert_eq!(scan.by_ns[&30].pids, [300]);
        assert!(!scan.by_ns.contains_key(&50));
    }

    #[test]
    fn between_full_walks_only_young_processes_links_are_read() {
        let (t, root) = host_booted_an_hour_ago();
        let in_pod = &in_pod();
        // Started 7 ticks after boot, an hour ago: pid 1 on the host, 300 in a pod.
        fake_proc(t.path(), &[(1, 0, 10, "0::/\n"), (300, 0, 20, in_pod)]);
        // 400 started ten seconds ago.
        fake_proc(t.path(), &[(400, 0, 30, in_pod)]);
        started_ago(t.path(), 400, 10);
        let mut memo = ProcMemo::default();
        let index = PodIndex::default();
        let pids = |scan: &ProcScan, ns: u64| scan.by_ns.get(&ns).map(|v| v.pids.clone());
        let first = walk(&root, &index, &mut memo);
        assert_eq!(pids(&first, 20), Some(vec![300]));
        assert_eq!(pids(&first, 30), Some(vec![400]));

        // Both move: the young one is read again, the old one kept.
        fake_proc(t.path(), &[(300, 0, 21, in_pod)]);
        std::os::unix::fs::symlink("net:[31]", t.path().join("400/ns/net.new")).unwrap();
        std::fs::rename(t.path().join("400/ns/net.new"), t.path().join("400/ns/net")).unwrap();
        let between = walk(&root, &index, &mut memo);
        assert_eq!(
            pids(&between, 20),
            Some(vec![300]),
            "an old process is kept"
        );
        assert_eq!(pids(&between, 31), Some(vec![400]), "a young one is read");
        assert!(between.by_ns[&20].pod.is_some(), "and still in its pod");

        // A full walk reads every link.
        memo.full_at = None;
        let full = walk(&root, &index, &mut memo);
        assert_eq!(pids(&full, 21), Some(vec![300]));
        assert_eq!(pids(&full, 20), None);

        // An exit is seen in the next walk, full or not.
        std::fs::remove_dir_all(t.path().join("300")).unwrap();
        let after_exit = walk(&root, &index, &mut memo);
        assert_eq!(pids(&after_exit, 21), None);
        assert_eq!(pids(&after_exit, 31), Some(vec![400]));
        assert_eq!(pids(&after_exit, 10), Some(vec![1]));
    }

    #[test]
    fn a_process_outside_every_pod_past_its_first_minute_is_read_again_with_every_link() {
        let (t, root) = host_booted_an_hour_ago();
        let outside = "0::/system.slice/agent.service\n";
        // 500 started an hour ago, 600 ten seconds ago, each outside every pod and in
        // a namespace of its own.
        fake_proc(t.path(), &[(1, 0, 10, "0::/\n"), (500, 0, 40, outside)]);
        fake_proc(t.path(), &[(600, 0, 41, outside)]);
        started_ago(t.path(), 600, 10);
        let mut memo = ProcMemo::default();
        let index = PodIndex::default();
        let first = walk(&root, &index, &mut memo);
        assert!(first.by_ns[&40].pod.is_none() && first.by_ns[&41].pod.is_none());
        assert!(first.cgroups_readable);

        // Both are moved into a container's cgroup: the young one is seen there.
        let in_pod = in_pod();
        std::fs::write(t.path().join("500/cgroup"), &in_pod).unwrap();
        std::fs::write(t.path().join("600/cgroup"), &in_pod).unwrap();
        let between = walk(&root, &index, &mut memo);
        assert!(between.by_ns[&40].pod.is_none(), "the old one is kept out");
        assert_eq!(
            between.by_ns[&41].pod.as_ref().map(|p| &*p.pod_uid),
            Some(POD_UID)
        );
        assert!(between.live_containers.contains_key(CONTAINER_ID));
        assert!(between.cgroups_readable, "a kept answer was read");

        // A walk of every link reads its cgroups again.
        memo.full_at = None;
        let full = walk(&root, &index, &mut memo);
        assert_eq!(
            full.by_ns[&40].pod.as_ref().map(|p| &*p.pod_uid),
            Some(POD_UID)
        );
    }

    #[test]
    fn names_the_kubelet_writes_after_a_process_started_are_taken_next_walk() {
        let t = tempfile::tempdir().unwrap();
        let proc = t.path().join("proc");
        let rootfs = t.path().join("rootfs");
        // Listings kept only once their directories are a second old.
        let long_ago = SystemTime::now() - Duration::from_secs(10);
        for dir in ["var/log/pods", "var/log/containers"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
            let dir = std::fs::File::open(rootfs.join(dir)).unwrap();
            dir.set_modified(long_ago).unwrap();
        }
        let root = HostRoot {
            proc: proc.clone(),
            rootfs: rootfs.clone(),
            ..HostRoot::default()
        };
        std::fs::create_dir_all(&proc).unwrap();
        procfs_booted_an_hour_ago(&proc);
        fake_proc(&proc, &[(1, 0, 10, "0::/\n"), (300, 0, 20, &in_pod())]);
        let mut memo = ProcMemo::default();
        let mut logs = PodLogsMemo::default();
        let (index, _) = PodIndex::read_with(&root, &mut logs);
        let pod_name = |scan: &ProcScan| scan.by_ns[&20].pod.as_ref().map(|p| p.name());
        let unnamed = walk(&root, &index, &mut memo);
        assert_eq!(pod_name(&unnamed), Some(format!("pod {POD_UID}")));
        let (same, _) = PodIndex::read_with(&root, &mut logs);
        assert!(same.same_as(&index), "unchanged listings are kept");
        assert_eq!(pod_name(&walk(&root, &same, &mut memo)), pod_name(&unnamed));

        std::fs::create_dir(rootfs.join(format!("var/log/pods/shop_web-1_{POD_UID}"))).unwrap();
        let mut named = PodIndex::read(&root).0;
        for _ in 0..2 {
            let scan = walk(&root, &named, &mut memo);
            assert_eq!(pod_name(&scan), Some("shop/web-1".to_string()));
            assert_eq!(
                scan.live_containers[CONTAINER_ID].pod.as_deref(),
                Some("web-1")
            );
            named = named.clone();
        }
    }

    // A pin mounted on a file already there changes no directory entry: only the
    // mount table says so. Needs root to mount, and a live procfs.
    #[test]
    fn a_pin_mounted_or_unmounted_on_an_unchanged_directory_is_seen_next_round() {
        if !testing::as_root("mounting a pin") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let pin = t.path().join("cni-test");
        std::fs::write(&pin, "").unwrap();
        // Settled: an entry made a second ago could change unseen within its tick.
        let long_ago = SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::open(t.path())
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let root = HostRoot::default();
        let dirs = host_dirs(&root, &[t.path().to_path_buf()], &[]);
        let mut memo = PinsMemo::default();
        let stale = |s: &PinScan| (s.by_ns.len(), s.stale.len());
        assert_eq!(stale(&pins(&root, &dirs, &mut memo)), (0, 1));
        let pin_s = pin.to_str().unwrap();
        testing::run(&["mount", "--bind", "/proc/self/ns/net", pin_s]);
        let mounted = pins(&root, &dirs, &mut memo);
        let kept = pins(&root, &dirs, &mut memo);
        testing::run(&["umount", pin_s]);
        assert_eq!(stale(&mounted), (1, 0), "mounted: a namespace");
        assert_eq!(stale(&kept), (1, 0));
        assert_eq!(
            stale(&pins(&root, &dirs, &mut memo)),
            (0, 1),
            "unmounted: stale"
        );
    }

    #[test]
    fn pin_directories_reached_twice_through_a_link_are_read_once() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("run/netns")).unwrap();
        std::fs::write(rootfs.path().join("run/netns/cni-1234"), "").unwrap();
        std::fs::create_dir_all(rootfs.path().join("var")).unwrap();
        std::os::unix::fs::symlink("../run", rootfs.path().join("var/run")).unwrap();
        let root = HostRoot {
            rootfs: rootfs.path().to_path_buf(),
            ..HostRoot::default()
        };
        let scan = pins(
            &root,
            &host_dirs(&root, &[], &DEFAULT_PIN_DIRS),
            &mut PinsMemo::default(),
        );
        assert!(scan.any_dir);
        assert!(scan.by_ns.is_empty(), "a plain file pins no namespace");
        assert_eq!(
            scan.stale,
            vec!["/run/netns/cni-1234".to_string()],
            "shown as a host path, once"
        );
    }
}
