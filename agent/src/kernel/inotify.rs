//! inotify instances and watches per user, counted from the file descriptors of every
//! process (`/proc/<pid>/fd/*` links to `anon_inode:inotify`; each watch is an
//! `inotify wd:` line in `/proc/<pid>/fdinfo/<fd>`). The kernel keeps these counts
//! per user (ucounts) but does not export them.

use super::process::{self, ProcEntry};
use super::{read_link_at, ReadError};
use crate::host::HostRoot;
use foldhash::HashMap;
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// One process holding inotify instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InotifyHolder {
    pub pid: u32,
    pub comm: String,
    pub instances: u64,
    pub watches: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInotify {
    pub instances: u64,
    pub watches: u64,
    /// The processes holding the most instances, most first (at most `TOP`).
    pub top: Vec<InotifyHolder>,
}

pub const TOP: usize = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InotifyUsage {
    /// By effective uid, which the kernel charges.
    pub users: BTreeMap<u32, UserInotify>,
    /// Processes whose fds could not be read (no permission, most often). One that
    /// exited between the listing and the read is left out, as a process gone.
    pub unreadable_processes: u64,
}

/// nodediag's own inotify instances and watches, as it opens and drops them: the
/// count does not read its own descriptors (see [`InotifyCount::count`]), so what
/// it holds is added from here. A watch the kernel dropped with its directory is
/// counted until nodediag drops it too, by the next round.
#[derive(Debug)]
pub struct OwnInotify {
    instances: AtomicU64,
    watches: AtomicU64,
}

pub static OWN: OwnInotify = OwnInotify::new();

impl OwnInotify {
    const fn new() -> Self {
        Self {
            instances: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        }
    }
    pub fn opened(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }
    pub fn closed(&self) {
        self.instances.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn watched(&self) {
        self.watches.fetch_add(1, Ordering::Relaxed);
    }
    pub fn unwatched(&self) {
        self.watches.fetch_sub(1, Ordering::Relaxed);
    }
    /// Instances and watches held now.
    pub fn held(&self) -> (u64, u64) {
        (
            self.instances.load(Ordering::Relaxed),
            self.watches.load(Ordering::Relaxed),
        )
    }
}

/// The effective uid from `/proc/<pid>/status` (`Uid: real effective saved fs`).
pub fn parse_status_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Watches of one inotify instance: its `inotify wd:` lines.
pub fn count_fdinfo_watches(fdinfo: &str) -> u64 {
    fdinfo
        .lines()
        .filter(|l| l.starts_with("inotify wd:"))
        .count() as u64
}

/// Counts every process's inotify instances and watches, round after round.
///
/// Reading which descriptors are inotify instances takes the link of every open file
/// of every process (at 500 pods about 2,800 links, 6 ms made again at once and
/// about 16 ms after a pause), while instances are mostly opened by a program as it
/// starts and then held. So a round that is not [`full`](InotifyCount::count) reads
/// the links only of the processes in their first rounds ([`InotifyCount::new`]),
/// and the watches of every holder, which grow without a new descriptor. Instances
/// a process opens later are seen at the next full read.
///
/// Following every process's number of descriptors instead (the size procfs gives
/// its `fd` directory since Linux 6.2), to read the processes whose number changed,
/// cost as much as it saved: one stat a process a round, 0.7 ms at 500 pods made
/// again at once and about 2 ms after a pause.
#[derive(Debug)]
pub struct InotifyCount {
    /// How many rounds a new process is read.
    young_rounds: u32,
    known: HashMap<ProcEntry, Known>,
    /// nodediag itself, by its pid, when it holds instances.
    own: Option<(u32, Holding)>,
    /// Where nodediag's own are counted: [`OWN`] but in tests.
    own_counts: &'static OwnInotify,
}

/// What a count keeps of one process between rounds.
#[derive(Debug)]
struct Known {
    /// The rounds it has been read in since it was first seen.
    rounds: u32,
    /// None: its descriptors could not be read.
    read: Option<Holding>,
}

/// One process's inotify instances, as last read.
#[derive(Debug, Default)]
struct Holding {
    uid: u32,
    comm: String,
    /// Its inotify descriptors, whose watches are read again each round (none
    /// listed for nodediag's own).
    fds: Vec<u32>,
    instances: u64,
    watches: u64,
}

/// Every process's inotify instances, read in full once.
pub fn scan(root: &HostRoot) -> Result<InotifyUsage, ReadError> {
    InotifyCount::new(1).count(root, true)
}

impl InotifyCount {
    /// `young_rounds`: how many rounds, from the one it is first seen in, a new
    /// process's descriptors are read (at least one).
    pub fn new(young_rounds: u32) -> Self {
        Self {
            young_rounds: young_rounds.max(1),
            known: HashMap::default(),
            own: None,
            own_counts: &OWN,
        }
    }

