//! memory_pressure, cpu_pressure, pid_exhaustion, fd_exhaustion,
//! inotify_watches_exhausted, neighbor_table_overflow, forwarding_disabled.
//! (oom_kills, which also reads the kernel log, is in `oom.rs`.)

use super::window::{increase, span, within};
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::PressureSample;
use crate::finding::worst_level;
use crate::flags::parse_ratio;
use crate::store::Snapshot;
use crate::text::round4;
use std::time::SystemTime;

pub const CPU_PRESSURE: FindingDef = FindingDef {
    id: "cpu_pressure",
    remedy: "The node is CPU-starved: compare pod CPU requests with allocatable and move load.",
};
pub const MEMORY_PRESSURE: FindingDef = FindingDef {
    id: "memory_pressure",
    remedy: "Compare memory requests with allocatable; set kube-reserved and system-reserved; find the largest consumers.",
};
pub const PID_EXHAUSTION: FindingDef = FindingDef {
    id: "pid_exhaustion",
    remedy: "Set pod PID limits (podPidsLimit); raise kernel.pid_max; find the process forking.",
};
pub const FD_EXHAUSTION: FindingDef = FindingDef {
    id: "fd_exhaustion",
    remedy: "Find the process leaking file descriptors (ls /proc/*/fd | wc -l); raise fs.file-max.",
};
pub const INOTIFY_EXHAUSTED: FindingDef = FindingDef {
    id: "inotify_watches_exhausted",
    remedy: "Raise fs.inotify.max_user_instances (and max_user_watches).",
};
pub const NEIGHBOR_OVERFLOW: FindingDef = FindingDef {
    id: "neighbor_table_overflow",
    remedy: "Raise net.ipv4.neigh.default.gc_thresh1/2/3 to fit the number of pods and peers.",
};
pub const FORWARDING_DISABLED: FindingDef = FindingDef {
    id: "forwarding_disabled",
    remedy: "Enable net.ipv4.ip_forward; modprobe br_netfilter and set net.bridge.bridge-nf-call-iptables=1.",
};
pub const FINDINGS: &[&FindingDef] = &[
    &CPU_PRESSURE,
    &MEMORY_PRESSURE,
    &super::oom::OOM_KILLS,
    &PID_EXHAUSTION,
    &FD_EXHAUSTION,
    &INOTIFY_EXHAUSTED,
    &NEIGHBOR_OVERFLOW,
    &FORWARDING_DISABLED,
];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "Node pressure")]
pub struct Thresholds {
    /// memory_pressure when MemAvailable is below this fraction of MemTotal.
    #[arg(long = "memory.available-ratio", env = "NODEDIAG_MEMORY_AVAILABLE_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub memory_available_ratio: f64,

    /// memory_pressure when /proc/pressure/memory `full avg60` exceeds this fraction.
    #[arg(long = "memory.psi-full-ratio", env = "NODEDIAG_MEMORY_PSI_FULL_RATIO", default_value = "0.10", value_parser = parse_ratio, value_name = "RATIO")]
    pub memory_psi_full_ratio: f64,

    /// cpu_pressure when /proc/pressure/cpu `some avg60` exceeds this fraction.
    #[arg(long = "cpu.psi-some-ratio", env = "NODEDIAG_CPU_PSI_SOME_RATIO", default_value = "0.50", value_parser = parse_ratio, value_name = "RATIO")]
    pub cpu_psi_some_ratio: f64,

    /// pid_exhaustion (warning) above this fraction of kernel.pid_max or threads-max.
    #[arg(long = "pids.warning-ratio", env = "NODEDIAG_PIDS_WARNING_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub pids_warning_ratio: f64,

    /// pid_exhaustion (critical) above this fraction.
    #[arg(long = "pids.critical-ratio", env = "NODEDIAG_PIDS_CRITICAL_RATIO", default_value = "0.95", value_parser = parse_ratio, value_name = "RATIO")]
    pub pids_critical_ratio: f64,

