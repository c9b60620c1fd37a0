//! The report's CPU throttling section: the most throttled containers.

use crate::collect::cgroup::CgroupVersion;
use crate::collect::CgroupSample;
use crate::store::Snapshot;
use std::fmt::Write;
use std::time::SystemTime;

/// The collector line of the report.
pub fn summary(s: &CgroupSample) -> String {
    let containers = s.containers().count();
    let limited = s
        .containers()
        .filter(|(_, c)| c.cgroup.quota.is_some())
        .count();
    format!(
        "cgroup {} at {}: {} pods, {} containers, {} with a CPU limit",
        match s.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        },
        s.mount_point,
        s.pods.len(),
        containers,
        limited
    )
}

/// How many throttled containers the report lists; the API has them all.
const TOP_THROTTLED: usize = 5;

pub fn section(out: &mut String, snap: &Snapshot, _now: SystemTime) {
    let history = snap.history::<crate::collect::CgroupSample>();
    if history.is_empty() {
        return;
    }
    let (containers, _) = crate::diagnose::cgroup::throttling(&history, snap.window);
    if containers.is_empty() {
        // Not a Kubernetes node, or no pods yet: the collector line says which.
        return;
    }
    let limited = containers
        .iter()
        .filter(|c| c.limit_cores.is_some())
        .count();
    let throttled: Vec<_> = containers
        .iter()
        .filter(|c| c.throttled_ratio.is_some_and(|r| r > 0.0))
        .collect();
    let window = humantime::format_duration(snap.window);
    if throttled.is_empty() {
        let _ = writeln!(
            out,
            "\ncpu throttling: none of {limited} containers with a CPU limit throttled in the last {window}"
        );
        return;
    }
    let _ = writeln!(
        out,
        "\ncpu throttling over the last {window}: {} of {limited} limited containers throttled, worst first",
        throttled.len()
    );
    for c in throttled.iter().take(TOP_THROTTLED) {
        let usage = c
            .usage_cores
            .map(|u| format!(", using {u:.2}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:>4.0}%  {}  limit {} cores{usage}, throttled {:.1}s in {} of {} periods",
            c.throttled_ratio.unwrap_or(0.0) * 100.0,
            c.subject(),
            c.limit_cores
                .map(crate::text::format_cores)
                .unwrap_or_else(|| "no".into()),
            c.throttled_seconds,
            c.throttled_periods,
            c.periods
        );
    }
}