    /// Every process but this one. `full`: every process's links are read; otherwise
    /// only those of young processes, and the watches of every holder.
    ///
    /// Threads share their process's fd table, so only the thread-group leaders under
    /// `/proc` are read. nodediag's own are not: at 500 pods it holds half the node's
    /// descriptors (the cgroup files it keeps open), and reading its own links was
    /// half the walk. What it holds is added from [`OWN`] (tests/pressure_kernel.rs
    /// checks a running agent against its descriptors).
    pub fn count(&mut self, root: &HostRoot, full: bool) -> Result<InotifyUsage, ReadError> {
        let entries = process::list_processes(root)?;
        Ok(self.count_listed(root, &entries, full))
    }

    /// [`InotifyCount::count`] of the processes `entries` lists (a listing of
    /// `root`'s procfs made moments ago, which another collector may share).
    pub fn count_listed(
        &mut self,
        root: &HostRoot,
        entries: &[ProcEntry],
        full: bool,
    ) -> InotifyUsage {
        // This process's pid as that procfs numbers it; none if it is another pid
        // namespace's.
        let own = std::fs::read_link(root.proc(&["self"]))
            .ok()
            .and_then(|p| p.to_str()?.parse::<u32>().ok());
        let last_own = self.own.take();
        self.own = own.and_then(|pid| Holding::own(root, pid, self.own_counts, last_own));
        let mut known = HashMap::with_capacity_and_hasher(entries.len(), Default::default());
        for &entry in entries.iter().filter(|e| Some(e.pid) != own) {
            let pid = entry.pid.to_string();
            let last = self.known.remove(&entry);
            let rounds = last.as_ref().map_or(0, |k| k.rounds);
            let young = rounds < self.young_rounds;
            let kept = match last {
                Some(mut k) if !full && !young => match &mut k.read {
                    // An instance gone: the process is read again.
                    Some(h) => h.read_watches(root, &pid).then_some(k),
                    None => Some(k),
                },
                _ => None,
            };
            let k = match kept {
                Some(k) => k,
                None => match Holding::read(root, &pid) {
                    Ok(read) => Known {
                        rounds: rounds.saturating_add(1),
                        read,
                    },
                    Err(Exited) => continue,
                },
            };
            known.insert(entry, k);
        }
        self.known = known;
        self.usage()
    }

