//! CPU bandwidth (quota, periods, throttling, usage) of every pod and container
//! cgroup the kubelet created, on cgroup v1, v2 and hybrid hosts.
//!
//! Where the hierarchies are: the host's mount table (`<procfs>/1/mountinfo`, which
//! is the host's with hostPID) names the cgroup mount points as host paths. Each is
//! read, first match wins, at
//! 1. `--path.cgroup DIR` standing for the host's `/sys/fs/cgroup` (mount points
//!    under it map below DIR),
//! 2. the same path under `--path.rootfs`,
//! 3. the same path under `--path.sysfs` when it starts with `/sys/`.

pub use super::cgroup_counters::{Counters, PackedCounters};
use super::Collector;
use crate::collect::pods::{parse_cgroup_path, CgroupRef, Name, PodIndex, PodLogsMemo, Qos};
use crate::host::HostRoot;
use crate::kernel::cgroup::{
    self, Changes, CounterFiles, CpuHierarchy, CpuQuota, CpuStat, DirWatch, HeldListing,
    LimitFiles, Watched,
};
use crate::kernel::mountinfo::{Mount, MountsMemo};
use crate::kernel::read_held;
use crate::kernel::release;
use crate::sample::{CollectError, Compacted, Sample, Unavailable};
// cgroup paths run to a hundred bytes and a round looks up thousands: SipHash
// (std's default) on them was about a tenth of the collector at 500 pods.
use foldhash::HashMap;
use nix::sys::resource::{getrlimit, Resource};
use serde::Serialize;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// One cgroup's CPU bandwidth: the limit and the kernel's counters as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuCgroup {
    /// Path inside the cpu hierarchy, e.g. `/kubepods/burstable/pod<uid>/<id>`.
    /// Shared with its parent's listing, which builds it when the children change
    /// rather than every round.
    pub path: Name,
    /// None: no CPU limit (v1 quota -1, v2 `max`), so it cannot be throttled.
    pub quota: Option<CpuQuota>,
    #[serde(flatten)]
    pub stat: CpuStat,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCpu {
    pub container_id: Name,
    /// containerd, crio or docker when the systemd driver's scope says.
    pub runtime: Option<&'static str>,
    /// From the kubelet's container log links; None for a sandbox (pause) container
    /// or when the logs are not visible.
    pub container: Option<Name>,
    pub cgroup: CpuCgroup,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodCpu {
    pub pod_uid: Name,
    pub qos: Qos,
    pub namespace: Option<Name>,
    pub pod: Option<Name>,
    /// The pod-level cgroup: the sum of its containers, limited by the sum of their
    /// limits when every container has one.
    pub cgroup: CpuCgroup,
    pub containers: Vec<ContainerCpu>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgroupSample {
    pub version: CgroupVersion,
    /// The host mount point of the cpu hierarchy.
    pub mount_point: String,
    /// `kubepods` or `kubepods.slice` path in the hierarchy; None on a node without
    /// kubelet cgroups.
    pub kubepods: Option<String>,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// Whether the kernel version has the CFS bandwidth fix; None when unparsable.
    /// A judgement, so the collector leaves it None and the signal's wiring fills
    /// it in from the rules' own verdict on `kernel_release`.
    pub cfs_bandwidth_fix: Option<bool>,
    pub pods: Vec<PodCpu>,
    pub unavailable: Vec<Unavailable>,
    /// Each cgroup's counters by [`path_key`], sorted: what the rule window keeps of
    /// an older sample. The collector fills it in the newest too, where the rules
    /// read it every evaluation; a sample made without it has it from `pods`.
    #[serde(skip)]
    pub counters: PackedCounters,
}

/// A cgroup path as the rule window keeps it: a 64-bit hash tells a node's thousands
/// of cgroups apart in 8 bytes, where paths took a hundred each in every sample.
/// Keys only need to agree within one process, so a fixed seed does. SipHash here
/// was about 1% of the agent's CPU at 500 pods (the rules hash every path each time).
pub fn path_key(path: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one(path)
}

impl Sample for CgroupSample {
    const COLLECTOR: &'static str = "cgroup";
    /// Rules read rises of `cpu.stat` counters across the window.
    const THINNABLE: bool = true;

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Each cgroup's counters: the throttling over the window (the rules, the API,
    /// the report) looks older samples up by path and reads their `cpu.stat`
    /// figures; names, limits and ids come from the newest sample.
    fn compact(&self) -> Compacted<Self> {
        Compacted::Part(CgroupSample {
            mount_point: String::new(),
            kubepods: None,
            kernel_release: None,
            pods: Vec::new(),
            unavailable: Vec::new(),
            counters: self.counters().into_owned(),
            ..*self
        })
    }
}

impl CgroupSample {
    /// Every cgroup's counters by [`path_key`], sorted: as kept in an older sample,
    /// or from `pods` in the newest.
    pub fn counters(&self) -> Cow<'_, PackedCounters> {
        if !self.counters.is_empty() || self.pods.is_empty() {
            return Cow::Borrowed(&self.counters);
        }
        Cow::Owned(self.pack_counters(&Arc::from([])))
    }

    /// The counters of `pods`, packed, sharing `previous` keys if they are the same.
    pub fn pack_counters(&self, previous: &Arc<[u64]>) -> PackedCounters {
        let mut all: Vec<Counters> = self
            .cgroups()
            .map(|c| (path_key(&c.path), c.stat))
            .collect();
        all.sort_unstable_by_key(|(k, _)| *k);
        PackedCounters::pack(&all, previous)
    }

    /// Every pod's cgroup and its containers'.
    pub fn cgroups(&self) -> impl Iterator<Item = &CpuCgroup> {
        self.pods
            .iter()
            .flat_map(|p| std::iter::once(&p.cgroup).chain(p.containers.iter().map(|c| &c.cgroup)))
    }

    pub fn containers(&self) -> impl Iterator<Item = (&PodCpu, &ContainerCpu)> {
        self.pods
            .iter()
            .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
    }
}

pub struct CgroupCollector {
    root: HostRoot,
    /// `--path.cgroup`: the host's /sys/fs/cgroup as seen from here.
    cgroup_root: Option<PathBuf>,
    remembered: Remembered,
    pod_logs: PodLogsMemo,
    mounts: MountsMemo,
    located: Option<Located>,
    /// The last round's cgroup keys, for the next round's sample to share.
    keys: Arc<[u64]>,
    /// The last round's pods: the next round's list is made that size at once.
    last_pods: usize,
    /// Whether listings are watched with inotify where they can be (tests turn it
    /// off to check the link counts on cgroupfs).
    watch_listings: bool,
}

impl CgroupCollector {
    pub fn new(root: HostRoot, cgroup_root: Option<PathBuf>) -> Self {
        Self {
            root,
            cgroup_root,
            remembered: Remembered::default(),
            pod_logs: PodLogsMemo::default(),
            mounts: MountsMemo::default(),
            located: None,
            keys: Arc::from([]),
            last_pods: 0,
            watch_listings: true,
        }
    }

    /// Reads the mount table through `mounts`, shared with the other collectors.
    pub fn sharing_mounts(self, mounts: MountsMemo) -> Self {
        Self { mounts, ..self }
    }
}

/// Where a host mount point can be read from here (rule in the module docs), or the
/// candidates tried.
pub fn resolve_mount(
    root: &HostRoot,
    cgroup_root: Option<&Path>,
    mount_point: &str,
) -> Result<PathBuf, Vec<PathBuf>> {
    let mut candidates = Vec::new();
    if let Some(dir) = cgroup_root {
        if let Some(rest) = strip_dir(mount_point, HOST_CGROUP_ROOT) {
            candidates.push(dir.join(rest));
        }
    }
    candidates.push(root.host_path(mount_point));
    if let Some(rest) = strip_dir(mount_point, "/sys") {
        candidates.push(root.sys(&[rest]));
    }
    match candidates.iter().find(|p| p.is_dir()) {
        Some(p) => Ok(p.clone()),
        None => Err(candidates),
    }
}

/// `rest` of `dir/rest` (or "" for `dir` itself), on path component boundaries.
fn strip_dir<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

fn unresolved(what: &str, mount_point: &str, tried: &[PathBuf]) -> Unavailable {
    Unavailable::new(
        what,
        format!(
            "the host mounts it at {mount_point}, but none of {} is a directory: mount the \
             host's /sys/fs/cgroup and point --path.cgroup at it",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// Where the cpu hierarchy was found in a mount table, and what was missing beside
/// it. Found again when the table is read again ([`MountsMemo`]: when it changed).
struct Located {
    mounts: Arc<Vec<Mount>>,
    dirs: Dirs,
    mount_point: String,
    notes: Vec<Unavailable>,
}

/// The directories to read one cgroup's files from.
#[derive(Debug, Clone)]
struct Dirs {
    cpu: PathBuf,
    /// v1 only: the cpuacct hierarchy, for `cpuacct.usage`.
    cpuacct: Option<PathBuf>,
    version: CgroupVersion,
}

/// How long a cgroup's limit is taken as last read when its directory is not watched
/// for writes. Limits change only when a pod is resized, while the counters beside
/// them are read every round: at 500 pods on cgroup v1, reading both quota files of
/// every cgroup every round was a third of the collector's CPU.
const LIMIT_REREAD: Duration = Duration::from_secs(60);

/// At most this many files (counters, limits, listings) are held open, and at most
/// a quarter of the open-file limit: the rest of the agent (connections, other
/// collectors) keeps the remainder. Past it, files are read by path, as they are
/// outside cgroupfs.
const MAX_KEPT_FILES: u64 = 16_384;

/// A cgroup's limit as last read, and its counters at the last round.
#[derive(Debug, Clone, Copy)]
struct KnownLimit {
    quota: Option<CpuQuota>,
    counters: CpuStat,
    read_at: Instant,
}

/// What rounds keep about one cgroup.
#[derive(Debug, Default)]
struct Known {
    /// The last round that read it: one that was not read is forgotten after the
    /// round (its files closed).
    round: u64,
    limit: Option<KnownLimit>,
    /// Its counter files, held open.
    files: Option<CounterFiles>,
    /// Its limit files, held open.
    limit_files: Option<LimitFiles>,
    /// Its directory, watched for writes (a limit set) since its limit was read.
    limit_watch: Option<Watched>,
}

/// A child cgroup as its parent's listing gives it: its path in the hierarchy and
/// what the path says of its pod. Built when the parent is listed, which on
/// cgroupfs is when its children change: formatting and parsing every path every
/// round was a sixth of the collector's user time at 500 pods.
#[derive(Debug)]
struct Child {
    path: Name,
    parsed: Option<CgroupRef>,
}

fn children_of(parent: &str, names: &[String]) -> Arc<[Child]> {
    names
        .iter()
        .map(|name| {
            let path = format!("{parent}/{name}");
            Child {
                parsed: parse_cgroup_path(&path),
                path: path.into(),
            }
        })
        .collect()
}

/// A directory listed and held open, with its children.
#[derive(Debug)]
struct Listing {
    round: u64,
    held: HeldListing,
    children: Arc<[Child]>,
}

/// What rounds keep: the cgroups read and the directories listed, by path, in the
/// hierarchy they were read from. Each entry carries the last round that used it,
/// so one lookup finds it and updates it in place.
#[derive(Debug, Default)]
struct Remembered {
    cpu_dir: PathBuf,
    round: u64,
    /// Keyed by the path its listing and samples share.
    by_path: HashMap<Name, Known>,
    listings: HashMap<String, Listing>,
    /// Watches the listings' directories, on cgroupfs while inotify has an instance
    /// to spare (else their link counts tell).
    watch: Option<DirWatch>,
    /// Watches the directories of the cgroups read for writes, likewise (else their
    /// limits are read again once a minute).
    limit_watch: Option<DirWatch>,
}

/// Reads cgroups for one round: their counters through files kept open since an
/// earlier round where it can, their limits when not known from one.
struct Reader {
    kept: Remembered,
    round: Round,
}

/// One round's settings and its count of files held.
struct Round {
    number: u64,
    dirs: Dirs,
    kept_files: u64,
    max_kept_files: u64,
    /// Whether limit files are held too (see [`Reader::new`]).
    hold_limits: bool,
    now: Instant,
    /// The watched listings changed since the last round.
    changes: Changes,
    /// The watched cgroups written since the last round.
    written: Changes,
}

fn is_cgroupfs(dir: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    statfs(dir)
        .is_ok_and(|s| [CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC].contains(&s.filesystem_type()))
}

impl Reader {
    fn new(dirs: Dirs, mut kept: Remembered, watch_listings: bool) -> Self {
        if kept.cpu_dir != dirs.cpu {
            kept = Remembered {
                cpu_dir: dirs.cpu.clone(),
                ..Remembered::default()
            };
        }
        let fd_limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        // Only cgroupfs regenerates a file in place: a copy of a tree on another file
        // system (a fixture, a snapshot) may have its files replaced, which a held
        // descriptor would not see.
        let cgroupfs = std::iter::once(&dirs.cpu)
            .chain(&dirs.cpuacct)
            .all(|d| is_cgroupfs(d));
        let max_kept_files = if cgroupfs {
            (fd_limit / 4).min(MAX_KEPT_FILES)
        } else {
            0
        };
        if watch_listings && max_kept_files > 0 && kept.watch.is_none() {
            kept.watch = DirWatch::new().ok();
        }
        let changes = kept.watch.as_ref().map_or(Changes::All, DirWatch::changes);
        if max_kept_files > 0 && kept.limit_watch.is_none() {
            kept.limit_watch = DirWatch::files().ok();
        }
        let written = kept
            .limit_watch
            .as_ref()
            .map_or(Changes::All, DirWatch::changes);
        let hold_limits = holds_limits(
            dirs.version,
            kept.by_path.len(),
            kept.listings.len(),
            max_kept_files,
        );
        kept.round += 1;
        Self {
            round: Round {
                number: kept.round,
                dirs,
                kept_files: 0,
                max_kept_files,
                hold_limits,
                now: Instant::now(),
                changes,
                written,
            },
            kept,
        }
    }

    /// What the next round starts from: what this one read (the files of cgroups
    /// gone are closed here).
    fn into_remembered(mut self) -> Remembered {
        let round = self.round.number;
        self.kept.by_path.retain(|_, k| k.round == round);
        self.kept.listings.retain(|_, l| l.round == round);
        self.kept
    }

    /// The child cgroups of `path`: on cgroupfs, listed again only when their number
    /// changed or one of them was found gone.
    fn children(&mut self, path: &str) -> Arc<[Child]> {
        let r = &mut self.round;
        if let Some(l) = self.kept.listings.get_mut(path) {
            if l.held.unchanged(&r.changes) {
                l.round = r.number;
                r.kept_files += l.held.descriptors();
                return l.children.clone();
            }
        }
        // Dropped before the directory is watched again: the kernel gives the same
        // directory the same watch, which the old listing's drop would remove.
        self.kept.listings.remove(path);
        let dir = cgroup::cgroup_dir(&r.dirs.cpu, path);
        let held = (r.kept_files < r.max_kept_files)
            .then(|| HeldListing::read(&dir, self.kept.watch.as_ref()).ok())
            .flatten();
        let Some((held, names)) = held else {
            return children_of(path, &cgroup::child_cgroups(&dir));
        };
        r.kept_files += held.descriptors();
        let children = children_of(path, &names);
        let listing = Listing {
            round: r.number,
            held,
            children: children.clone(),
        };
        self.kept.listings.insert(path.to_string(), listing);
        children
    }

    fn read(&mut self, path: &Name) -> Result<CpuCgroup, crate::kernel::ReadError> {
        let read = match self.kept.by_path.get_mut(&**path) {
            Some(known) => self.round.read(path, known, self.kept.limit_watch.as_ref()),
            None => {
                let mut known = Known::default();
                let read = self
                    .round
                    .read(path, &mut known, self.kept.limit_watch.as_ref());
                if read.is_ok() {
                    self.kept.by_path.insert(path.clone(), known);
                }
                read
            }
        };
        if read.as_ref().is_err_and(|e| e.is_not_found()) {
            // Removed since its parent was listed, perhaps with another made in its
            // place: the parent is listed again next round.
            if let Some((parent, _)) = path.rsplit_once('/') {
                self.kept.listings.remove(parent);
            }
        }
        read
    }
}

impl Round {
    /// Reads one cgroup, updating what is kept of it; on success it is marked read
    /// in this round. `limit_watch` watches its directory for writes, when there is
    /// an instance.
    fn read(
        &mut self,
        path: &Name,
        known: &mut Known,
        limit_watch: Option<&DirWatch>,
    ) -> Result<CpuCgroup, crate::kernel::ReadError> {
        let d = &self.dirs;
        // Paths are built only to open or read by path: most rounds read held files.
        let dir = || cgroup::cgroup_dir(&d.cpu, path);
        let acct = || d.cpuacct.as_ref().map(|a| cgroup::cgroup_dir(a, path));
        if !self.hold_limits {
            known.limit_files = None;
        }
        let room = self.kept_files < self.max_kept_files;
        let open = || CounterFiles::open(&dir(), acct().as_deref());
        // Whether the limit last read still holds: no write in its directory since,
        // or, unwatched, read less than a minute ago.
        let current = match (&known.limit, &known.limit_watch) {
            (Some(_), Some(w)) => !self.written.touched(w),
            (Some(k), None) => self.now.duration_since(k.read_at) < LIMIT_REREAD,
            (None, _) => false,
        };
        // v1's cpu.stat counts only while a limit is set (the limit's own timer counts
        // periods): a cgroup last read without one has its usage read each round and
        // its cpu.stat with its limit. On a node, every pod's sandbox and every
        // container without a limit is such a cgroup. Where the usage does not read,
        // the whole read below says why (or that the cgroup is gone).
        let usage_alone = known
            .limit
            .filter(|k| current && d.cpuacct.is_some() && k.quota.is_none())
            .and_then(|k| {
                let usage = read_held(&mut known.files, room, open, CounterFiles::read_usage)
                    .flatten()
                    .or_else(|| cgroup::read_v1_usage(acct().as_deref()).ok()?)?;
                Some(CpuStat {
                    usage_ns: Some(usage),
                    ..k.counters
                })
            });
        let stat = match usage_alone {
            Some(stat) => stat,
            None => match (
                read_held(&mut known.files, room, open, CounterFiles::read),
                d.version,
            ) {
                (Some(stat), _) => stat,
                (None, CgroupVersion::V1) => cgroup::read_v1_counters(&dir(), acct().as_deref())?,
                (None, CgroupVersion::V2) => cgroup::read_v2_counters(&dir())?,
            },
        };
        self.kept_files += known.files.as_ref().map_or(0, |f| f.descriptors() as u64);
        // Periods only count while a limit is set: a cgroup without one whose
        // periods move has been given one since.
        let fresh = known
            .limit
            .filter(|k| current && (k.quota.is_some() || k.counters.nr_periods == stat.nr_periods));
        let limit = match fresh {
            Some(k) => KnownLimit {
                counters: stat,
                ..k
            },
            None => {
                // Watched before the limit is read, so a write in between is seen next
                // round; the old watch dropped first, as the kernel gives the same
                // directory the same watch. A watched limit is read when written
                // only: its files are not worth holding.
                known.limit_watch = None;
                known.limit_watch = limit_watch.and_then(|w| w.watch(&dir()).ok());
                if known.limit_watch.is_some() {
                    known.limit_files = None;
                }
                let room = self.hold_limits
                    && known.limit_watch.is_none()
                    && self.kept_files < self.max_kept_files;
                let open = || match d.version {
                    CgroupVersion::V1 => LimitFiles::open_v1(&dir()),
                    CgroupVersion::V2 => LimitFiles::open_v2(&dir()),
                };
                let held = read_held(&mut known.limit_files, room, open, LimitFiles::read);
                let quota = match (held, d.version) {
                    (Some(quota), _) => quota,
                    (None, CgroupVersion::V1) => cgroup::read_v1_quota(&dir())?,
                    (None, CgroupVersion::V2) => cgroup::read_v2_quota(&dir())?,
                };
                KnownLimit {
                    quota,
                    counters: stat,
                    read_at: self.now,
                }
            }
        };
        self.kept_files += known
            .limit_files
            .as_ref()
            .map_or(0, |f| f.descriptors() as u64);
        known.limit = Some(limit);
        known.round = self.number;
        Ok(CpuCgroup {
            path: path.clone(),
            quota: limit.quota,
            stat,
        })
    }
}

/// Whether a round holds limit files open as well as counters, for the cgroups whose
/// directories are not watched for writes (a watched limit is read when written
/// only, by path). Counters are read every round, unwatched limits once a minute:
/// limit files are held only while the last round's cgroups fit the budget with
/// both (and their listings), so a node near it spends its descriptors on the
/// counters. At 1000 pods under a 5,000 budget, holding limits first left 1,000
/// cgroups' counters read by path every round (cgroup 51 -> 86 ms a round).
fn holds_limits(
    version: CgroupVersion,
    cgroups: usize,
    listings: usize,
    max_kept_files: u64,
) -> bool {
    let per_cgroup = match version {
        CgroupVersion::V1 => 4,
        CgroupVersion::V2 => 2,
    };
    let needed = cgroups as u64 * per_cgroup + listings as u64;
    cgroups > 0 && needed <= max_kept_files
}

impl Collector for CgroupCollector {
    type Sample = CgroupSample;

    fn collect(&mut self) -> Result<CgroupSample, CollectError> {
        let mounts = read_mounts(&self.mounts, &self.root)?;
        let located = match self.located.take() {
            Some(l) if Arc::ptr_eq(&l.mounts, &mounts) => l,
            _ => self.find_hierarchy(mounts)?,
        };
        let mut unavailable = located.notes.clone();
        let dirs = located.dirs.clone();
        let mount_point = located.mount_point.clone();
        self.located = Some(located);
        let kernel_release = release::read(&self.root);
        let version = dirs.version;
        let kubepods = cgroup::find_kubepods(&dirs.cpu);
        if kubepods.is_none() {
            // Perhaps the hierarchy moved: the next round looks for it again.
            self.located = None;
        }
        let mut pods = Vec::with_capacity(self.last_pods);
        match &kubepods {
            Some(top) => {
                let (index, missing) = PodIndex::read_with(&self.root, &mut self.pod_logs);
                unavailable.extend(missing);
                let mut reader = Reader::new(
                    dirs,
                    std::mem::take(&mut self.remembered),
                    self.watch_listings,
                );
                walk(&mut reader, &index, top, 0, &mut pods, &mut unavailable);
                self.remembered = reader.into_remembered();
            }
            None => unavailable.push(Unavailable::new(
                "kubelet cgroups",
                format!(
                    "no kubepods or kubepods.slice cgroup in {}: not a Kubernetes node, or the \
                     kubelet's --cgroup-root is deeper than one level",
                    dirs.cpu.display()
                ),
            )),
        }
        let mut sample = CgroupSample {
            version,
            mount_point,
            kubepods,
            kernel_release,
            cfs_bandwidth_fix: None,
            pods,
            unavailable,
            counters: PackedCounters::default(),
        };
        self.last_pods = sample.pods.len();
        sample.counters = sample.pack_counters(&self.keys);
        self.keys = sample.counters.keys().clone();
        Ok(sample)
    }
}

impl CgroupCollector {
    /// Where the cpu hierarchy is, from the host's mount table.
    fn find_hierarchy(&self, mounts: Arc<Vec<Mount>>) -> Result<Located, CollectError> {
        let mut notes = Vec::new();
        let hierarchy = cgroup::cpu_hierarchy(&mounts).ok_or_else(|| {
            CollectError::Unavailable(Unavailable::new(
                "cgroup cpu controller",
                "the host mount table has no cgroup v1 cpu mount and no cgroup2 mount",
            ))
        })?;
        let (dirs, mount_point) = self.locate(&hierarchy, &mut notes)?;
        Ok(Located {
            mounts,
            dirs,
            mount_point,
            notes,
        })
    }

    fn locate(
        &self,
        hierarchy: &CpuHierarchy,
        unavailable: &mut Vec<Unavailable>,
    ) -> Result<(Dirs, String), CollectError> {
        let resolve =
            |m: &Mount| resolve_mount(&self.root, self.cgroup_root.as_deref(), &m.mount_point);
        match hierarchy {
            CpuHierarchy::V1 { cpu, cpuacct } => {
                let cpu_dir = resolve(cpu).map_err(|tried| {
                    CollectError::Unavailable(unresolved(
                        "cgroup v1 cpu hierarchy",
                        &cpu.mount_point,
                        &tried,
                    ))
                })?;
                let acct_dir = match cpuacct {
                    Some(m) if m.mount_point == cpu.mount_point => Some(cpu_dir.clone()),
                    Some(m) => match resolve(m) {
                        Ok(d) => Some(d),
                        Err(tried) => {
                            unavailable.push(unresolved(
                                "cgroup v1 cpuacct hierarchy (CPU usage)",
                                &m.mount_point,
                                &tried,
                            ));
                            None
                        }
                    },
                    None => {
                        unavailable.push(Unavailable::new(
                            "cgroup v1 cpuacct hierarchy (CPU usage)",
                            "the cpuacct controller is not mounted: usage against the quota is unknown",
                        ));
                        None
                    }
                };
                Ok((
                    Dirs {
                        cpu: cpu_dir,
                        cpuacct: acct_dir,
                        version: CgroupVersion::V1,
                    },
                    cpu.mount_point.clone(),
                ))
            }
            CpuHierarchy::V2 { unified } => {
                let dir = resolve(unified).map_err(|tried| {
                    CollectError::Unavailable(unresolved(
                        "cgroup v2 hierarchy",
                        &unified.mount_point,
                        &tried,
                    ))
                })?;
                let controllers = cgroup::v2_controllers(&dir)?;
                if !controllers.iter().any(|c| c == "cpu") {
                    return Err(CollectError::Unavailable(Unavailable::new(
                        "cgroup cpu controller",
                        format!(
                            "cgroup2 at {} offers [{}] but not cpu, and no cgroup v1 cpu \
                             hierarchy is mounted: CPU limits are not enforced on this host",
                            unified.mount_point,
                            controllers.join(" ")
                        ),
                    )));
                }
                Ok((
                    Dirs {
                        cpu: dir,
                        cpuacct: None,
                        version: CgroupVersion::V2,
                    },
                    unified.mount_point.clone(),
                ))
            }
        }
    }
}

/// The host's mount table; without one there is nothing to find cgroups in.
fn read_mounts(memo: &MountsMemo, root: &HostRoot) -> Result<Arc<Vec<Mount>>, CollectError> {
    memo.read(root).map_err(|e| {
        if e.is_not_found() {
            // No mount table at all: this procfs is not a live one (a partial copy).
            CollectError::Unavailable(Unavailable::new(
                "cgroup mount table",
                format!(
                    "{}: no such file: --path.procfs must be the host's /proc to find cgroups",
                    e.path.display()
                ),
            ))
        } else {
            CollectError::Read(e)
        }
    })
}

/// Walks below kubepods: QoS class cgroups, then pods, then their containers.
fn walk(
    reader: &mut Reader,
    index: &PodIndex,
    path: &str,
    depth: usize,
    pods: &mut Vec<PodCpu>,
    unavailable: &mut Vec<Unavailable>,
) {
    for child in reader.children(path).iter() {
        match &child.parsed {
            Some(r) if r.container_id.is_none() => {
                if let Some(pod) = read_pod(reader, index, &child.path, r, unavailable) {
                    pods.push(pod);
                }
            }
            Some(_) => {}
            // kubepods/<qos> holds pods; nothing deeper than that is a pod.
            None if depth == 0 => walk(reader, index, &child.path, depth + 1, pods, unavailable),
            None => {}
        }
    }
}

fn read_pod(
    reader: &mut Reader,
    index: &PodIndex,
    path: &Name,
    pod: &CgroupRef,
    unavailable: &mut Vec<Unavailable>,
) -> Option<PodCpu> {
    // A pod-level cgroup: its names are its pod's alone.
    let names = index.pod(&pod.pod_uid);
    let cgroup = read_or_note(reader, path, unavailable)?;
    let children = reader.children(path);
    let mut containers = Vec::with_capacity(children.len());
    for child in children.iter() {
        let Some((r, id)) = child
            .parsed
            .as_ref()
            .and_then(|r| Some((r, r.container_id.as_ref()?)))
        else {
            continue;
        };
        let Some(cg) = read_or_note(reader, &child.path, unavailable) else {
            continue;
        };
        containers.push(ContainerCpu {
            runtime: r.runtime,
            container_id: id.clone(),
            container: index.container(id),
            cgroup: cg,
        });
    }
    Some(PodCpu {
        pod_uid: pod.pod_uid.clone(),
        qos: pod.qos,
        namespace: names.map(|n| n.namespace.clone()),
        pod: names.map(|n| n.pod.clone()),
        cgroup,
        containers,
    })
}

/// A cgroup removed while walking (a container exiting) is simply gone; any other
/// read problem is reported against its path.
fn read_or_note(
    reader: &mut Reader,
    path: &Name,
    unavailable: &mut Vec<Unavailable>,
) -> Option<CpuCgroup> {
    match reader.read(path) {
        Ok(c) => Some(c),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            unavailable.push(Unavailable::new(
                format!("cgroup {path}"),
                format!("{e}: left out of this sample"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(base: &Path) -> HostRoot {
        HostRoot {
            proc: base.join("proc"),
            sys: base.join("sys"),
            rootfs: base.join("rootfs"),
        }
    }

    #[test]
    fn limit_files_are_held_only_while_counters_and_limits_fit_the_budget() {
        use CgroupVersion::{V1, V2};
        // 1000 pods on v1: 1,000 cgroups with 4 files each, 500 listings.
        assert!(holds_limits(V1, 1000, 500, 5000));
        assert!(!holds_limits(V1, 1000, 500, 4499), "counters come first");
        // v2 needs half the files per cgroup.
        assert!(holds_limits(V2, 1000, 500, 2500));
        assert!(!holds_limits(V2, 1000, 500, 2499));
        // Before a first round nothing says what fits.
        assert!(!holds_limits(V1, 0, 0, 16_384));
        // No budget (not cgroupfs): nothing is held.
        assert!(!holds_limits(V1, 1, 0, 0));
    }

    #[test]
    fn mount_points_resolve_override_then_rootfs_then_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let r = root(t.path());
        let via_sys = t.path().join("sys/fs/cgroup/cpu");
        std::fs::create_dir_all(&via_sys).unwrap();
        assert_eq!(resolve_mount(&r, None, "/sys/fs/cgroup/cpu"), Ok(via_sys));
        let via_rootfs = t.path().join("rootfs/sys/fs/cgroup/cpu");
        std::fs::create_dir_all(&via_rootfs).unwrap();
        assert_eq!(
            resolve_mount(&r, None, "/sys/fs/cgroup/cpu"),
            Ok(via_rootfs)
        );
        let over = t.path().join("host-cgroup");
        std::fs::create_dir_all(over.join("cpu")).unwrap();
        assert_eq!(
            resolve_mount(&r, Some(&over), "/sys/fs/cgroup/cpu"),
            Ok(over.join("cpu"))
        );
        assert_eq!(
            resolve_mount(&r, Some(&over), "/sys/fs/cgroup"),
            Ok(over.join(""))
        );
        let tried = resolve_mount(&r, Some(&over), "/sys/fs/cgroupx").unwrap_err();
        assert_eq!(
            tried.len(),
            2,
            "no override for a look-alike prefix: {tried:?}"
        );
        assert_eq!(resolve_mount(&r, None, "/elsewhere").unwrap_err().len(), 1);
    }

    fn write(base: &Path, rel: &str, text: &str) {
        let p = base.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn a_malformed_cgroup_is_reported_and_the_rest_still_sampled() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        write(
            b,
            "proc/1/mountinfo",
            "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        write(b, "rootfs/sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
        let pod = "rootfs/sys/fs/cgroup/kubepods/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
        write(b, &format!("{pod}/cpu.stat"), "usage_usec 10\n");
        write(b, &format!("{pod}/cpu.max"), "200000 100000\n");
        let good = format!("{pod}/{}", "ab".repeat(32));
        write(
            b,
            &format!("{good}/cpu.stat"),
            "usage_usec 5\nnr_periods 3\n",
        );
        write(b, &format!("{good}/cpu.max"), "max 100000\n");
        let bad = format!("{pod}/{}", "cd".repeat(32));
        write(b, &format!("{bad}/cpu.stat"), "nr_periods\tmany\n");
        write(b, &format!("{bad}/cpu.max"), "max 100000\n");
        let mut c = CgroupCollector::new(root(b), None);
        let s = c.collect().expect("a sample");
        assert_eq!(s.version, CgroupVersion::V2);
        assert_eq!(s.cfs_bandwidth_fix, None, "no osrelease in this tree");
        assert_eq!(s.pods.len(), 1);
        assert_eq!(s.pods[0].qos, Qos::Guaranteed);
        assert_eq!(s.pods[0].cgroup.quota.unwrap().cores(), 2.0);
        let ids: Vec<_> = s.pods[0]
            .containers
            .iter()
            .map(|c| &*c.container_id)
            .collect();
        assert_eq!(ids, ["ab".repeat(32)]);
        assert_eq!(s.pods[0].containers[0].cgroup.stat.nr_periods, 3);
        let bad_note = s
            .unavailable
            .iter()
            .find(|u| u.what.ends_with(&"cd".repeat(32)))
            .unwrap_or_else(|| panic!("{:?}", s.unavailable));
        assert!(bad_note.hint.contains("nr_periods"), "{bad_note:?}");
    }

    #[test]
    fn v1_cgroups_without_a_limit_read_usage_each_round_and_cpu_stat_with_the_limit() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        write(
            b,
            "proc/1/mountinfo",
            "39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        );
        let pod = "rootfs/sys/fs/cgroup/cpu,cpuacct/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
        let sandbox = format!("{pod}/{}", "ab".repeat(32));
        let stat =
            |periods: u64| format!("nr_periods {periods}\nnr_throttled 2\nthrottled_time 9\n");
        for (dir, quota) in [(pod, "50000"), (&*sandbox, "-1")] {
            write(b, &format!("{dir}/cpu.cfs_quota_us"), quota);
            write(b, &format!("{dir}/cpu.cfs_period_us"), "100000\n");
            write(b, &format!("{dir}/cpu.stat"), &stat(7));
            write(b, &format!("{dir}/cpuacct.usage"), "1000\n");
        }
        let mut c = CgroupCollector::new(root(b), None);
        let counters = |s: &CgroupSample| {
            let p = &s.pods[0];
            (p.cgroup.stat, p.containers[0].cgroup.stat)
        };
        let first = c.collect().expect("a sample");
        let (pod_stat, sandbox_stat) = counters(&first);
        assert_eq!((pod_stat.nr_periods, sandbox_stat.nr_periods), (7, 7));
        assert_eq!(first.pods[0].containers[0].cgroup.quota, None);

        // The kernel does not move an unlimited cgroup's cpu.stat: an unreadable one
        // shows it is not read again within the minute, while usage still is.
        for dir in [pod, &*sandbox] {
            write(b, &format!("{dir}/cpu.stat"), "nr_periods\tmany\n");
            write(b, &format!("{dir}/cpuacct.usage"), "2000\n");
        }
        write(b, &format!("{pod}/cpu.stat"), &stat(8));
        let second = c.collect().expect("a sample");
        let sandbox_note = |s: &CgroupSample| {
            s.unavailable
                .iter()
                .find(|u| u.what.ends_with(&"ab".repeat(32)))
                .cloned()
        };
        assert_eq!(sandbox_note(&second), None);
        let (pod_stat, sandbox_stat) = counters(&second);
        assert_eq!(
            pod_stat.nr_periods, 8,
            "a limited cgroup's cpu.stat every round"
        );
        assert_eq!(
            sandbox_stat,
            CpuStat {
                usage_ns: Some(2000),
                ..counters(&first).1
            }
        );

        // Once its limit is due to be read again, so is its cpu.stat.
        for k in c.remembered.by_path.values_mut() {
            if let Some(limit) = &mut k.limit {
                limit.read_at -= LIMIT_REREAD;
            }
        }
        let third = c.collect().expect("a sample");
        let bad = sandbox_note(&third).unwrap_or_else(|| panic!("{:?}", third.unavailable));
        assert!(bad.hint.contains("nr_periods"), "{bad:?}");
    }

    /// Made under the host's cgroup v1 cpu (and cpuacct) hierarchies, removed on drop.
    struct MadeCgroups(Vec<PathBuf>);

    impl MadeCgroups {
        fn make(&mut self, dir: PathBuf) {
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            self.0.push(dir);
        }
        fn remove(&mut self, dir: &Path) {
            std::fs::remove_dir(dir).unwrap();
            self.0.retain(|d| d != dir);
        }
    }

    impl Drop for MadeCgroups {
        fn drop(&mut self) {
            for d in self.0.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }

    // Listings are kept between rounds on cgroupfs only, so this needs the kernel's.
    // One after the other: each makes the shared kubepods parents.
    #[test]
    fn containers_and_limits_changed_on_cgroupfs_are_seen_next_round() {
        containers_changing_on_cgroupfs(true);
        containers_changing_on_cgroupfs(false);
        limits_written_on_cgroupfs();
    }

    /// A pod cgroup made under the host's v1 cpu (and cpuacct) hierarchies, with the
    /// kubepods parents it needs, removed on drop.
    struct PodOnCgroupfs {
        /// The hierarchies' mount points, cpu first.
        roots: Vec<PathBuf>,
        uid: String,
        /// Relative to each root.
        pod: String,
        made: MadeCgroups,
    }

    impl PodOnCgroupfs {
        /// None, after saying so, where the host has no v1 cpu hierarchy (a failure
        /// under CI, whose machines have one). `uid_tail` keeps each test's pod apart.
        fn make(uid_tail: &str) -> Option<Self> {
            let mounts =
                crate::kernel::mountinfo::read_host(&HostRoot::default()).unwrap_or_default();
            let Some(CpuHierarchy::V1 { cpu, cpuacct }) = cgroup::cpu_hierarchy(&mounts) else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI machines have cgroup v1 cpu"
                );
                eprintln!("skipped: no cgroup v1 cpu hierarchy");
                return None;
            };
            let roots: Vec<PathBuf> = std::iter::once(&cpu)
                .chain(cpuacct.iter().filter(|a| a.mount_point != cpu.mount_point))
                .map(|m| PathBuf::from(&m.mount_point))
                .collect();
            let uid = format!(
                "0c9d{:04x}-1e2f-4a3b-8c4d-5e6f7a8b9{uid_tail}",
                std::process::id() & 0xffff
            );
            let pod = format!("kubepods/burstable/pod{uid}");
            let mut made = MadeCgroups(Vec::new());
            for r in &roots {
                for d in ["kubepods", "kubepods/burstable"] {
                    if !r.join(d).is_dir() {
                        made.make(r.join(d));
                    }
                }
                made.make(r.join(&pod));
            }
            Some(Self {
                roots,
                uid,
                pod,
                made,
            })
        }

        /// A collector of the host's cgroups, with a rootfs of its own (no pod logs).
        fn collector(rootfs: &Path) -> CgroupCollector {
            let root = HostRoot {
                rootfs: rootfs.to_path_buf(),
                ..HostRoot::default()
            };
            CgroupCollector::new(root, None)
        }
    }

    fn containers_changing_on_cgroupfs(watched: bool) {
        let Some(PodOnCgroupfs {
            roots,
            uid,
            pod,
            mut made,
        }) = PodOnCgroupfs::make(&format!("c0{}", u8::from(watched)))
        else {
            return;
        };
        let id = |c: char| c.to_string().repeat(64);
        let add = |made: &mut MadeCgroups, c| {
            roots
                .iter()
                .for_each(|r| made.make(r.join(&pod).join(id(c))))
        };
        let remove = |made: &mut MadeCgroups, c| {
            roots
                .iter()
                .for_each(|r| made.remove(&r.join(&pod).join(id(c))))
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut collector = PodOnCgroupfs::collector(tmp.path());
        collector.watch_listings = watched;
        let mut containers = || {
            let s = collector.collect().unwrap();
            let p = s.pods.iter().find(|p| *p.pod_uid == uid).expect("the pod");
            p.containers
                .iter()
                .map(|c| c.container_id.to_string())
                .collect::<Vec<_>>()
        };
        add(&mut made, 'a');
        assert_eq!(containers(), [id('a')]);
        add(&mut made, 'b');
        assert_eq!(containers(), [id('a'), id('b')], "added");
        remove(&mut made, 'a');
        assert_eq!(containers(), [id('b')], "removed");
        // As many cgroups as before, so the link count is as it was: a watch saw
        // both; unwatched, the one gone, read, says the listing is old.
        add(&mut made, 'c');
        remove(&mut made, 'b');
        let first = containers();
        if watched {
            assert_eq!(first, [id('c')], "replaced, seen at once");
        } else {
            assert!(first.is_empty() || first == [id('c')], "{first:?}");
        }
        assert_eq!(containers(), [id('c')], "replaced");
    }

    // A limit is set by writing its file, which the watch on the cgroup's directory
    // reports: read again the next round, not a minute later. The watch is taken on
    // cgroupfs only.
    fn limits_written_on_cgroupfs() {
        let Some(mut host) = PodOnCgroupfs::make("c1f") else {
            return;
        };
        let container = format!("{}/{}", host.pod, "e".repeat(64));
        for r in &host.roots {
            host.made.make(r.join(&container));
        }
        let (uid, pod) = (&host.uid, &host.pod);
        let tmp = tempfile::tempdir().unwrap();
        let mut collector = PodOnCgroupfs::collector(tmp.path());
        let mut limits = || {
            let s = collector.collect().unwrap();
            let p = s
                .pods
                .iter()
                .find(|p| *p.pod_uid == **uid)
                .expect("the pod");
            let cores = |c: &CpuCgroup| c.quota.map(|q| q.cores());
            (
                cores(&p.cgroup),
                p.containers
                    .iter()
                    .map(|c| cores(&c.cgroup))
                    .collect::<Vec<_>>(),
            )
        };
        let quota = |dir: &str, us: &str| {
            std::fs::write(host.roots[0].join(dir).join("cpu.cfs_quota_us"), us).unwrap()
        };
        assert_eq!(limits(), (None, vec![None]));
        quota(&container, "20000");
        assert_eq!(limits(), (None, vec![Some(0.2)]), "a first limit");
        quota(pod, "50000");
        quota(&container, "30000");
        assert_eq!(limits(), (Some(0.5), vec![Some(0.3)]), "limits changed");
        assert_eq!(limits(), (Some(0.5), vec![Some(0.3)]), "and kept");
        quota(&container, "-1");
        assert_eq!(limits(), (Some(0.5), vec![None]), "a limit lifted");
    }

    #[test]
    fn v2_without_the_cpu_controller_is_unavailable() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        write(
            b,
            "proc/1/mountinfo",
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        write(b, "rootfs/sys/fs/cgroup/unified/cgroup.controllers", "\n");
        let err = CgroupCollector::new(root(b), None).collect().unwrap_err();
        let CollectError::Unavailable(u) = err else {
            panic!("{err:?}");
        };
        assert!(u.hint.contains("not cpu"), "{u:?}");
    }
}
