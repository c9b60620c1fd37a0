//! The kernel log: conntrack "table full", OOM kills, stuck netdev unregistration,
//! read-only remounts, followed from /dev/kmsg.

use super::{Schedule, Signal};
use crate::collect::kmsg::{KmsgCollector, KmsgSample};
use crate::collect::{self, Collector};
use crate::diagnose::{kmsg, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::http::Route;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub struct Kmsg;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kernel log")]
pub struct KmsgArgs {
    /// How often the kmsg collector publishes what the kernel log follower matched
    /// [default: --interval].
    #[arg(id = "collector.kmsg.interval", long = "collector.kmsg.interval", env = "NODEDIAG_COLLECTOR_KMSG_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the kernel log follower.
    #[arg(
        id = "no-collector.kmsg",
        long = "no-collector.kmsg",
        env = "NODEDIAG_NO_COLLECTOR_KMSG"
    )]
    pub disabled: bool,

    /// The host's kernel log device, followed by the kmsg collector
    /// [default: <path.rootfs>/dev/kmsg].
    #[arg(long = "path.kmsg", env = "NODEDIAG_PATH_KMSG", value_name = "FILE")]
    pub path: Option<PathBuf>,

    #[command(flatten)]
    pub thresholds: kmsg::Thresholds,
}

impl KmsgArgs {
    pub fn path(&self, ctx: &collect::Context) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| ctx.root.host_path("/dev/kmsg"))
    }
}

impl Signal for Kmsg {
    type Sample = KmsgSample;
    type Args = KmsgArgs;
    const FINDINGS: &'static [&'static FindingDef] = kmsg::FINDINGS;

    fn schedule(args: &KmsgArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(args: &KmsgArgs, ctx: &collect::Context) -> impl Collector<Sample = KmsgSample> {
        KmsgCollector::new(ctx.root.clone(), args.path(ctx))
    }

    fn rules(args: &KmsgArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| kmsg::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &KmsgSample) -> String {
        crate::report::kmsg::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::kmsg::encode(snap, e)
    }

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::kmsg::section(out, snap, now)
    }

    fn routes() -> Vec<Route> {
        crate::http::kmsg::routes()
    }
}
