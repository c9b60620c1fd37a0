//! The registry of signals. A signal is everything nodediag does about one kernel
//! source: its collector and sample type, its flags, its rules and findings, its
//! metrics, its report section and its API routes. Each is declared once, in its own
//! file here, by implementing [`Signal`]; the one line in [`registry!`] below puts it
//! to work in every layer. Adding a signal means new files for it and one line there.
//!
//! The layers below (collect, diagnose, metrics, report, http) know nothing of the
//! registry: they take what it hands them, so data flows one way.

mod cgroup;
mod conntrack;
mod disk;
mod dns;
mod kmsg;
mod netns;
mod nic;
mod pressure;

use crate::collect::{self, Collector, Enabled};
use crate::diagnose::{Evaluation, FindingDef, RuleContext, RuleSet};
use crate::http::Route;
use crate::metrics::exposition::{EncodeFn, Exposition};
use crate::metrics::steady::Steady;
use crate::report;
use crate::sample::{AnySample, Sample};
use crate::store::{Snapshot, Store};
use prometheus_client::encoding::DescriptorEncoder;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One signal, declared in one place.
pub trait Signal: 'static {
    type Sample: Sample;
    /// The signal's flags: its collector's interval and switch, its options, its
    /// finding thresholds.
    type Args: clap::Args + clap::FromArgMatches + Clone + std::fmt::Debug + Send + Sync;

    /// Every finding the signal's rules can produce.
    const FINDINGS: &'static [&'static FindingDef];

    /// Whether the collector runs, and on which interval of its own.
    fn schedule(args: &Self::Args) -> Schedule;

    fn collector(
        args: &Self::Args,
        ctx: &collect::Context,
    ) -> impl Collector<Sample = Self::Sample>;

    /// The rules, their thresholds bound.
    fn rules(args: &Self::Args) -> RuleSet;

    /// The collector's line in the report.
    fn summary(sample: &Self::Sample) -> String;

    /// The signal's families, encoded from its own collector's latest sample. The
    /// encoding is kept until that collector records again, so it reads no other
    /// collector's samples.
    fn metrics(_snap: &Snapshot, _e: &mut DescriptorEncoder) -> std::fmt::Result {
        Ok(())
    }

    /// The signal's families that seldom change (limits, link settings, which pod
    /// a veth belongs to), encoded again only when what they read changes; they
    /// come before [`Signal::metrics`]'s.
    const STEADY_METRICS: Option<Steady> = None;

    /// A section of the report after the findings, when there is something to say.
    fn report(_out: &mut String, _snap: &Snapshot, _now: SystemTime) {}

    /// Endpoints under `/api/v1/` of the signal's own.
    fn routes() -> Vec<Route> {
        Vec::new()
    }

    /// The collector and the endpoints, built together from the flags so that they
    /// can share what both use (the conntrack signal's one dump at a time). Most
    /// signals keep this default. The collector is dropped unused when disabled:
    /// building it must start nothing.
    fn parts(args: &Self::Args, ctx: &collect::Context) -> Parts {
        Parts {
            collector: Box::new(Self::collector(args, ctx)),
            routes: Self::routes(),
        }
    }
}

/// What [`Signal::parts`] builds.
pub struct Parts {
    pub collector: Box<dyn collect::DynCollector>,
    pub routes: Vec<Route>,
}

/// A collector's switch and own interval, as its flags give them.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub disabled: bool,
    pub interval: Option<Duration>,
}

/// What a signal is without its flags: enough to render and to look findings up.
pub struct SignalDef {
    pub name: &'static str,
    pub findings: &'static [&'static FindingDef],
    pub report: report::Section,
    pub metrics: EncodeFn,
    pub steady_metrics: Option<Steady>,
}

impl SignalDef {
    const fn of<S: Signal>() -> Self {
        Self {
            name: S::Sample::COLLECTOR,
            findings: S::FINDINGS,
            report: report::Section {
                collector: S::Sample::COLLECTOR,
                summary: summary_of::<S>,
                detail: S::report,
            },
            metrics: S::metrics,
            steady_metrics: S::STEADY_METRICS,
        }
    }
}

fn summary_of<S: Signal>(sample: &dyn AnySample) -> String {
    sample
        .downcast::<S::Sample>()
        .map(S::summary)
        .unwrap_or_default()
}

