//! cpu_throttled and cpu_throttled_kernel_bug, and the per-container throttling over
//! the window that the API and the report show.

use super::window::within;
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::cgroup::{path_key, CpuCgroup, PodCpu};
use crate::collect::pods::{Name, Qos};
use crate::collect::CgroupSample;
use crate::flags::parse_ratio;
use crate::kernel::cgroup::CpuStat;
use crate::store::Snapshot;
use crate::text::{format_cores, round4, short_id};
use serde::Serialize;
use std::time::{Duration, SystemTime};

pub const CPU_THROTTLED: FindingDef = FindingDef {
    id: "cpu_throttled",
    remedy: "Raise or remove the CPU limit of the named container, or reduce its CPU use.",
};
pub const CPU_THROTTLED_KERNEL_BUG: FindingDef = FindingDef {
    id: "cpu_throttled_kernel_bug",
    remedy: "Throttled while far under quota: upgrade to a kernel with the CFS bandwidth fix (5.4+, 4.19.84+, 4.14.154+).",
};
pub const FINDINGS: &[&FindingDef] = &[&CPU_THROTTLED, &CPU_THROTTLED_KERNEL_BUG];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "CPU throttling")]
pub struct Thresholds {
    /// cpu_throttled when a container was throttled in at least this fraction of its
    /// CFS periods over the window (kubernetes-mixin CPUThrottlingHigh: 0.25).
    #[arg(long = "cgroup.throttled-ratio", env = "NODEDIAG_CGROUP_THROTTLED_RATIO", default_value = "0.25", value_parser = parse_ratio, value_name = "RATIO")]
    pub throttled_ratio: f64,

    /// cpu_throttled_kernel_bug when a container so throttled used less than this
    /// fraction of its quota, on a kernel without the CFS bandwidth fix.
    #[arg(long = "cgroup.kernel-bug-usage-ratio", env = "NODEDIAG_CGROUP_KERNEL_BUG_USAGE_RATIO", default_value = "0.5", value_parser = parse_ratio, value_name = "RATIO")]
    pub kernel_bug_usage_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

/// One cgroup's throttling over the rule window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throttling {
    pub namespace: Option<Name>,
    pub pod: Option<Name>,
    pub pod_uid: Name,
    pub qos: Qos,
    /// None for the pod-level cgroup.
    pub container: Option<Name>,
    pub container_id: Option<Name>,
    pub cgroup: Name,
    /// The CPU limit in cores; None: no limit, never throttled.
    pub limit_cores: Option<f64>,
    pub period_seconds: Option<f64>,
    /// Seconds the deltas cover: from the oldest usable sample in the window (or the
    /// last counter reset) to the newest.
    pub window_seconds: f64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_seconds: f64,
    /// throttled_periods / periods; None when no period ran in the window.
    pub throttled_ratio: Option<f64>,
    /// Average CPU used over the window, in cores.
    pub usage_cores: Option<f64>,
    /// usage_cores / limit_cores.
    pub usage_ratio_of_limit: Option<f64>,
    /// The counters went backwards in the window (the cgroup was recreated): the
    /// deltas start at that sample.
    pub counter_reset: bool,
}

impl Throttling {
    /// `namespace/pod/container` when the names are known, else the pod UID and the
    /// container id (short form) stand in.
    pub fn subject(&self) -> String {
        let pod = crate::collect::pods::pod_name(
            self.namespace.as_deref(),
            self.pod.as_deref(),
            &self.pod_uid,
        );
        match (&self.container, &self.container_id) {
            (Some(c), _) => format!("{pod}/{c}"),
            (None, Some(id)) => format!("{pod}/{}", short_id(id)),
            (None, None) => pod,
        }
    }
}

/// Deltas of one cgroup's counters across its samples, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Deltas {
    pub seconds: f64,
    pub periods: u64,
    pub throttled: u64,
    pub throttled_ns: u64,
    pub usage_ns: Option<u64>,
    pub reset: bool,
}

/// Counters that go backwards mean a new cgroup under the same path: the window then
/// starts at the first sample after the drop, so a rate is never negative nor mixes
/// two cgroups' counters.
pub fn deltas(series: &[(SystemTime, CpuStat)]) -> Deltas {
    let mut run = Run::default();
    series.iter().for_each(|&(at, stat)| run.add(at, stat));
    run.deltas()
}