    /// fd_exhaustion (warning) above this fraction of fs.file-max.
    #[arg(long = "fd.warning-ratio", env = "NODEDIAG_FD_WARNING_RATIO", default_value = "0.80", value_parser = parse_ratio, value_name = "RATIO")]
    pub fd_warning_ratio: f64,

    /// fd_exhaustion (critical) above this fraction of fs.file-max.
    #[arg(long = "fd.critical-ratio", env = "NODEDIAG_FD_CRITICAL_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub fd_critical_ratio: f64,

    /// inotify_watches_exhausted above this fraction of fs.inotify.max_user_instances
    /// (or max_user_watches) for a user.
    #[arg(long = "inotify.ratio", env = "NODEDIAG_INOTIFY_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub inotify_ratio: f64,

    /// neighbor_table_overflow (warning) above this fraction of gc_thresh3.
    #[arg(long = "neighbor.ratio", env = "NODEDIAG_NEIGHBOR_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub neighbor_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

const HOST: &str = "host";

type Window<'a> = &'a [(SystemTime, &'a PressureSample)];

pub fn rules(snapshot: &Snapshot, t: &Thresholds, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let history = snapshot.history::<PressureSample>();
    let Some(&(at, s)) = history.last() else {
        return;
    };
    let recent = within(&history, ctx.window);
    out.extend(memory_pressure(s, t, at));
    out.extend(cpu_pressure(s, t, at));
    out.extend(pid_exhaustion(s, t, at));
    out.extend(fd_exhaustion(s, t, at));
    inotify_exhausted(s, t, at, out);
    neighbor_overflow(recent, s, t, at, out);
    forwarding_disabled(s, at, out);
}

fn memory_pressure(s: &PressureSample, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let mem_ratio = s.memory.available_ratio();
    let mem_full = s.psi.memory.and_then(|p| p.full).map(|f| f.avg60);
    let low = mem_ratio.is_some_and(|r| r < t.memory_available_ratio);
    let stalled = mem_full.is_some_and(|f| f > t.memory_psi_full_ratio);
    let why = match (low, stalled) {
        (false, false) => return None,
        (true, true) => format!(
            "{:.1}% of memory available and all tasks stalled on memory {:.1}% of the last minute",
            pct(mem_ratio),
            pct(mem_full)
        ),
        (true, false) => format!("only {:.1}% of memory available", pct(mem_ratio)),
        (false, true) => format!(
            "all non-idle tasks stalled on memory {:.1}% of the last minute",
            pct(mem_full)
        ),
    };
    let mut f = Finding::new(&MEMORY_PRESSURE, Severity::Warning, HOST, why, at)
        .with("mem_total_bytes", s.memory.total_bytes)
        .with("available_ratio_threshold", t.memory_available_ratio)
        .with("psi_full_avg60_threshold", t.memory_psi_full_ratio);
    if let Some(a) = s.memory.available_bytes {
        f = f.with("mem_available_bytes", a);
    }
    if let Some(r) = mem_ratio {
        f = f.with("available_ratio", round4(r));
    }
    if let Some(k) = s.memory.kubelet_available {
        f = f.with("kubelet_available_bytes", k.bytes);
    }
    if let Some(v) = mem_full {
        f = f.with("psi_full_avg60", round4(v));
    }
    Some(f)
}

fn cpu_pressure(s: &PressureSample, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let some = s.psi.cpu.and_then(|p| p.some)?;
    (some.avg60 > t.cpu_psi_some_ratio).then(|| {
        Finding::new(
            &CPU_PRESSURE,
            Severity::Warning,
            HOST,
            format!(
                "runnable tasks waited for a CPU {:.1}% of the last minute",
                some.avg60 * 100.0
            ),
            at,
        )
        .with("psi_some_avg10", round4(some.avg10))
        .with("psi_some_avg60", round4(some.avg60))
        .with("psi_some_avg300", round4(some.avg300))
        .with("threshold_ratio", t.cpu_psi_some_ratio)
    })
}

fn pid_exhaustion(s: &PressureSample, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let tasks = s.tasks?;
    let limits = [
        ("kernel.pid_max", Some(tasks.pid_max), tasks.pid_ratio()),
        (
            "kernel.threads-max",
            tasks.threads_max,
            tasks.threads_ratio(),
        ),
    ];
    let (limit, max, ratio) = limits
        .iter()
        .filter_map(|(n, m, r)| Some((*n, (*m)?, (*r)?)))
        .max_by(|a, b| a.2.total_cmp(&b.2))?;
    // Strictly above, as the catalog says (> 90%, > 95%).
    let levels = [
        (t.pids_critical_ratio, Severity::Critical),
        (t.pids_warning_ratio, Severity::Warning),
    ];
    let (severity, threshold) = worst_level(&levels, |l| ratio > l)?;
    let mut f = Finding::new(
        &PID_EXHAUSTION,
        severity,
        HOST,
        format!(
            "{} tasks use {:.1}% of {limit} ({max})",
            tasks.tasks,
            ratio * 100.0
        ),
        at,
    )
    .with("tasks", tasks.tasks)
    .with("pid_max", tasks.pid_max)
    .with("limit", limit)
    .with("usage_ratio", round4(ratio))
    .with("threshold_ratio", threshold);
    if let Some(m) = tasks.threads_max {
        f = f.with("threads_max", m);
    }
    Some(f)
}

fn fd_exhaustion(s: &PressureSample, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let files = s.files.filter(|f| f.max > 0)?;
    let ratio = files.allocated as f64 / files.max as f64;
    let levels = [
        (t.fd_critical_ratio, Severity::Critical),
        (t.fd_warning_ratio, Severity::Warning),
    ];
    let (severity, threshold) = worst_level(&levels, |l| ratio > l)?;
    Some(
        Finding::new(
            &FD_EXHAUSTION,
            severity,
            HOST,
            format!(
                "{} file handles allocated, {:.1}% of fs.file-max ({})",
                files.allocated,
                ratio * 100.0,
                files.max
            ),
            at,
        )
        .with("allocated", files.allocated)
        .with("file_max", files.max)
        .with("usage_ratio", round4(ratio))
        .with("threshold_ratio", threshold),
    )
}

fn inotify_exhausted(s: &PressureSample, t: &Thresholds, at: SystemTime, out: &mut Vec<Finding>) {
    let Some(ino) = &s.inotify else {
        return;
    };
    for (uid, user) in &ino.usage.users {
        let inst = ratio_of(user.instances, Some(ino.max_user_instances));
        let watches = ratio_of(user.watches, ino.max_user_watches);
        let over_inst = inst.is_some_and(|r| r > t.inotify_ratio);
        let over_watch = watches.is_some_and(|r| r > t.inotify_ratio);
        if !(over_inst || over_watch) {
            continue;
        }
        let what = if over_inst {
            format!(
                "{} inotify instances of fs.inotify.max_user_instances {}",
                user.instances, ino.max_user_instances
            )
        } else {
            format!(
                "{} inotify watches of fs.inotify.max_user_watches {}",
                user.watches,
                ino.max_user_watches.unwrap_or(0)
            )
        };
        let top: Vec<serde_json::Value> = user
            .top
            .iter()
            .map(|h| {
                serde_json::json!({"pid": h.pid, "comm": h.comm, "instances": h.instances, "watches": h.watches})
            })
            .collect();
        let mut f = Finding::new(
            &INOTIFY_EXHAUSTED,
            Severity::Warning,
            format!("uid {uid}"),
            format!("uid {uid} holds {what}"),
            at,
        )
        .with("uid", *uid)
        .with("instances", user.instances)
        .with("max_user_instances", ino.max_user_instances)
        .with("watches", user.watches)
        .with("threshold_ratio", t.inotify_ratio)
        .with("top_processes", top);
        if let Some(m) = ino.max_user_watches {
            f = f.with("max_user_watches", m);
        }
        out.push(f);
    }
}

fn neighbor_overflow(
    recent: Window,
    s: &PressureSample,
    t: &Thresholds,
    at: SystemTime,
    out: &mut Vec<Finding>,
) {
    let seconds = span(recent).as_secs();
    for table in &s.neighbors {
        let family = table.family;
        let fulls = increase(recent.iter().filter_map(|(_, s)| {
            s.neighbors
                .iter()
                .find(|n| n.family == family)
                .and_then(|n| n.table_fulls)
        }));
        let ratio = table.usage_ratio();
        let (severity, summary) = if fulls > 0 {
            (
                Severity::Critical,
                format!(
                    "{family} neighbour table overflowed {fulls} times in the last {seconds}s: new peers are unreachable"
                ),
            )
        } else if ratio.is_some_and(|r| r > t.neighbor_ratio) {
            (
                Severity::Warning,
                format!(
                    "{family} neighbour table at {:.0}% of gc_thresh3 ({} of {})",
                    pct(ratio),
                    table.entries,
                    table.gc_thresh3.unwrap_or(0)
                ),
            )
        } else {
            continue;
        };
        let mut f = Finding::new(&NEIGHBOR_OVERFLOW, severity, family, summary, at)
            .with("entries", table.entries)
            .with("table_fulls_in_window", fulls)
            .with("window_seconds", seconds)
            .with("threshold_ratio", t.neighbor_ratio);
        if let Some(g) = table.gc_thresh3 {
            f = f.with("gc_thresh3", g);
        }
        if let Some(r) = ratio {
            f = f.with("usage_ratio", round4(r));
        }
        out.push(f);
    }
}

fn forwarding_disabled(s: &PressureSample, at: SystemTime, out: &mut Vec<Finding>) {
    let fwd = s.forwarding;
    if let Some(v) = fwd.ipv4_forward.filter(|v| *v != 1) {
        out.push(
            Finding::new(
                &FORWARDING_DISABLED,
                Severity::Critical,
                "net.ipv4.ip_forward",
                format!("net.ipv4.ip_forward is {v}: the node does not route pod traffic"),
                at,
            )
            .with("sysctl", "net.ipv4.ip_forward")
            .with("value", v),
        );
    }
    if let Some(v) = fwd.bridge_nf_call_iptables.filter(|v| *v != 1) {
        out.push(
            Finding::new(
                &FORWARDING_DISABLED,
                Severity::Critical,
                "net.bridge.bridge-nf-call-iptables",
                format!(
                    "br_netfilter is loaded but net.bridge.bridge-nf-call-iptables is {v}: bridged pod traffic bypasses iptables (Service VIPs break)"
                ),
                at,
            )
            .with("sysctl", "net.bridge.bridge-nf-call-iptables")
            .with("value", v),
        );
    }
}

fn ratio_of(v: u64, max: Option<u64>) -> Option<f64> {
    let m = max.filter(|m| *m > 0)?;
    Some(v as f64 / m as f64)
}

fn pct(r: Option<f64>) -> f64 {
    r.unwrap_or(0.0) * 100.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collect::pressure::{
        Forwarding, InotifySignal, MemorySignal, NeighTable, PsiSignals, TaskSignal,
    };
    use crate::diagnose::testing;
    use crate::kernel::inotify::{InotifyUsage, UserInotify};
    use crate::kernel::limits::FileNr;
    use crate::kernel::psi::{Psi, PsiLine};
    use crate::store::Store;

    /// A healthy node; tests change one signal at a time.
    pub(crate) fn healthy() -> PressureSample {
        PressureSample {
            memory: MemorySignal {
                total_bytes: 1000,
                available_bytes: Some(500),
                kubelet_available: None,
            },
            psi: PsiSignals {
                cpu: Some(psi(0.05, None)),
                memory: Some(psi(0.0, Some(0.0))),
                io: Some(psi(0.0, Some(0.0))),
            },
            tasks: Some(TaskSignal {
                tasks: 100,
                pid_max: 1000,
                threads_max: Some(2000),
            }),
            files: Some(FileNr {
                allocated: 10,
                max: 100,
            }),
            inotify: Some(InotifySignal {
                max_user_instances: 128,
                max_user_watches: Some(8192),
                usage: InotifyUsage {
                    users: [(
                        0,
                        UserInotify {
                            instances: 10,
                            watches: 100,
                            top: vec![],
                        },
                    )]
                    .into(),
                    unreadable_processes: 0,
                },
            }),
            neighbors: vec![NeighTable {
                family: "ipv4",
                entries: 10,
                table_fulls: Some(0),
                gc_thresh3: Some(1024),
            }],
            forwarding: Forwarding {
                ipv4_forward: Some(1),
                bridge_nf_call_iptables: Some(1),
            },
            oom_kills: Some(0),
            unavailable: vec![],
        }
    }

    fn psi(some60: f64, full60: Option<f64>) -> Psi {
        let line = |v| PsiLine {
            avg10: v,
            avg60: v,
            avg300: v,
            total_us: 0,
        };
        Psi {
            some: Some(line(some60)),
            full: full60.map(line),
        }
    }

    pub(crate) fn store_with(samples: Vec<PressureSample>) -> Store {
        testing::store_with(samples)
    }

    fn run(samples: Vec<PressureSample>) -> Vec<Finding> {
        testing::run_rules(rules, &store_with(samples), &Thresholds::default())
    }

    fn one(change: impl FnOnce(&mut PressureSample)) -> Vec<Finding> {
        let mut s = healthy();
        change(&mut s);
        run(vec![s])
    }

    fn ids(f: &[Finding]) -> Vec<(&str, Severity, &str)> {
        f.iter()
            .map(|f| (f.id, f.severity, f.subject.as_str()))
            .collect()
    }

    #[test]
    fn a_healthy_node_has_no_findings() {
        assert!(run(vec![healthy()]).is_empty());
    }

    #[test]
    fn memory_pressure_from_available_memory() {
        assert!(
            one(|s| s.memory.available_bytes = Some(100)).is_empty(),
            "10% is not below 10%"
        );
        let f = one(|s| s.memory.available_bytes = Some(99));
        assert_eq!(ids(&f), [("memory_pressure", Severity::Warning, "host")]);
        assert_eq!(f[0].evidence["mem_available_bytes"], 99);
        assert_eq!(f[0].evidence["available_ratio"], 0.099);
    }

    #[test]
    fn memory_pressure_from_psi_full_and_without_memavailable() {
        assert!(one(|s| s.psi.memory = Some(psi(0.3, Some(0.10)))).is_empty());
        let f = one(|s| {
            s.memory.available_bytes = None;
            s.psi.memory = Some(psi(0.3, Some(0.11)));
        });
        assert_eq!(ids(&f), [("memory_pressure", Severity::Warning, "host")]);
        assert_eq!(f[0].evidence["psi_full_avg60"], 0.11);
        assert!(!f[0].evidence.contains_key("mem_available_bytes"));
    }

    #[test]
    fn cpu_pressure_above_half_a_minute_stalled() {
        assert!(one(|s| s.psi.cpu = Some(psi(0.50, None))).is_empty());
        let f = one(|s| s.psi.cpu = Some(psi(0.51, None)));
        assert_eq!(ids(&f), [("cpu_pressure", Severity::Warning, "host")]);
        assert!(
            one(|s| s.psi = PsiSignals::default()).is_empty(),
            "no PSI, no finding"
        );
    }

    #[test]
    fn pids_against_the_tighter_of_pid_max_and_threads_max() {
        let tasks = |n, threads_max| {
            move |s: &mut PressureSample| {
                s.tasks = Some(TaskSignal {
                    tasks: n,
                    pid_max: 1000,
                    threads_max,
                })
            }
        };
        assert!(one(tasks(900, Some(5000))).is_empty());
        assert_eq!(
            ids(&one(tasks(901, Some(5000)))),
            [("pid_exhaustion", Severity::Warning, "host")]
        );
        let f = one(tasks(951, None));
        assert_eq!(ids(&f), [("pid_exhaustion", Severity::Critical, "host")]);
        assert_eq!(f[0].evidence["limit"], "kernel.pid_max");
        let f = one(tasks(500, Some(520)));
        assert_eq!(ids(&f), [("pid_exhaustion", Severity::Critical, "host")]);
        assert_eq!(f[0].evidence["limit"], "kernel.threads-max");
    }

    #[test]
    fn file_handles() {
        let files = |allocated| {
            move |s: &mut PressureSample| {
                s.files = Some(FileNr {
                    allocated,
                    max: 1000,
                })
            }
        };
        assert!(one(files(800)).is_empty());
        assert_eq!(
            ids(&one(files(801))),
            [("fd_exhaustion", Severity::Warning, "host")]
        );
        assert_eq!(
            ids(&one(files(901))),
            [("fd_exhaustion", Severity::Critical, "host")]
        );
    }

    #[test]
    fn inotify_per_user() {
        let user = |instances, watches| {
            move |s: &mut PressureSample| {
                let ino = s.inotify.as_mut().unwrap();
                ino.usage.users.insert(
                    1000,
                    UserInotify {
                        instances,
                        watches,
                        top: vec![],
                    },
                );
            }
        };
        assert!(one(user(115, 10)).is_empty(), "115/128 = 89.8%");
        let f = one(user(116, 10));
        assert_eq!(
            ids(&f),
            [("inotify_watches_exhausted", Severity::Warning, "uid 1000")]
        );
        assert_eq!(f[0].evidence["instances"], 116);
        let f = one(user(1, 7500));
        assert_eq!(
            ids(&f),
            [("inotify_watches_exhausted", Severity::Warning, "uid 1000")]
        );
    }

    #[test]
    fn neighbour_table_full_rising_or_near_gc_thresh3() {
        let near = one(|s| s.neighbors[0].entries = 922);
        assert_eq!(
            ids(&near),
            [("neighbor_table_overflow", Severity::Warning, "ipv4")]
        );
        assert!(one(|s| s.neighbors[0].entries = 921).is_empty());
        let mut before = healthy();
        before.neighbors[0].table_fulls = Some(4);
        let mut after = healthy();
        after.neighbors[0].table_fulls = Some(6);
        let f = run(vec![before.clone(), after]);
        assert_eq!(
            ids(&f),
            [("neighbor_table_overflow", Severity::Critical, "ipv4")]
        );
        assert_eq!(f[0].evidence["table_fulls_in_window"], 2);
        assert!(
            run(vec![before.clone(), before]).is_empty(),
            "a non-zero counter alone is not a finding"
        );
    }

    #[test]
    fn forwarding_and_br_netfilter() {
        let f = one(|s| s.forwarding.ipv4_forward = Some(0));
        assert_eq!(
            ids(&f),
            [(
                "forwarding_disabled",
                Severity::Critical,
                "net.ipv4.ip_forward"
            )]
        );
        let f = one(|s| s.forwarding.bridge_nf_call_iptables = Some(0));
        assert_eq!(
            ids(&f),
            [(
                "forwarding_disabled",
                Severity::Critical,
                "net.bridge.bridge-nf-call-iptables"
            )]
        );
        assert!(
            one(|s| s.forwarding.bridge_nf_call_iptables = None).is_empty(),
            "br_netfilter not loaded"
        );
    }
}
