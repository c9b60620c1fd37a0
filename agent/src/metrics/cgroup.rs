//! Per-container CPU bandwidth counters, for cgroups with a CPU limit only: the
//! others are never throttled, and leaving them out keeps one series per limited
//! container. Pod-level cgroups carry `container=""`, as in cAdvisor.

use super::family::Families;
use super::steady::SteadyFamilies;
use crate::collect::cgroup::CpuCgroup;
use crate::collect::CgroupSample;
use crate::kernel::cgroup::CpuQuota;
use crate::store::Snapshot;
use crate::text::short_id;
use foldhash::{HashSet, HashSetExt};
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

/// (metric name, help, value)
type Def = (&'static str, &'static str, fn(&CpuCgroup) -> Option<f64>);

const COUNTERS: [Def; 4] = [
    (
        "nodediag_cgroup_cpu_periods_total",
        "CFS enforcement periods that had runnable tasks (cgroup cpu.stat nr_periods).",
        |c| Some(c.stat.nr_periods as f64),
    ),
    (
        "nodediag_cgroup_cpu_throttled_periods_total",
        "Periods in which the cgroup used up its CPU quota and was throttled (cgroup cpu.stat nr_throttled).",
        |c| Some(c.stat.nr_throttled as f64),
    ),
    (
        "nodediag_cgroup_cpu_throttled_seconds_total",
        "Time the cgroup's tasks spent throttled (cgroup v1 cpu.stat throttled_time, v2 throttled_usec).",
        |c| Some(c.stat.throttled_ns as f64 / 1e9),
    ),
    (
        "nodediag_cgroup_cpu_usage_seconds_total",
        "CPU time used by the cgroup (cgroup v1 cpuacct.usage, v2 cpu.stat usage_usec).",
        |c| c.stat.usage_ns.map(|u| u as f64 / 1e9),
    ),
];

/// The counters: they change every round.
pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<CgroupSample>() else {
        return Ok(());
    };
    let series = limited(s);
    for (name, help, value) in COUNTERS {
        let values = series
            .iter()
            .filter_map(|(labels, cg)| Some((with_names(labels), value(cg)?)));
        e.counter(name, help, values)?;
    }
    Ok(())
}

fn with_names<'a>([ns, pod, container]: &[&'a str; 3]) -> [(&'static str, &'a str); 3] {
    [("namespace", *ns), ("pod", *pod), ("container", *container)]
}

/// The limits: they change when a pod is resized, comes or goes.
pub struct Limits;

impl SteadyFamilies for Limits {
    /// The labels and limit of every limited cgroup.
    type Rows<'a> = Vec<([&'a str; 3], CpuQuota)>;

    fn rows(snap: &Snapshot) -> Option<Self::Rows<'_>> {
        let (_, s) = snap.latest::<CgroupSample>()?;
        let rows = limited(s)
            .into_iter()
            .filter_map(|(labels, cg)| Some((labels, cg.quota?)))
            .collect();
        Some(rows)
    }

    fn encode(rows: Self::Rows<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
        e.gauge(
            "nodediag_cgroup_cpu_limit_cores",
            "CPU limit in cores: quota / period (cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us, v2 cpu.max).",
            rows.iter()
                .map(|(labels, quota)| (with_names(labels), quota.cores())),
        )
    }
}

