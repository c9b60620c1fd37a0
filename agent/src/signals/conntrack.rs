//! Conntrack: table usage, its peak between samples and failure counters of the host
//! network namespace, and which pods fill the table (a dump, on request or when the
//! table is high).

use super::{Parts, Schedule, Signal};
use crate::collect::conntrack::{ConntrackCollector, ConntrackSample, Levels, Watch};
use crate::collect::conntrack_dumper::{TopBudget, TopDumper};
use crate::collect::{self, Collector};
use crate::diagnose::{conntrack, FindingDef, RuleSet};
use crate::flags::{parse_duration, parse_duration_or_zero};
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

    /// Read the entry count this often between samples and keep its peak, so a table
    /// that filled between two samples is still seen full; 0 turns the reads off.
    #[arg(long = "conntrack.peak-interval", env = "NODEDIAG_CONNTRACK_PEAK_INTERVAL", default_value = "1s", value_parser = parse_duration_or_zero, value_name = "DURATION")]
    pub peak_interval: Duration,

    /// A dump of the table (GET /api/v1/conntrack/top, or the collector's when the
    /// table is high) stops after this many entries and says it was cut.
    #[arg(long = "conntrack.top-max-entries", env = "NODEDIAG_CONNTRACK_TOP_MAX_ENTRIES", default_value = "100000", value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub top_max_entries: u64,

    /// A dump of the table stops after this long and says it was cut.
    #[arg(long = "conntrack.top-timeout", env = "NODEDIAG_CONNTRACK_TOP_TIMEOUT", default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub top_timeout: Duration,

    #[command(flatten)]
    pub thresholds: conntrack::Thresholds,
}

impl ConntrackArgs {
    fn dumper(&self, ctx: &collect::Context) -> Arc<TopDumper> {
        let budget = TopBudget {
            max_entries: self.top_max_entries,
            timeout: self.top_timeout,
        };
        Arc::new(TopDumper::new(ctx.root.clone(), ctx.netlink, budget))
    }

    fn collector_with(&self, ctx: &collect::Context, dumper: Arc<TopDumper>) -> ConntrackCollector {
        let watch = Watch {
            levels: Levels {
                full_ratio: self.thresholds.full_ratio,
                high_ratio: self.thresholds.high_ratio,
            },
            peak_interval: self.peak_interval,
            dump_spacing: ctx.window,
        };
        ConntrackCollector::new(ctx.root.clone(), ctx.netlink, watch, dumper)
    }
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
        args: &ConntrackArgs,
        ctx: &collect::Context,
    ) -> impl Collector<Sample = ConntrackSample> {
        args.collector_with(ctx, args.dumper(ctx))
    }

    /// The collector's dumps when the table is high and the endpoint's on request go
    /// through one dumper: one dump at a time, a recent one shared.
    fn parts(args: &ConntrackArgs, ctx: &collect::Context) -> Parts {
        let dumper = args.dumper(ctx);
        Parts {
            collector: Box::new(args.collector_with(ctx, dumper.clone())),
            routes: crate::http::conntrack::routes(dumper),
        }
    }

    fn rules(args: &ConntrackArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| conntrack::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &ConntrackSample) -> String {
        crate::report::conntrack::summary(sample)
    }

    fn metrics(snap: &Snapshot, e: &mut DescriptorEncoder) -> std::fmt::Result {
        crate::metrics::conntrack::encode(snap, e)
    }

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::conntrack::section(out, snap, now)
    }
}
