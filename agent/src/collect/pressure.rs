//! Node-level resource pressure from procfs: memory, PSI, PIDs, file handles,
//! inotify, the neighbour tables, the forwarding sysctls and OOM kills.

use super::Collector;
use crate::host::HostRoot;
use crate::kernel::held_files::HeldFiles;
use crate::kernel::inotify::{InotifyCount, InotifyUsage};
use crate::kernel::limits::{self, FileNr};
use crate::kernel::meminfo::{self, KubeletAvailable};
use crate::kernel::neigh::{self, NeighStats};
use crate::kernel::psi::{self, Psi};
use crate::kernel::{vmstat, ReadError};
use crate::sample::{CollectError, Compacted, Sample, Unavailable};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySignal {
    pub total_bytes: u64,
    /// MemAvailable; None before Linux 3.14.
    pub available_bytes: Option<u64>,
    /// What the kubelet compares its memory.available eviction threshold with.
    pub kubelet_available: Option<KubeletAvailable>,
}

impl MemorySignal {
    pub fn available_ratio(&self) -> Option<f64> {
        let a = self.available_bytes?;
        (self.total_bytes > 0).then(|| a as f64 / self.total_bytes as f64)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PsiSignals {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

impl PsiSignals {
    pub fn resources(&self) -> [(&'static str, Option<&Psi>); 3] {
        [
            ("cpu", self.cpu.as_ref()),
            ("memory", self.memory.as_ref()),
            ("io", self.io.as_ref()),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskSignal {
    /// Tasks (threads) on the node; each holds a PID.
    pub tasks: u64,
    pub pid_max: u64,
    /// None on kernels or sandboxes that do not expose it.
    pub threads_max: Option<u64>,
}

impl TaskSignal {
    pub fn pid_ratio(&self) -> Option<f64> {
        (self.pid_max > 0).then(|| self.tasks as f64 / self.pid_max as f64)
    }
    pub fn threads_ratio(&self) -> Option<f64> {
        let m = self.threads_max.filter(|m| *m > 0)?;
        Some(self.tasks as f64 / m as f64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InotifySignal {
    pub max_user_instances: u64,
    pub max_user_watches: Option<u64>,
    #[serde(flatten)]
    pub usage: InotifyUsage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NeighTable {
    /// ipv4 (ARP) or ipv6 (NDP).
    pub family: &'static str,
    pub entries: u64,
    pub table_fulls: Option<u64>,
    /// net.ipv{4,6}.neigh.default.gc_thresh3: the hard limit on entries.
    pub gc_thresh3: Option<u64>,
}

impl NeighTable {
    pub fn usage_ratio(&self) -> Option<f64> {
        let m = self.gc_thresh3.filter(|m| *m > 0)?;
        Some(self.entries as f64 / m as f64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Forwarding {
    pub ipv4_forward: Option<u64>,
    /// None when br_netfilter is not loaded (the sysctl does not exist then).
    pub bridge_nf_call_iptables: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PressureSample {
    pub memory: MemorySignal,
    pub psi: PsiSignals,
    pub tasks: Option<TaskSignal>,
    pub files: Option<FileNr>,
    pub inotify: Option<InotifySignal>,
    pub neighbors: Vec<NeighTable>,
    pub forwarding: Forwarding,
    /// `oom_kill` of /proc/vmstat: every OOM kill since boot, cgroup limits included.
    pub oom_kills: Option<u64>,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for PressureSample {
    const COLLECTOR: &'static str = "pressure";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// All but the inotify holders: neighbor_table_overflow reads the tables'
    /// `table_fulls` and oom_kills the `oom_kill` counter over the window, the rest is
    /// small; inotify (per user, with the top processes) is judged on the newest only.
    fn compact(&self) -> Compacted<Self> {
        Compacted::Part(PressureSample {
            inotify: None,
            unavailable: Vec::new(),
            ..self.clone()
        })
    }
}

/// How often every process's descriptors are read for inotify instances, by
/// default. Reading them takes the link of every open file of every process (at 500
/// pods, about 16 ms after a pause, most of the collector's CPU), while instances
/// are mostly opened by a program as it starts and then held: the rounds between
/// read only the processes new in the last [`super::YOUNG_PROCESS`], and every
/// holder's watches. A user running out of instances stays out for longer than this.
pub const INOTIFY_INTERVAL: Duration = Duration::from_secs(300);

pub struct PressureCollector {
    root: HostRoot,
    inotify: InotifyRounds,
    /// The twenty files a round reads.
    held: HeldFiles,
}

impl PressureCollector {
    /// `interval`: the collector's own; `inotify_interval`: how often every
    /// process's descriptors are read, in whole rounds (at most every round).
    pub fn new(root: HostRoot, interval: Duration, inotify_interval: Duration) -> Self {
        Self {
            root,
            inotify: InotifyRounds {
                count: InotifyCount::new(rounds_within(super::YOUNG_PROCESS, interval)),
                full_every: rounds_within(inotify_interval, interval),
                rounds: None,
            },
            held: HeldFiles::default(),
        }
    }
}

/// When every process's descriptors are read for inotify instances.
struct InotifyRounds {
    count: InotifyCount,
    /// Every how many rounds every process is read.
    full_every: u32,
    /// The rounds since the last full read; None before one succeeded.
    rounds: Option<u32>,
}

impl InotifyRounds {
    /// Every process read every `full_every` rounds, and every round until a read
    /// succeeds; in the rounds between, the new processes and the holders' watches.
    fn usage(&mut self, root: &HostRoot) -> Result<InotifyUsage, ReadError> {
        let since = self.rounds.map_or(self.full_every, |r| r + 1);
        let full = since >= self.full_every;
        let entries = super::proc_listing::processes(root)?;
        let usage = self.count.count_listed(root, &entries, full);
        self.rounds = Some(if full { 0 } else { since });
        Ok(usage)
    }
}

/// How many rounds of `interval` make `period`, rounded up, and at least one. In
/// rounds, not time, so that at the default interval a minute is always the fourth
/// round, whatever the rounds' jitter.
fn rounds_within(period: Duration, interval: Duration) -> u32 {
    if interval.is_zero() {
        return 1;
    }
    let n = period.as_nanos().div_ceil(interval.as_nanos());
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

impl Collector for PressureCollector {
    type Sample = PressureSample;

    fn collect(&mut self) -> Result<PressureSample, CollectError> {
        let root = &self.root;
        let held = &mut self.held;
        let mut unavailable = Vec::new();
        let mem = meminfo::read_meminfo(root, held)?;
        let memory = MemorySignal {
            total_bytes: mem.total,
            available_bytes: mem.available,
            kubelet_available: noted(
                meminfo::kubelet_available(root, &mem, held),
                &mut unavailable,
            )
            .flatten(),
        };
        if mem.available.is_none() {
            unavailable.push(Unavailable::new(
                "MemAvailable",
                "/proc/meminfo has no MemAvailable (kernel before 3.14): memory_pressure uses PSI only",
            ));
        }
        let psi = read_psi(root, held, &mut unavailable);
        let tasks = read_tasks(root, held, &mut unavailable);
        let files = parsed(
            held,
            &root.proc(&["sys", "fs", "file-nr"]),
            limits::parse_file_nr,
            &mut unavailable,
        );
        let inotify = read_inotify(root, held, || self.inotify.usage(root), &mut unavailable);
        let neighbors = read_neighbors(root, held, &mut unavailable);
        let ip_forward = root.proc(&["sys", "net", "ipv4", "ip_forward"]);
        let forwarding = Forwarding {
            ipv4_forward: optional_u64(
                held,
                &ip_forward,
                Some((
                    "net.ipv4.ip_forward",
                    "missing: forwarding_disabled cannot be judged",
                )),
                &mut unavailable,
            ),
            // Missing until br_netfilter is loaded, which is fine: nothing bridged is
            // filtered then.
            bridge_nf_call_iptables: optional_u64(
                held,
                &root.proc(&["sys", "net", "bridge", "bridge-nf-call-iptables"]),
                None,
                &mut unavailable,
            ),
        };
        let oom_kills = read_oom_kills(root, held, &mut unavailable);
        Ok(PressureSample {
            memory,
            psi,
            tasks,
            files,
            inotify,
            neighbors,
            forwarding,
            oom_kills,
            unavailable,
        })
    }
}

/// A file that must parse; a missing or malformed one is reported, not fatal.
fn parsed<T>(
    held: &mut HeldFiles,
    path: &Path,
    parse: impl Fn(&str) -> Result<T, String>,
    unavailable: &mut Vec<Unavailable>,
) -> Option<T> {
    parsed_or_explain(held, path, parse, None, unavailable)
}

/// `parsed`, with what one errno means added to the hint when the read fails with it.
fn parsed_or_explain<T>(
    held: &mut HeldFiles,
    path: &Path,
    parse: impl Fn(&str) -> Result<T, String>,
    unreadable_means: Option<(i32, &str)>,
    unavailable: &mut Vec<Unavailable>,
) -> Option<T> {
    match held.read_string(path) {
        Ok(text) => match parse(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                let e = ReadError::invalid(path, format!("malformed: {e}"));
                unavailable.push(Unavailable::unreadable(&e));
                None
            }
        },
        Err(e) => {
            unavailable.push(match unreadable_means {
                Some((errno, means)) if e.source.raw_os_error() == Some(errno) => {
                    Unavailable::new(path.display().to_string(), format!("{}: {means}", e.source))
                }
                _ if e.is_not_found() => {
                    Unavailable::new(path.display().to_string(), e.source.to_string())
                }
                _ => Unavailable::unreadable(&e),
            });
            None
        }
    }
}

/// A value worth having that the host may rightly lack: absent then, with the hint
/// when there is one; a file that exists but does not read is named with its problem.
fn optional_u64(
    held: &mut HeldFiles,
    path: &Path,
    missing_means: Option<(&str, &str)>,
    unavailable: &mut Vec<Unavailable>,
) -> Option<u64> {
    match held.read_u64_if_present(path) {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            if let Some((what, means)) = missing_means {
                unavailable.push(Unavailable::new(what, means));
            }
            None
        }
        Err(e) => {
            unavailable.push(Unavailable::unreadable(&e));
            None
        }
    }
}

/// A read that may fail without costing the sample: the failure is noted, naming its
/// file.
fn noted<T>(r: Result<T, ReadError>, unavailable: &mut Vec<Unavailable>) -> Option<T> {
    r.map_err(|e| unavailable.push(Unavailable::unreadable(&e)))
        .ok()
}

/// `oom_kill` of /proc/vmstat: missing from kernels before 4.13, which is said as
/// such; a vmstat that does not read, or an oom_kill that is not a number, is not.
fn read_oom_kills(
    root: &HostRoot,
    held: &mut HeldFiles,
    unavailable: &mut Vec<Unavailable>,
) -> Option<u64> {
    let path = root.proc(&["vmstat"]);
    let text = noted(held.read_string(&path), unavailable)?;
    if !vmstat::looks_like_vmstat(&text) {
        let e = ReadError::invalid(&path, "malformed: no `name value` lines");
        unavailable.push(Unavailable::unreadable(&e));
        return None;
    }
    if !text
        .lines()
        .any(|l| l.split_whitespace().next() == Some("oom_kill"))
    {
        unavailable.push(Unavailable::new(
            "oom_kill in /proc/vmstat",
            "needs Linux 4.13+: OOM kills are seen only in the kernel log (kmsg collector)",
        ));
        return None;
    }
    let value = vmstat::vmstat_value(&text, "oom_kill");
    if value.is_none() {
        unavailable.push(Unavailable::unreadable(&ReadError::invalid(
            &path,
            "the oom_kill line holds no number",
        )));
    }
    value
}

fn read_psi(
    root: &HostRoot,
    held: &mut HeldFiles,
    unavailable: &mut Vec<Unavailable>,
) -> PsiSignals {
    let dir = root.proc(&["pressure"]);
    if !dir.is_dir() {
        unavailable.push(Unavailable::new(
            "pressure stall information",
            format!(
                "{} does not exist: needs Linux 4.20+ with CONFIG_PSI, and not booted with psi=0 (psi=1 turns it on where the kernel defaults it off)",
                dir.display()
            ),
        ));
        return PsiSignals::default();
    }
    let mut one = |name: &str| -> Option<Psi> {
        // psi=0 keeps the files but reading them fails with EOPNOTSUPP.
        parsed_or_explain(
            held,
            &root.proc(&["pressure", name]),
            psi::parse_psi,
            Some((libc::EOPNOTSUPP, "PSI is disabled (boot with psi=1)")),
            unavailable,
        )
    };
    PsiSignals {
        cpu: one("cpu"),
        memory: one("memory"),
        io: one("io"),
    }
}

fn read_tasks(
    root: &HostRoot,
    held: &mut HeldFiles,
    unavailable: &mut Vec<Unavailable>,
) -> Option<TaskSignal> {
    let tasks = parsed(
        held,
        &root.proc(&["loadavg"]),
        limits::parse_loadavg_tasks,
        unavailable,
    )?;
    let pid_max = optional_u64(
        held,
        &root.proc(&["sys", "kernel", "pid_max"]),
        Some(("kernel.pid_max", "missing: pid_exhaustion cannot be judged")),
        unavailable,
    )?;
    let threads_max = optional_u64(
        held,
        &root.proc(&["sys", "kernel", "threads-max"]),
        Some((
            "kernel.threads-max",
            "not exposed here: tasks are compared with pid_max only",
        )),
        unavailable,
    );
    Some(TaskSignal {
        tasks,
        pid_max,
        threads_max,
    })
}

fn read_inotify(
    root: &HostRoot,
    held: &mut HeldFiles,
    usage: impl FnOnce() -> Result<InotifyUsage, ReadError>,
    unavailable: &mut Vec<Unavailable>,
) -> Option<InotifySignal> {
    let dir = |n: &str| root.proc(&["sys", "fs", "inotify", n]);
    let max_user_instances = optional_u64(
        held,
        &dir("max_user_instances"),
        Some((
            "fs.inotify.max_user_instances",
            "missing (kernel without CONFIG_INOTIFY_USER?): inotify is not checked",
        )),
        unavailable,
    )?;
    let usage = match usage() {
        Ok(u) => u,
        Err(e) => {
            unavailable.push(Unavailable::new("inotify usage", e.to_string()));
            return None;
        }
    };
    if usage.unreadable_processes > 0 && usage.users.is_empty() {
        unavailable.push(Unavailable::new(
            "inotify usage",
            format!(
                "{} processes' file descriptors were unreadable: run with hostPID and CAP_SYS_PTRACE (or as root) to count every user's instances",
                usage.unreadable_processes
            ),
        ));
    }
    Some(InotifySignal {
        max_user_instances,
        max_user_watches: optional_u64(held, &dir("max_user_watches"), None, unavailable),
        usage,
    })
}

fn read_neighbors(
    root: &HostRoot,
    held: &mut HeldFiles,
    unavailable: &mut Vec<Unavailable>,
) -> Vec<NeighTable> {
    let mut out = Vec::new();
    for (family, file, sysctl_dir) in [
        ("ipv4", "arp_cache", "ipv4"),
        ("ipv6", "ndisc_cache", "ipv6"),
    ] {
        let path = root.proc(&["net", "stat", file]);
        let stats: NeighStats = match held.read_string(&path) {
            Ok(text) => match neigh::parse_neigh_stat(&text) {
                Ok(s) => s,
                Err(e) => {
                    let e = ReadError::invalid(&path, format!("malformed: {e}"));
                    unavailable.push(Unavailable::unreadable(&e));
                    continue;
                }
            },
            // No IPv6 (ipv6.disable=1) is normal; a missing IPv4 table is not.
            Err(e) if e.is_not_found() && family == "ipv6" => continue,
            Err(e) => {
                unavailable.push(Unavailable::unreadable(&e));
                continue;
            }
        };
        out.push(NeighTable {
            family,
            entries: stats.entries,
            table_fulls: stats.table_fulls,
            gc_thresh3: optional_u64(
                held,
                &root.proc(&["sys", "net", sysctl_dir, "neigh", "default", "gc_thresh3"]),
                None,
                unavailable,
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inotify_count_is_due_in_whole_rounds() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(rounds_within(s(60), s(15)), 4);
        assert_eq!(rounds_within(s(60), s(1)), 60);
        assert_eq!(rounds_within(s(60), s(7)), 9);
        assert_eq!(rounds_within(s(1), ms(200)), 5);
        assert_eq!(rounds_within(s(10), s(15)), 1);
        assert_eq!(rounds_within(s(60), Duration::ZERO), 1);
    }
}