/// (namespace, pod, container) labels of every limited cgroup. Unknown names fall
/// back to the pod UID and the short container id. A label set seen twice (two
/// cgroups of one container name during a restart) keeps its first cgroup, so the
/// exposition never repeats a series.
fn limited(s: &CgroupSample) -> Vec<([&str; 3], &CpuCgroup)> {
    let cgroups = s.pods.iter().map(|p| 1 + p.containers.len()).sum();
    let mut seen = HashSet::with_capacity(cgroups);
    let mut out = Vec::with_capacity(cgroups);
    for p in &s.pods {
        let ns = p.namespace.as_deref().unwrap_or_default();
        let pod = p.pod.as_deref().unwrap_or(&p.pod_uid);
        let pod_row = ("", &p.cgroup);
        let container_rows = p.containers.iter().map(|c| {
            let name = c
                .container
                .as_deref()
                .unwrap_or_else(|| short_id(&c.container_id));
            (name, &c.cgroup)
        });
        for (container, cg) in std::iter::once(pod_row).chain(container_rows) {
            let labels = [ns, pod, container];
            if cg.quota.is_some() && seen.insert(labels) {
                out.push((labels, cg));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::cgroup::{CgroupVersion, ContainerCpu, PodCpu};
    use crate::collect::pods::Qos;
    use crate::kernel::cgroup::{CpuQuota, CpuStat};
    use crate::metrics::exposition::{Exposition, Format};
    use crate::metrics::steady::Steady;
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn cg(path: &str, quota: Option<u64>) -> CpuCgroup {
        CpuCgroup {
            path: path.into(),
            quota: quota.map(|q| CpuQuota {
                quota_us: q,
                period_us: 100_000,
            }),
            stat: CpuStat {
                nr_periods: 120,
                nr_throttled: 30,
                throttled_ns: 1_500_000_000,
                usage_ns: Some(2_250_000_000),
            },
        }
    }

    fn container(id: &str, name: Option<&str>, quota: Option<u64>) -> ContainerCpu {
        ContainerCpu {
            container_id: id.into(),
            runtime: None,
            container: name.map(Into::into),
            cgroup: cg(&format!("/kubepods/podx/{id}"), quota),
        }
    }

    fn render_with(pods: Vec<PodCpu>) -> String {
        let store = Arc::new(Store::new("n".into(), Duration::from_secs(60)));
        store.register("cgroup", Duration::from_secs(15));
        let s = CgroupSample {
            version: CgroupVersion::V2,
            mount_point: "/sys/fs/cgroup".into(),
            kubepods: Some("/kubepods".into()),
            kernel_release: None,
            cfs_bandwidth_fix: None,
            pods,
            unavailable: vec![],
            counters: Default::default(),
        };
        store.record("cgroup", SystemTime::now(), Duration::ZERO, Ok(Arc::new(s)));
        let mut e = Exposition::of_signal::<crate::collect::CgroupSample>(store, encode);
        e.add_steady("cgroup", Steady::of::<Limits>());
        e.text(Format::Text)
    }

    #[test]
    fn only_limited_cgroups_and_unique_label_sets() {
        let out = render_with(vec![PodCpu {
            pod_uid: "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9".into(),
            qos: Qos::Burstable,
            namespace: Some("shop".into()),
            pod: Some("cart-0".into()),
            cgroup: cg("/kubepods/podx", Some(150_000)),
            containers: vec![
                container("aaaaaaaaaaaaaaaa", Some("app"), Some(50_000)),
                container("bbbbbbbbbbbbbbbb", Some("app"), Some(50_000)),
                container("cccccccccccccccc", None, Some(100_000)),
                container("dddddddddddddddd", Some("sidecar"), None),
            ],
        }]);
        let app = r#"{namespace="shop",pod="cart-0",container="app"}"#;
        assert!(
            out.contains(&format!("nodediag_cgroup_cpu_limit_cores{app} 0.5\n")),
            "{out}"
        );
        assert!(out.contains(&format!(
            "nodediag_cgroup_cpu_throttled_periods_total{app} 30\n"
        )));
        assert!(out.contains(&format!("nodediag_cgroup_cpu_periods_total{app} 120\n")));
        assert!(out.contains(&format!(
            "nodediag_cgroup_cpu_throttled_seconds_total{app} 1.5\n"
        )));
        assert!(out.contains(&format!(
            "nodediag_cgroup_cpu_usage_seconds_total{app} 2.25\n"
        )));
        assert_eq!(
            out.matches(&format!("nodediag_cgroup_cpu_periods_total{app}"))
                .count(),
            1
        );
        assert!(out.contains(
            r#"nodediag_cgroup_cpu_limit_cores{namespace="shop",pod="cart-0",container=""} 1.5"#
        ));
        assert!(
            out.contains(r#"container="cccccccccccc"} 1"#),
            "short id stands in: {out}"
        );
        assert!(!out.contains("sidecar"), "no limit, no series");
        assert!(out.contains("# TYPE nodediag_cgroup_cpu_throttled_seconds_total counter"));
    }

    #[test]
    fn no_limited_cgroup_no_families() {
        let out = render_with(vec![]);
        assert!(!out.contains("nodediag_cgroup_"), "{out}");
    }
}