/// One cgroup's samples, oldest first, folded as they come: where the counters last
/// went back, and the newest.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    first: Option<(SystemTime, CpuStat)>,
    last: Option<(SystemTime, CpuStat)>,
    reset: bool,
}

impl Run {
    fn add(&mut self, at: SystemTime, b: CpuStat) {
        let went_back = |a: &CpuStat| {
            b.nr_periods < a.nr_periods
                || b.nr_throttled < a.nr_throttled
                || b.throttled_ns < a.throttled_ns
                || matches!((a.usage_ns, b.usage_ns), (Some(x), Some(y)) if y < x)
        };
        if self.last.as_ref().is_none_or(|(_, a)| went_back(a)) {
            self.reset |= self.last.is_some();
            self.first = Some((at, b));
        }
        self.last = Some((at, b));
    }

    fn deltas(&self) -> Deltas {
        let (Some((t0, a)), Some((t1, b))) = (self.first, self.last) else {
            return Deltas::default();
        };
        Deltas {
            seconds: t1.duration_since(t0).unwrap_or_default().as_secs_f64(),
            periods: b.nr_periods - a.nr_periods,
            throttled: b.nr_throttled - a.nr_throttled,
            throttled_ns: b.throttled_ns - a.throttled_ns,
            usage_ns: match (a.usage_ns, b.usage_ns) {
                (Some(x), Some(y)) => Some(y - x),
                _ => None,
            },
            reset: self.reset,
        }
    }
}

/// Throttling over the window of every container (and, separately, every pod-level
/// cgroup) in the newest sample, worst first.
pub fn throttling(
    history: &[(SystemTime, &CgroupSample)],
    window: Duration,
) -> (Vec<Throttling>, Vec<Throttling>) {
    summaries(history, window, |_| true, |_| true)
}

/// [`throttling`] of the cgroups `may_keep` picks by the newest sample alone and then
/// `keep` by their deltas over the window: the rules need only the few throttled
/// among a node's thousands, and only those `may_keep` picks are followed through
/// the window.
fn summaries(
    history: &[(SystemTime, &CgroupSample)],
    window: Duration,
    may_keep: impl Fn(&CpuCgroup) -> bool,
    keep: impl Fn(&Deltas) -> bool,
) -> (Vec<Throttling>, Vec<Throttling>) {
    let recent = within(history, window);
    let Some(&(_, latest)) = recent.last() else {
        return (Vec::new(), Vec::new());
    };
    let mut followed: Vec<u64> = latest
        .cgroups()
        .filter(|cg| may_keep(cg))
        .map(|cg| path_key(&cg.path))
        .collect();
    followed.sort_unstable();
    followed.dedup();
    let runs = runs(recent, followed);
    // A cgroup of the newest sample has a run exactly when it is followed.
    let kept = |cg: &CpuCgroup| {
        let i = runs
            .binary_search_by_key(&path_key(&cg.path), |(k, _)| *k)
            .ok()?;
        let d = runs[i].1.deltas();
        keep(&d).then_some(d)
    };
    let mut containers = Vec::new();
    let mut pods = Vec::new();
    for p in &latest.pods {
        if let Some(d) = kept(&p.cgroup) {
            pods.push(summarise(p, None, None, &p.cgroup, d));
        }
        for c in &p.containers {
            if let Some(d) = kept(&c.cgroup) {
                let (name, id) = (c.container.clone(), Some(c.container_id.clone()));
                containers.push(summarise(p, name, id, &c.cgroup, d));
            }
        }
    }
    sort_worst_first(&mut containers);
    sort_worst_first(&mut pods);
    (containers, pods)
}