    fn usage(&self) -> InotifyUsage {
        let mut usage = InotifyUsage::default();
        let mut holders: BTreeMap<u32, Vec<InotifyHolder>> = BTreeMap::new();
        let own = self.own.as_ref().map(|(pid, h)| (*pid, Some(h)));
        let others = self.known.iter().map(|(e, k)| (e.pid, k.read.as_ref()));
        for (pid, read) in others.chain(own) {
            let Some(h) = read else {
                usage.unreadable_processes += 1;
                continue;
            };
            if h.instances == 0 {
                continue;
            }
            let user = usage.users.entry(h.uid).or_default();
            user.instances += h.instances;
            user.watches += h.watches;
            holders.entry(h.uid).or_default().push(InotifyHolder {
                pid,
                comm: h.comm.clone(),
                instances: h.instances,
                watches: h.watches,
            });
        }
        for (uid, mut list) in holders {
            list.sort_by(|a, b| b.instances.cmp(&a.instances).then(a.pid.cmp(&b.pid)));
            list.truncate(TOP);
            if let Some(u) = usage.users.get_mut(&uid) {
                u.top = list;
            }
        }
        usage
    }
}

/// The process was listed but has exited since: its procfs directory is gone.
struct Exited;

impl Holding {
    /// Its inotify instances and their watches; None when its descriptors or, for a
    /// holder, its status could not be read; [`Exited`] when they are gone with it.
    fn read(root: &HostRoot, pid: &str) -> Result<Option<Holding>, Exited> {
        let fds = match inotify_fds(&root.proc(&[pid, "fd"])) {
            Ok(fds) => fds,
            Err(nix::errno::Errno::ENOENT) => return Err(Exited),
            Err(_) => return Ok(None),
        };
        if fds.is_empty() {
            return Ok(Some(Holding::default()));
        }
        let Some((uid, comm)) = identity(root, pid)? else {
            return Ok(None);
        };
        let mut h = Holding {
            uid,
            comm,
            instances: fds.len() as u64,
            fds,
            watches: 0,
        };
        // An instance closed meanwhile is found gone at the next round's watches,
        // which reads the process again.
        h.read_watches(root, pid);
        Ok(Some(h))
    }

    /// nodediag's own instances, as `counts` has them; None when it holds none (or
    /// its status does not read). Its uid and name are read once, `last` keeps them.
    fn own(
        root: &HostRoot,
        pid: u32,
        counts: &OwnInotify,
        last: Option<(u32, Holding)>,
    ) -> Option<(u32, Holding)> {
        let (instances, watches) = counts.held();
        if instances == 0 {
            return None;
        }
        let mut h = match last {
            Some((p, h)) if p == pid => h,
            _ => {
                let (uid, comm) = identity(root, &pid.to_string()).ok().flatten()?;
                Holding {
                    uid,
                    comm,
                    ..Holding::default()
                }
            }
        };
        (h.instances, h.watches) = (instances, watches);
        Some((pid, h))
    }

    /// Reads the watches of its instances again; false if one of them is gone (its
    /// watches are left out).
    fn read_watches(&mut self, root: &HostRoot, pid: &str) -> bool {
        let mut all = true;
        self.watches = 0;
        for fd in &self.fds {
            let info = root.proc(&[pid, "fdinfo", &fd.to_string()]);
            match std::fs::read_to_string(info) {
                Ok(text) => self.watches += count_fdinfo_watches(&text),
                Err(_) => all = false,
            }
        }
        all
    }
}

/// A process's effective uid and name; None when its status does not read or parse,
/// [`Exited`] when it is gone.
fn identity(root: &HostRoot, pid: &str) -> Result<Option<(u32, String)>, Exited> {
    let status = match std::fs::read_to_string(root.proc(&[pid, "status"])) {
        Ok(status) => status,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Exited),
        Err(_) => return Ok(None),
    };
    let Some(uid) = parse_status_euid(&status) else {
        return Ok(None);
    };
    let comm = std::fs::read_to_string(root.proc(&[pid, "comm"]))
        .map(|c| c.trim().to_string())
        .unwrap_or_default();
    Ok(Some((uid, comm)))
}

/// The descriptors of one process that are inotify instances.
fn inotify_fds(fd_dir: &Path) -> nix::Result<Vec<u32>> {
    let mut fds = Vec::new();
    each_fd_link(fd_dir, |name, target| {
        if target == Some(b"anon_inode:inotify".as_slice()) {
            fds.extend(name.to_str().ok().and_then(|n| n.parse::<u32>().ok()));
        }
    })?;
    Ok(fds)
}

