//! NICs: link state, speed, duplex, carrier and error counters of every interface.

use super::{Schedule, Signal};
use crate::collect::nic::{NicCollector, NicSample};
use crate::collect::{self, Collector};
use crate::diagnose::{nic, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::metrics::steady::Steady;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::time::Duration;

pub struct Nic;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "NIC")]
pub struct NicArgs {
    /// Sampling interval of the NIC collector [default: --interval].
    #[arg(id = "collector.nic.interval", long = "collector.nic.interval", env = "NODEDIAG_COLLECTOR_NIC_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the NIC collector.
    #[arg(
        id = "no-collector.nic",
        long = "no-collector.nic",
        env = "NODEDIAG_NO_COLLECTOR_NIC"
    )]
    pub disabled: bool,

    #[command(flatten)]
    pub thresholds: nic::Thresholds,
}

impl Signal for Nic {
    type Sample = NicSample;
    type Args = NicArgs;
    const FINDINGS: &'static [&'static FindingDef] = nic::FINDINGS;

    fn schedule(args: &NicArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(_args: &NicArgs, ctx: &collect::Context) -> impl Collector<Sample = NicSample> {
        NicCollector::new(ctx.root.clone(), ctx.netlink)
    }

    fn rules(args: &NicArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| nic::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &NicSample) -> String {
        crate::report::nic::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::nic::encode(snap, e)
    }

    const STEADY_METRICS: Option<Steady> = Some(Steady::of::<crate::metrics::nic::Links>());
}