/// The cgroups of `keys` (sorted), folded over the samples. Every sample's counters
/// are sorted by key too, so each is merged with `keys` in one pass (a search per
/// cgroup per sample was most of the rules' cost at 500 pods).
fn runs(samples: &[(SystemTime, &CgroupSample)], keys: Vec<u64>) -> Vec<(u64, Run)> {
    let mut runs: Vec<(u64, Run)> = keys.into_iter().map(|k| (k, Run::default())).collect();
    for (at, sample) in samples {
        let counters = sample.counters();
        let mut theirs = counters.iter();
        for (key, run) in runs.iter_mut() {
            if let Some(stat) = theirs.seek(*key) {
                run.add(*at, stat);
            }
        }
    }
    runs
}

fn summarise(
    p: &PodCpu,
    container: Option<Name>,
    container_id: Option<Name>,
    cg: &CpuCgroup,
    d: Deltas,
) -> Throttling {
    let limit_cores = cg.quota.map(|q| q.cores());
    let usage_cores = d
        .usage_ns
        .filter(|_| d.seconds > 0.0)
        .map(|u| u as f64 / 1e9 / d.seconds);
    Throttling {
        namespace: p.namespace.clone(),
        pod: p.pod.clone(),
        pod_uid: p.pod_uid.clone(),
        qos: p.qos,
        container,
        container_id,
        cgroup: cg.path.clone(),
        limit_cores,
        period_seconds: cg.quota.map(|q| q.period_us as f64 / 1e6),
        window_seconds: round4(d.seconds),
        periods: d.periods,
        throttled_periods: d.throttled,
        throttled_seconds: round4(d.throttled_ns as f64 / 1e9),
        throttled_ratio: (d.periods > 0).then(|| round4(d.throttled as f64 / d.periods as f64)),
        usage_cores: usage_cores.map(round4),
        usage_ratio_of_limit: match (usage_cores, limit_cores) {
            (Some(u), Some(l)) if l > 0.0 => Some(round4(u / l)),
            _ => None,
        },
        counter_reset: d.reset,
    }
}

