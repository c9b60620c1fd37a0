//! Node pressure: memory, PSI, PIDs, file handles, inotify, neighbour tables,
//! forwarding, OOM kills.

use super::{Schedule, Signal};
use crate::collect::pressure::{PressureCollector, PressureSample};
use crate::collect::{self, Collector};
use crate::diagnose::{oom, pressure, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::time::{Duration, SystemTime};

pub struct Pressure;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Node pressure")]
pub struct PressureArgs {
    /// Sampling interval of the pressure collector [default: --interval].
    #[arg(id = "collector.pressure.interval", long = "collector.pressure.interval", env = "NODEDIAG_COLLECTOR_PRESSURE_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// How often every process's descriptors are read to count inotify instances, in
    /// whole rounds of the collector, at most every round. The rounds between read
    /// the processes first seen in the last minute and the watches of every holder:
    /// only instances a process opens more than a minute after it started wait for
    /// this.
    #[arg(id = "inotify.interval", long = "inotify.interval", env = "NODEDIAG_INOTIFY_INTERVAL", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub inotify_interval: Duration,

    /// Disable the pressure collector (memory, PSI, PIDs, files, inotify, neighbours,
    /// forwarding, OOM kills).
    #[arg(
        id = "no-collector.pressure",
        long = "no-collector.pressure",
        env = "NODEDIAG_NO_COLLECTOR_PRESSURE"
    )]
    pub disabled: bool,

    #[command(flatten)]
    pub thresholds: pressure::Thresholds,
}

impl Signal for Pressure {
    type Sample = PressureSample;
    type Args = PressureArgs;
    const FINDINGS: &'static [&'static FindingDef] = pressure::FINDINGS;

    fn schedule(args: &PressureArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(
        args: &PressureArgs,
        ctx: &collect::Context,
    ) -> impl Collector<Sample = PressureSample> {
        PressureCollector::new(
            ctx.root.clone(),
            args.interval.unwrap_or(ctx.interval),
            args.inotify_interval,
        )
    }

    fn rules(args: &PressureArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| {
            pressure::rules(snap, &t, ctx, out);
            oom::rules(snap, ctx, out);
        })
    }

    fn summary(sample: &PressureSample) -> String {
        crate::report::pressure::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::pressure::encode(snap, e)
    }

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::pressure::section(out, snap, now)
    }
}
