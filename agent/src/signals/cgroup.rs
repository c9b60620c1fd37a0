//! CPU throttling of every pod and container cgroup, cgroup v1 and v2.

use super::{Schedule, Signal};
use crate::collect::cgroup::{CgroupCollector, CgroupSample};
use crate::collect::{self, Collector};
use crate::diagnose::{cgroup, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::http::Route;
use crate::metrics::steady::Steady;
use crate::sample::CollectError;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub struct Cgroup;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "CPU throttling")]
pub struct CgroupArgs {
    /// Sampling interval of the cgroup (CPU throttling) collector [default: --interval].
    #[arg(id = "collector.cgroup.interval", long = "collector.cgroup.interval", env = "NODEDIAG_COLLECTOR_CGROUP_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the cgroup (CPU throttling) collector.
    #[arg(
        id = "no-collector.cgroup",
        long = "no-collector.cgroup",
        env = "NODEDIAG_NO_COLLECTOR_CGROUP"
    )]
    pub disabled: bool,

    /// Where the host's /sys/fs/cgroup is mounted [default: each cgroup mount point of
    /// the host's mount table under --path.rootfs, else under --path.sysfs].
    #[arg(long = "path.cgroup", env = "NODEDIAG_PATH_CGROUP", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,

    #[command(flatten)]
    pub thresholds: cgroup::Thresholds,
}

impl Signal for Cgroup {
    type Sample = CgroupSample;
    type Args = CgroupArgs;
    const FINDINGS: &'static [&'static FindingDef] = cgroup::FINDINGS;

    fn schedule(args: &CgroupArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(
        args: &CgroupArgs,
        ctx: &collect::Context,
    ) -> impl Collector<Sample = CgroupSample> {
        KernelJudged(
            CgroupCollector::new(ctx.root.clone(), args.cgroup_root.clone())
                .sharing_mounts(ctx.mounts.clone()),
        )
    }

    fn rules(args: &CgroupArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| cgroup::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &CgroupSample) -> String {
        crate::report::cgroup::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::cgroup::encode(snap, e)
    }

    const STEADY_METRICS: Option<Steady> = Some(Steady::of::<crate::metrics::cgroup::Limits>());

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::cgroup::section(out, snap, now)
    }

    fn routes() -> Vec<Route> {
        crate::http::cgroup::routes()
    }
}

/// The cgroup collector with the rules' verdict on its kernel added to each sample:
/// `cfs_bandwidth_fix` is a judgement about kernel versions, which belongs to the
/// rules, and the collector below them cannot ask them.
struct KernelJudged(CgroupCollector);

impl Collector for KernelJudged {
    type Sample = CgroupSample;

    fn collect(&mut self) -> Result<CgroupSample, CollectError> {
        let mut s = self.0.collect()?;
        s.cfs_bandwidth_fix = cgroup::cfs_bandwidth_fix(s.kernel_release.as_deref());
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostRoot;
    use std::path::Path;

    fn write(base: &Path, rel: &str, text: &str) {
        let p = base.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn samples_carry_the_rules_verdict_on_their_kernel() {
        let t = tempfile::tempdir().unwrap();
        let b = t.path();
        write(
            b,
            "proc/1/mountinfo",
            "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        );
        write(b, "rootfs/sys/fs/cgroup/cgroup.controllers", "cpu\n");
        let root = HostRoot {
            proc: b.join("proc"),
            sys: b.join("sys"),
            rootfs: b.join("rootfs"),
        };
        let mut c = KernelJudged(CgroupCollector::new(root, None));
        assert_eq!(c.collect().unwrap().cfs_bandwidth_fix, None, "no osrelease");
        for (release, fix) in [("4.19.0-21-amd64\n", false), ("6.1.0-18-amd64\n", true)] {
            write(b, "proc/sys/kernel/osrelease", release);
            let s = c.collect().unwrap();
            assert_eq!(s.kernel_release.as_deref(), Some(release.trim()));
            assert_eq!(s.cfs_bandwidth_fix, Some(fix), "{release}");
        }
    }
}