/// The collectors the flags enable, every signal's rules, and their endpoints.
#[derive(Default)]
pub struct Built {
    pub collectors: Vec<Enabled>,
    /// Each signal's rules, under its name.
    pub rules: Vec<(&'static str, RuleSet)>,
    /// Every signal's endpoints, whether its collector runs or not.
    pub routes: Vec<Route>,
}

impl Built {
    fn add<S: Signal>(&mut self, args: &S::Args, ctx: &collect::Context) {
        let schedule = S::schedule(args);
        let parts = S::parts(args, ctx);
        if !schedule.disabled {
            self.collectors.push(Enabled {
                collector: parts.collector,
                interval: schedule.interval.unwrap_or(ctx.interval),
            });
        }
        self.rules.push((S::Sample::COLLECTOR, S::rules(args)));
        self.routes.extend(parts.routes);
    }
}

macro_rules! registry {
    ($($field:ident: $signal:ty),+ $(,)?) => {
        /// Every signal's flags, one group each.
        #[derive(Debug, Clone, clap::Args)]
        pub struct SignalArgs {
            $(
                #[command(flatten)]
                pub $field: <$signal as Signal>::Args,
            )+
        }

        /// Every signal, in the order the report shows their sections.
        pub static SIGNALS: &[SignalDef] = &[$(SignalDef::of::<$signal>()),+];

        impl SignalArgs {
            pub fn build(&self, ctx: &collect::Context) -> Built {
                let mut built = Built::default();
                $(built.add::<$signal>(&self.$field, ctx);)+
                built
            }
        }
    };
}

registry! {
    dns: dns::Dns,
    disk: disk::Disk,
    cgroup: cgroup::Cgroup,
    pressure: pressure::Pressure,
    kmsg: kmsg::Kmsg,
    netns: netns::Netns,
    conntrack: conntrack::Conntrack,
    nic: nic::Nic,
}

/// The finding `id`, and the collector whose samples its rule reads.
pub fn finding(id: &str) -> Option<(&'static FindingDef, &'static str)> {
    SIGNALS
        .iter()
        .find_map(|s| s.findings.iter().find(|d| d.id == id).map(|d| (*d, s.name)))
}

/// Every finding id, in registry order.
pub fn finding_ids() -> impl Iterator<Item = &'static str> {
    SIGNALS.iter().flat_map(|s| s.findings.iter().map(|d| d.id))
}

pub fn evaluate(
    snap: &Snapshot,
    window: Duration,
    rules: &[(&'static str, RuleSet)],
) -> Evaluation {
    crate::diagnose::evaluate(snap, &RuleContext { window }, rules)
}

pub fn render_report(snap: &Snapshot, now: SystemTime) -> String {
    report::render(snap, now, SIGNALS.iter().map(|s| &s.report))
}

/// What `/metrics` encodes: nodediag's own families, then each signal's from its
/// collector's latest sample in `store`.
pub fn metrics_exposition(store: Arc<Store>) -> Exposition {
    let mut exposition = Exposition::new(store);
    for s in SIGNALS {
        if let Some(steady) = s.steady_metrics {
            exposition.add_steady(s.name, steady);
        }
        exposition.add_signal(s.name, s.metrics);
    }
    exposition
}

/// What the HTTP layer serves beyond its own endpoints: `routes` are the built
/// signals' ([`Built::routes`]), `metrics` what `/metrics` encodes
/// ([`metrics_exposition`] and whatever the server adds).
pub fn http_view(routes: Vec<Route>, metrics: Arc<Exposition>) -> crate::http::View {
    crate::http::View {
        report: render_report,
        metrics,
        routes,
        finding: |id| finding(id).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn finding_ids_are_unique_and_snake_case() {
        let mut ids: Vec<_> = finding_ids().collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "a finding id is declared twice");
        assert!(ids
            .iter()
            .all(|id| id.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    #[test]
    fn every_signal_has_its_collector_flags_under_its_own_name() {
        let cli = crate::config::Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let longs: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
        for s in SIGNALS {
            for flag in [
                format!("collector.{}.interval", s.name),
                format!("no-collector.{}", s.name),
            ] {
                assert!(longs.contains(&flag.as_str()), "{}: no --{flag}", s.name);
            }
        }
    }

    #[test]
    fn the_built_collectors_carry_the_registry_names_in_order() {
        let args = crate::config::AgentArgs::defaults();
        let built = args.signals.build(&args.collect_context());
        let names: Vec<_> = built
            .collectors
            .iter()
            .map(|c| c.collector.name())
            .collect();
        let registry: Vec<_> = SIGNALS.iter().map(|s| s.name).collect();
        assert_eq!(names, registry);
        assert_eq!(built.rules.len(), SIGNALS.len());
    }
}
