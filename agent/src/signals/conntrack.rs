//! Conntrack: table usage and failure counters of the host network namespace.

use super::{Schedule, Signal};
use crate::collect::conntrack::{ConntrackCollector, ConntrackSample};
use crate::collect::{self, Collector};
use crate::diagnose::{conntrack, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::metrics::encode::Encoder;
use crate::store::Snapshot;
use std::time::Duration;

pub struct Conntrack;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Conntrack")]
pub struct ConntrackArgs {
    /// Sampling interval of the conntrack collector [default: --interval].
    #[arg(id = "collector.conntrack.interval", long = "collector.conntrack.interval", env = "NODEDIAG_COLLECTOR_CONNTRACK_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the conntrack collector.
    #[arg(
        id = "no-collector.conntrack",
        long = "no-collector.conntrack",
        env = "NODEDIAG_NO_COLLECTOR_CONNTRACK"
    )]
    pub disabled: bool,

    #[command(flatten)]
    pub thresholds: conntrack::Thresholds,
}

impl Signal for Conntrack {
    type Sample = ConntrackSample;
    type Args = ConntrackArgs;
    const FINDINGS: &'static [&'static FindingDef] = conntrack::FINDINGS;

    fn schedule(args: &ConntrackArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(
        _args: &ConntrackArgs,
        ctx: &collect::Context,
    ) -> impl Collector<Sample = ConntrackSample> {
        ConntrackCollector::new(ctx.root.clone(), ctx.netlink)
    }

    fn rules(args: &ConntrackArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| conntrack::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &ConntrackSample) -> String {
        crate::report::conntrack::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut Encoder) {
        crate::metrics::conntrack::render(snap, e)
    }
}
