//! Network namespaces, veth pairs and host-local IPAM, attributed to pods.

use super::{Schedule, Signal};
use crate::collect::netns::{NetnsCollector, NetnsSample};
use crate::collect::{self, Collector};
use crate::diagnose::{netns, FindingDef, RuleSet};
use crate::flags::parse_duration;
use crate::http::Route;
use crate::metrics::steady::Steady;
use crate::store::Snapshot;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub struct Netns;

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Network namespaces and CNI")]
pub struct NetnsArgs {
    /// Sampling interval of the netns collector (network namespaces, veths, IPAM)
    /// [default: --interval].
    #[arg(id = "collector.netns.interval", long = "collector.netns.interval", env = "NODEDIAG_COLLECTOR_NETNS_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Disable the netns collector.
    #[arg(
        id = "no-collector.netns",
        long = "no-collector.netns",
        env = "NODEDIAG_NO_COLLECTOR_NETNS"
    )]
    pub disabled: bool,

    /// A directory where runtimes pin network namespaces (repeatable, used as given,
    /// not under --path.rootfs). Replaces the defaults: /run/netns, /var/run/netns and
    /// /var/run/docker/netns under --path.rootfs.
    #[arg(
        long = "path.netns",
        env = "NODEDIAG_PATH_NETNS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub netns_dirs: Vec<PathBuf>,

    /// A directory of CNI network configurations (repeatable, used as given).
    /// Replaces the default /etc/cni/net.d under --path.rootfs.
    #[arg(
        long = "path.cni-conf",
        env = "NODEDIAG_PATH_CNI_CONF",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub cni_conf_dirs: Vec<PathBuf>,

    #[command(flatten)]
    pub thresholds: netns::Thresholds,
}

impl Signal for Netns {
    type Sample = NetnsSample;
    type Args = NetnsArgs;
    const FINDINGS: &'static [&'static FindingDef] = netns::FINDINGS;

    fn schedule(args: &NetnsArgs) -> Schedule {
        Schedule {
            disabled: args.disabled,
            interval: args.interval,
        }
    }

    fn collector(args: &NetnsArgs, ctx: &collect::Context) -> impl Collector<Sample = NetnsSample> {
        NetnsCollector::new(
            ctx.root.clone(),
            ctx.netlink,
            &args.netns_dirs,
            &args.cni_conf_dirs,
            netns::tunnel_overhead,
        )
    }

    fn rules(args: &NetnsArgs) -> RuleSet {
        let t = args.thresholds.clone();
        Box::new(move |snap, ctx, out| netns::rules(snap, &t, ctx, out))
    }

    fn summary(sample: &NetnsSample) -> String {
        crate::report::netns::summary(sample)
    }

    const STEADY_METRICS: Option<Steady> = Some(Steady::of::<crate::metrics::netns::Namespaces>());

    fn report(out: &mut String, snap: &Snapshot, now: SystemTime) {
        crate::report::netns::section(out, snap, now)
    }

    fn routes() -> Vec<Route> {
        crate::http::netns::routes()
    }
}