fn sort_worst_first(v: &mut [Throttling]) {
    // The cgroup path breaks ties: stable and free, where building subjects in the
    // comparator cost most of the time with hundreds of idle containers.
    v.sort_by(|a, b| {
        let r = |t: &Throttling| t.throttled_ratio.unwrap_or(-1.0);
        r(b).total_cmp(&r(a))
            .then(b.throttled_seconds.total_cmp(&a.throttled_seconds))
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
}

pub fn rules(snapshot: &Snapshot, t: &Thresholds, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let history = snapshot.history::<CgroupSample>();
    let Some(&(at, latest)) = history.last() else {
        return;
    };
    // cpu_throttled compares the ratio rounded to four places: a little under the
    // threshold may pass.
    let may_pass = |ratio: f64| ratio + 1e-4 >= t.throttled_ratio;
    // The window's rise of a throttled count is at most its newest value, so a
    // cgroup not throttled since it was made passes only if a ratio of 0 does: such
    // cgroups, and those without a limit, need no walk through the window.
    let zero_passes = may_pass(0.0);
    let may_be_throttled =
        |cg: &CpuCgroup| cg.quota.is_some() && (cg.stat.nr_throttled > 0 || zero_passes);
    // Of those, every container cpu_throttled could flag, and a few more.
    let maybe_throttled =
        |d: &Deltas| d.periods > 0 && may_pass(d.throttled as f64 / d.periods as f64);
    let (containers, _) = summaries(&history, ctx.window, may_be_throttled, maybe_throttled);
    for c in &containers {
        let Some(throttled) = cpu_throttled(c, t, at) else {
            continue;
        };
        out.push(throttled);
        out.extend(cpu_throttled_kernel_bug(c, latest, t, at));
    }
}

fn cpu_throttled(c: &Throttling, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let (Some(ratio), Some(limit)) = (c.throttled_ratio, c.limit_cores) else {
        return None;
    };
    if ratio < t.throttled_ratio {
        return None;
    }
    let subject = c.subject();
    let usage = c
        .usage_cores
        .map(|u| format!(", using {u:.2} cores on average"))
        .unwrap_or_default();
    let summary = format!(
        "{subject} was throttled in {:.0}% of its CPU periods over {:.0}s (limit {} cores{usage})",
        ratio * 100.0,
        c.window_seconds,
        format_cores(limit)
    );
    Some(
        with_evidence(
            Finding::new(&CPU_THROTTLED, Severity::Warning, subject, summary, at),
            c,
        )
        .with("threshold_ratio", t.throttled_ratio),
    )
}

/// Throttled far under quota on a kernel without the CFS bandwidth fix: the throttling
/// is the kernel's, not the container's.
fn cpu_throttled_kernel_bug(
    c: &Throttling,
    latest: &CgroupSample,
    t: &Thresholds,
    at: SystemTime,
) -> Option<Finding> {
    let far_under = c
        .usage_ratio_of_limit
        .is_some_and(|u| u < t.kernel_bug_usage_ratio);
    if !far_under || cfs_bandwidth_fix(latest.kernel_release.as_deref()) != Some(false) {
        return None;
    }
    let kernel = latest.kernel_release.clone().unwrap_or_default();
    let summary = format!(
        "{} was throttled in {:.0}% of its periods while using {:.0}% of its limit: \
         kernel {kernel} lacks the CFS bandwidth fix",
        c.subject(),
        c.throttled_ratio.unwrap_or(0.0) * 100.0,
        c.usage_ratio_of_limit.unwrap_or(0.0) * 100.0
    );
    Some(
        with_evidence(
            Finding::new(
                &CPU_THROTTLED_KERNEL_BUG,
                Severity::Warning,
                c.subject(),
                summary,
                at,
            ),
            c,
        )
        .with("kernel_release", kernel)
        .with("usage_threshold_ratio", t.kernel_bug_usage_ratio),
    )
}

/// Whether the kernel of `release` has the CFS bandwidth fix for throttling far
/// below quota; None when the release is unknown or unparsable.
pub fn cfs_bandwidth_fix(release: Option<&str>) -> Option<bool> {
    release
        .and_then(crate::kernel::release::parse_version)
        .map(has_cfs_bandwidth_fix)
}

/// Whether a kernel has the CFS bandwidth fix for throttling far below quota
/// (upstream commit de53fd7aedb1 "sched/fair: Fix low cpu usage with high throttling
/// by removing expiration of cpu-local slices", kubernetes/kubernetes#67577): in 5.4,
/// backported to 4.14.154 and 4.19.84. Distribution backports to other versions are
/// not visible from the version number.
pub fn has_cfs_bandwidth_fix((major, minor, patch): (u32, u32, u32)) -> bool {
    match (major, minor) {
        (m, _) if m > 5 => true,
        (5, n) => n >= 4,
        (4, 14) => patch >= 154,
        (4, 19) => patch >= 84,
        _ => false,
    }
}

fn with_evidence(mut f: Finding, c: &Throttling) -> Finding {
    let opt = |v: &Option<Name>| v.as_deref().map_or(serde_json::Value::Null, Into::into);
    f = f
        .with("namespace", opt(&c.namespace))
        .with("pod", opt(&c.pod))
        .with("container", opt(&c.container))
        .with("container_id", opt(&c.container_id))
        .with("pod_uid", &*c.pod_uid)
        .with("cgroup", &*c.cgroup)
        .with("limit_cores", c.limit_cores)
        .with("throttled_ratio", c.throttled_ratio)
        .with("throttled_periods", c.throttled_periods)
        .with("periods", c.periods)
        .with("throttled_seconds", c.throttled_seconds)
        .with("window_seconds", c.window_seconds);
    if let Some(u) = c.usage_cores {
        f = f.with("usage_cores", u);
    }
    if let Some(u) = c.usage_ratio_of_limit {
        f = f.with("usage_ratio_of_limit", u);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::cgroup::{CgroupVersion, ContainerCpu};
    use crate::diagnose::testing::{run_rules, store_with};
    use crate::kernel::cgroup::{CpuQuota, CpuStat};
    use std::sync::Arc;

    const UID: &str = "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9";
    const CID: &str = "4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";

    fn cg(path: &str, periods: u64, throttled: u64, usage_ms: u64) -> CpuCgroup {
        CpuCgroup {
            path: path.into(),
            quota: Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            stat: CpuStat {
                nr_periods: periods,
                nr_throttled: throttled,
                throttled_ns: throttled * 10_000_000,
                usage_ns: Some(usage_ms * 1_000_000),
            },
        }
    }

    /// (periods, throttled, usage ms) of one container per sample; None: absent.
    fn sample(c: Option<(u64, u64, u64)>, fix: Option<bool>) -> CgroupSample {
        let pod_path = format!("/kubepods/burstable/pod{UID}");
        let containers = c
            .map(|(p, t, u)| ContainerCpu {
                container_id: CID.into(),
                runtime: None,
                container: Some("app".into()),
                cgroup: cg(&format!("{pod_path}/{CID}"), p, t, u),
            })
            .into_iter()
            .collect();
        CgroupSample {
            version: CgroupVersion::V1,
            mount_point: "/sys/fs/cgroup/cpu".into(),
            kubepods: Some("/kubepods".into()),
            kernel_release: Some(
                if fix == Some(false) {
                    "4.19.0"
                } else {
                    "6.1.0"
                }
                .into(),
            ),
            cfs_bandwidth_fix: fix,
            pods: vec![PodCpu {
                pod_uid: UID.into(),
                qos: Qos::Burstable,
                namespace: Some("shop".into()),
                pod: Some("cart-0".into()),
                cgroup: CpuCgroup {
                    quota: None,
                    ..cg(&pod_path, 0, 0, 0)
                },
                containers,
            }],
            unavailable: vec![],
            counters: Default::default(),
        }
    }

    fn run(samples: &[Option<(u64, u64, u64)>], fix: Option<bool>) -> Vec<Finding> {
        run_with(samples, fix, &Thresholds::default())
    }

    fn run_with(
        samples: &[Option<(u64, u64, u64)>],
        fix: Option<bool>,
        t: &Thresholds,
    ) -> Vec<Finding> {
        let store = store_with(samples.iter().map(|c| sample(*c, fix)));
        run_rules(rules, &store, t)
    }

    #[test]
    fn throttled_at_the_threshold_names_pod_container_and_limit() {
        // 100 periods, 25 throttled: exactly the 25% default.
        let f = run(&[Some((1000, 10, 0)), Some((1100, 35, 7_500))], Some(true));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "cpu_throttled");
        assert_eq!(f[0].subject, "shop/cart-0/app");
        assert_eq!(f[0].evidence["throttled_ratio"], 0.25);
        assert_eq!(f[0].evidence["periods"], 100);
        assert_eq!(f[0].evidence["throttled_seconds"], 0.25);
        assert_eq!(f[0].evidence["limit_cores"], 0.5);
        // 7.5 s of CPU in 15 s: 0.5 cores, all of the limit.
        assert_eq!(f[0].evidence["usage_cores"], 0.5);
        assert_eq!(f[0].evidence["usage_ratio_of_limit"], 1.0);
        assert!(f[0].summary.contains("limit 0.5 cores"), "{}", f[0].summary);
        assert!(run(&[Some((1000, 10, 0)), Some((1100, 34, 7_500))], Some(true)).is_empty());
    }

    #[test]
    fn a_counter_reset_starts_a_new_window() {
        // Old cgroup heavily throttled, then recreated: only the new one counts.
        let d = run(
            &[
                Some((5000, 4000, 90_000)),
                Some((5100, 4090, 95_000)),
                Some((10, 0, 100)),
                Some((110, 5, 1_600)),
            ],
            Some(true),
        );
        assert!(d.is_empty(), "5% after the reset is not throttling: {d:?}");
        let snap_values = |s: &[Option<(u64, u64, u64)>]| {
            let samples: Vec<CgroupSample> = s.iter().map(|c| sample(*c, None)).collect();
            let t0 = SystemTime::UNIX_EPOCH;
            let h: Vec<(SystemTime, &CgroupSample)> = samples
                .iter()
                .enumerate()
                .map(|(i, c)| (t0 + Duration::from_secs(15 * i as u64), c))
                .collect();
            throttling(&h, Duration::from_secs(300)).0
        };
        let t = snap_values(&[
            Some((5000, 4000, 90_000)),
            Some((10, 0, 100)),
            Some((110, 50, 1_600)),
        ]);
        assert_eq!(t[0].periods, 100);
        assert_eq!(t[0].throttled_periods, 50);
        assert_eq!(t[0].window_seconds, 15.0);
        assert!(t[0].counter_reset);
        // 1.5 s of CPU over 15 s.
        assert_eq!(t[0].usage_cores, Some(0.1));
    }

    #[test]
    fn a_container_never_throttled_is_flagged_only_by_a_zero_ratio() {
        let samples = [Some((1000, 0, 0)), Some((1100, 0, 7_500))];
        assert!(run(&samples, Some(true)).is_empty());
        let zero = Thresholds {
            throttled_ratio: 0.0,
            ..Thresholds::default()
        };
        let f = run_with(&samples, Some(true), &zero);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["throttled_ratio"], 0.0);
        assert_eq!(f[0].evidence["periods"], 100);
    }

    #[test]
    fn a_container_without_a_limit_is_never_flagged_whatever_its_counts() {
        let limited: Vec<CgroupSample> = [Some((1000, 10, 0)), Some((1100, 90, 7_500))]
            .iter()
            .map(|c| sample(*c, Some(true)))
            .collect();
        let unlimited = limited.iter().cloned().map(|mut s| {
            s.pods[0].containers[0].cgroup.quota = None;
            s
        });
        let zero = Thresholds {
            throttled_ratio: 0.0,
            ..Thresholds::default()
        };
        for t in [Thresholds::default(), zero] {
            let f = run_rules(rules, &store_with(limited.iter().cloned()), &t);
            assert_eq!(f.len(), 1, "the same counts with a limit: {f:?}");
            let f = run_rules(rules, &store_with(unlimited.clone()), &t);
            assert!(f.is_empty(), "{f:?}");
        }
    }

    #[test]
    fn a_count_that_rose_before_the_window_alone_is_followed_but_not_flagged() {
        // Throttled once, long ago: its newest count is not 0, its window's rise is.
        let f = run(
            &[Some((1000, 400, 0)), Some((1100, 400, 7_500))],
            Some(true),
        );
        assert!(f.is_empty(), "{f:?}");
        // And a reset in the window: the deltas start after it, as for any other.
        let f = run(
            &[
                Some((1000, 400, 0)),
                Some((10, 0, 100)),
                Some((110, 30, 1_600)),
            ],
            Some(true),
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["periods"], 100);
        assert_eq!(f[0].evidence["throttled_periods"], 30);
    }

    #[test]
    fn rounds_sharing_their_keys_read_as_rounds_that_do_not() {
        // The collector's rounds share keys while the cgroups stay the same, where
        // older samples each have keys of their own. A container missing, then
        // recreated, in between.
        let rounds = [
            Some((1000, 10, 0)),
            Some((1100, 35, 7_500)),
            None,
            Some((10, 0, 100)),
            Some((110, 50, 1_600)),
        ];
        let window = |samples: &[CgroupSample]| {
            let h: Vec<(SystemTime, &CgroupSample)> = samples
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    (
                        SystemTime::UNIX_EPOCH + Duration::from_secs(15 * i as u64),
                        c,
                    )
                })
                .collect();
            throttling(&h, Duration::from_secs(300))
        };
        let apart: Vec<CgroupSample> = rounds.iter().map(|c| sample(*c, None)).collect();
        let mut keys = Arc::from([]);
        let shared: Vec<CgroupSample> = apart
            .iter()
            .cloned()
            .map(|mut s| {
                s.counters = s.pack_counters(&keys);
                keys = s.counters.keys().clone();
                s
            })
            .collect();
        let same =
            |a: usize, b: usize| Arc::ptr_eq(shared[a].counters.keys(), shared[b].counters.keys());
        assert!(same(0, 1) && same(3, 4) && !same(1, 2) && !same(2, 3));
        let read = window(&shared);
        assert_eq!(read, window(&apart));
        assert_eq!(read.0[0].periods, 100);
        assert!(read.0[0].counter_reset);
    }

    #[test]
    fn a_sample_missing_a_container_is_skipped_not_a_reset() {
        // Read in the first and last samples only (a round where it could not be).
        let f = run(&[Some((0, 0, 0)), None, Some((40, 30, 1_000))], Some(true));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["window_seconds"], 30.0);
        assert_eq!(f[0].evidence["periods"], 40);
    }

    #[test]
    fn a_container_appearing_mid_window_uses_its_own_samples() {
        let f = run(
            &[None, None, Some((0, 0, 0)), Some((40, 30, 1_000))],
            Some(true),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["window_seconds"], 15.0);
        assert_eq!(f[0].evidence["periods"], 40);
        // Seen once only: no rate yet.
        assert!(run(&[None, Some((40, 30, 1_000))], Some(true)).is_empty());
    }

    #[test]
    fn zero_periods_is_no_ratio_not_a_division_by_zero() {
        assert!(run(&[Some((7, 7, 0)), Some((7, 7, 0))], Some(true)).is_empty());
        let c = cg("/x", 7, 7, 0);
        let d = deltas(&[
            (SystemTime::UNIX_EPOCH, c.stat),
            (SystemTime::UNIX_EPOCH, c.stat),
        ]);
        assert_eq!((d.periods, d.seconds, d.reset), (0, 0.0, false));
    }

    #[test]
    fn kernel_bug_needs_an_old_kernel_and_low_usage() {
        // 80% throttled while using 1.5 s of CPU in 15 s = 0.1 of 0.5 cores.
        let low = [Some((0, 0, 0)), Some((100, 80, 1_500))];
        let f = run(&low, Some(false));
        let ids: Vec<_> = f.iter().map(|f| f.id).collect();
        assert_eq!(ids, ["cpu_throttled", "cpu_throttled_kernel_bug"]);
        assert_eq!(f[1].evidence["kernel_release"], "4.19.0");
        assert_eq!(f[1].evidence["usage_ratio_of_limit"], 0.2);
        assert_eq!(run(&low, Some(true)).len(), 1, "fixed kernel");
        assert_eq!(run(&low, None).len(), 1, "unknown kernel: no claim");
        let busy = [Some((0, 0, 0)), Some((100, 80, 7_000))];
        assert_eq!(
            run(&busy, Some(false)).len(),
            1,
            "using its quota: a real limit"
        );
    }

    #[test]
    fn worst_first_and_subjects_without_names() {
        let a = Throttling {
            namespace: None,
            pod: None,
            pod_uid: UID.into(),
            qos: Qos::Guaranteed,
            container: None,
            container_id: Some(CID.into()),
            cgroup: "".into(),
            limit_cores: None,
            period_seconds: None,
            window_seconds: 0.0,
            periods: 0,
            throttled_periods: 0,
            throttled_seconds: 0.0,
            throttled_ratio: None,
            usage_cores: None,
            usage_ratio_of_limit: None,
            counter_reset: false,
        };
        assert_eq!(a.subject(), format!("pod {UID}/4c5d6e7f8a9b"));
        let b = Throttling {
            throttled_ratio: Some(0.1),
            ..a.clone()
        };
        let c = Throttling {
            throttled_ratio: Some(0.9),
            ..a.clone()
        };
        let mut v = vec![a, b, c];
        sort_worst_first(&mut v);
        let r: Vec<_> = v.iter().map(|t| t.throttled_ratio).collect();
        assert_eq!(r, [Some(0.9), Some(0.1), None]);
    }

    #[test]
    fn kernel_versions_and_the_cfs_fix() {
        let fixed = |r| has_cfs_bandwidth_fix(crate::kernel::release::parse_version(r).unwrap());
        assert!(fixed("5.4.0"));
        assert!(fixed("6.18.44"));
        assert!(!fixed("5.3.18"));
        assert!(!fixed("4.14.153"));
        assert!(fixed("4.14.154"));
        assert!(!fixed("4.19.83"));
        assert!(fixed("4.19.84"));
        assert!(!fixed("4.20.17"));
        assert!(!fixed("3.10.0-1160.el7.x86_64"));
        assert_eq!(cfs_bandwidth_fix(Some("4.19.0-21-amd64")), Some(false));
        assert_eq!(cfs_bandwidth_fix(Some("5.15.0-91-generic")), Some(true));
        assert_eq!(cfs_bandwidth_fix(Some("garbage")), None);
        assert_eq!(cfs_bandwidth_fix(None), None);
    }
}