/// Calls `f` with the name and link target of every entry of a `/proc/<pid>/fd`
/// directory; the target is None when it is not a link, or longer than anything
/// looked for here (64 bytes). Each link is read relative to the open directory: a
/// path from `/` for every descriptor (five lookups in procfs) was most of the
/// walk's cost, as a node's agents hold thousands. Names and targets stay on the
/// stack: a walk reads every descriptor on the node, and copying each name and
/// target out cost two allocations a descriptor. `benches/kernel_floor.rs` makes
/// the same read bare.
pub fn each_fd_link(fd_dir: &Path, mut f: impl FnMut(&CStr, Option<&[u8]>)) -> nix::Result<()> {
    let mut dir = Dir::open(
        fd_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let at = dir.as_raw_fd();
    let mut buf = [0u8; 64];
    for entry in dir.iter().flatten() {
        let name = entry.file_name();
        if !matches!(name.to_bytes(), b"." | b"..") {
            f(name, read_link_at(at, name, &mut buf).ok());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process of a procfs-like tree holding `instances` inotify descriptors (3,
    /// 4, ...) with `watches` watches each, under uid 1000.
    fn holder(proc: &Path, pid: u32, instances: u32, watches: usize) {
        let d = proc.join(pid.to_string());
        for sub in ["fd", "fdinfo"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("status"), "Name:\tw\nUid:\t1000\t1000\t1000\t1000\n").unwrap();
        std::fs::write(d.join("comm"), "w\n").unwrap();
        let line = "inotify wd:1 ino:2 sdev:800001 mask:fc6 ignored_mask:0\n";
        for fd in 3..3 + instances {
            let link = d.join(format!("fd/{fd}"));
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink("anon_inode:inotify", link).unwrap();
            }
            std::fs::write(d.join(format!("fdinfo/{fd}")), line.repeat(watches)).unwrap();
        }
    }

    fn procfs(dir: &Path) -> HostRoot {
        HostRoot {
            proc: dir.to_path_buf(),
            ..HostRoot::default()
        }
    }

    /// Instances and watches of uid 1000, the fixtures' holders.
    fn user_1000(u: &InotifyUsage) -> (u64, u64) {
        let u = &u.users[&1000];
        (u.instances, u.watches)
    }

    #[test]
    fn rounds_between_full_reads_follow_new_processes_and_watches() {
        let t = tempfile::tempdir().unwrap();
        let root = procfs(t.path());
        holder(t.path(), 100, 1, 1);
        // Read in the round it is first seen only.
        let mut count = InotifyCount::new(1);
        assert_eq!(user_1000(&count.count(&root, true).unwrap()), (1, 1));
        // A holder's watches are read every round.
        holder(t.path(), 100, 1, 3);
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (1, 3));
        // A new process is read in the round it appears.
        holder(t.path(), 200, 2, 1);
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (3, 5));
        // One no longer young that opens another instance waits for a full read.
        holder(t.path(), 200, 3, 1);
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (3, 5));
        assert_eq!(user_1000(&count.count(&root, true).unwrap()), (4, 6));
        // An instance gone (its fdinfo with it): the process is read again.
        for sub in ["fd/5", "fdinfo/5"] {
            std::fs::remove_file(t.path().join("200").join(sub)).unwrap();
        }
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (3, 5));
        // A process gone is gone from the count.
        std::fs::remove_dir_all(t.path().join("100")).unwrap();
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (2, 2));
    }

    #[test]
    fn nodediags_own_instances_are_counted_without_reading_its_descriptors() {
        static COUNTS: OwnInotify = OwnInotify::new();
        let t = tempfile::tempdir().unwrap();
        let root = procfs(t.path());
        holder(t.path(), 100, 1, 1);
        // nodediag as pid 300, whose descriptors (not read) say something else.
        holder(t.path(), 300, 3, 9);
        std::os::unix::fs::symlink("300", t.path().join("self")).unwrap();
        let mut count = InotifyCount::new(1);
        count.own_counts = &COUNTS;
        assert_eq!(
            user_1000(&count.count(&root, true).unwrap()),
            (1, 1),
            "none held"
        );
        COUNTS.opened();
        COUNTS.watched();
        COUNTS.watched();
        let usage = count.count(&root, false).unwrap();
        assert_eq!(user_1000(&usage), (2, 3));
        let own = usage.users[&1000].top.iter().find(|h| h.pid == 300);
        assert_eq!(own.map(|h| (h.instances, h.watches)), Some((1, 2)));
        // Its uid and name are kept from the first read.
        std::fs::remove_file(t.path().join("300/status")).unwrap();
        COUNTS.unwatched();
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (2, 2));
        COUNTS.unwatched();
        COUNTS.closed();
        assert_eq!(user_1000(&count.count(&root, false).unwrap()), (1, 1));
    }

    #[test]
    fn a_process_is_read_every_round_while_it_is_young() {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        let instances = |u: InotifyUsage| u.users.get(&1000).map_or(0, |u| u.instances);
        let mut count = InotifyCount::new(3);
        holder(t.path(), 100, 0, 0);
        assert_eq!(instances(count.count(&root, true).unwrap()), 0);
        // Its second and third rounds read it again: a program opens its instances
        // after it starts.
        holder(t.path(), 100, 1, 1);
        assert_eq!(instances(count.count(&root, false).unwrap()), 1);
        holder(t.path(), 100, 2, 1);
        assert_eq!(instances(count.count(&root, false).unwrap()), 2);
        holder(t.path(), 100, 3, 1);
        assert_eq!(
            instances(count.count(&root, false).unwrap()),
            2,
            "no longer young"
        );
    }

    #[test]
    fn a_process_gone_since_the_listing_is_left_out_not_unreadable() {
        let t = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        holder(t.path(), 100, 1, 1);
        // Listed, and its directory gone before its descriptors were read.
        let gone = ProcEntry { pid: 200, inode: 2 };
        // Listed, and its descriptors unreadable: `fd` is no directory here.
        std::fs::create_dir_all(t.path().join("300")).unwrap();
        std::fs::write(t.path().join("300/fd"), "").unwrap();
        let listed = [
            ProcEntry { pid: 100, inode: 1 },
            gone,
            ProcEntry { pid: 300, inode: 3 },
        ];
        let mut count = InotifyCount::new(1);
        for full in [true, false] {
            let usage = count.count_listed(&root, &listed, full);
            assert_eq!(usage.unreadable_processes, 1, "only 300 (full: {full})");
            assert_eq!(usage.users[&1000].instances, 1);
            assert!(!count.known.contains_key(&gone));
        }
    }

    #[test]
    fn a_real_process_that_exited_is_not_counted_unreadable() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let root = HostRoot::default();
        let usage = InotifyCount::new(1).count_listed(&root, &[ProcEntry { pid, inode: 0 }], true);
        assert_eq!(usage.unreadable_processes, 0, "{usage:?}");
        assert!(usage.users.is_empty(), "{usage:?}");
    }

    #[test]
    fn euid_is_the_second_uid() {
        let status = "Name:\tkubelet\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_euid(status), Some(0));
        assert_eq!(parse_status_euid("Name: x\n"), None);
        assert_eq!(parse_status_euid("Uid:\tx\n"), None);
    }

    #[test]
    fn watches_are_the_wd_lines() {
        let fdinfo = "pos:\t0\nflags:\t02004000\nmnt_id:\t15\nino:\t1057\ninotify wd:2 ino:1a2b sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a0000\ninotify wd:1 ino:2 sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:02000000\n";
        assert_eq!(count_fdinfo_watches(fdinfo), 2);
        assert_eq!(count_fdinfo_watches("pos:\t0\n"), 0);
    }

    #[test]
    fn only_links_to_an_inotify_instance_are_counted() {
        let d = tempfile::tempdir().unwrap();
        let target = "anon_inode:inotify";
        std::os::unix::fs::symlink(target, d.path().join("3")).unwrap();
        // Longer than the buffer, and starting with the target: not one.
        let long = format!("{target}{}", "x".repeat(100));
        std::os::unix::fs::symlink(long, d.path().join("4")).unwrap();
        std::os::unix::fs::symlink("socket:[1234]", d.path().join("5")).unwrap();
        std::fs::write(d.path().join("6"), target).unwrap();
        assert_eq!(inotify_fds(d.path()).unwrap(), [3]);
    }

    #[test]
    fn an_inotify_instance_of_this_process_is_found() {
        // SAFETY: inotify_init1 takes flags only; the descriptor is closed below.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(
            raw >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        let found = inotify_fds(Path::new("/proc/self/fd")).unwrap();
        // SAFETY: the descriptor is this test's own, closed once.
        unsafe { libc::close(raw) };
        assert!(found.contains(&(raw as u32)), "{raw} not in {found:?}");
    }
}
