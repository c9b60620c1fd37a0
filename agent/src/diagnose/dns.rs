//! dns_failures and dns_slow; the DNS figures over the window (per server, per
//! probed pod and the host) that the API and report show too; and the tie to
//! conntrack both ways: a DNS finding says when conntrack inserts failed, packets
//! were dropped or the input backlog overflowed in the same window, and the
//! conntrack findings say when DNS failed.

use super::window::{increase, span, within};
use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::dns::{totals::server_label, TargetKind};
use crate::collect::dns::{
    DnsSample, LookupResult, ProbeResult, QueryCounts, ResolverSettings, ServerChoice,
};
use crate::collect::ConntrackSample;
use crate::finding::worst_level;
use crate::flags::{parse_duration, parse_ratio};
use crate::sample::Unavailable;
use crate::store::Snapshot;
use crate::text::{round, round4};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

macro_rules! failures_remedy {
    () => {
        "Check the cluster DNS endpoints (kubectl -n kube-system get endpointslices -l k8s-app=kube-dns; the CoreDNS pods, their logs and restarts) and the path to them: the service's DNAT rules on this node (iptables-save or nft list ruleset, grep the server address) and NetworkPolicies blocking UDP or TCP port 53. Failures seen from the pods but not from the host point at the pod side (policies, the pod's resolv.conf); from both, at the server or the node's path to it."
    };
}
macro_rules! conntrack_advice {
    () => {
        " Conntrack inserts failed or conntrack dropped packets in the same window: the UDP conntrack race (kubernetes#56903) loses one of the A and AAAA queries glibc sends together from one socket, each loss a 5 s stall for the pod. Run NodeLocal DNSCache, set `options single-request-reopen` in the pods' dnsConfig, or move to a kernel with the conntrack clash-resolution fixes (upstream 5.0 and 5.6)."
    };
}
macro_rules! softnet_advice {
    () => {
        " The kernel dropped packets at a full input backlog in the same window (/proc/net/softnet_stat): raise net.core.netdev_max_backlog and spread receive processing (RPS, IRQ affinity)."
    };
}

pub const FAILURES: FindingDef = FindingDef {
    id: "dns_failures",
    remedy: failures_remedy!(),
};
/// dns_failures with conntrack failing in the same window: the same id, the race's
/// remedies added.
pub const FAILURES_WITH_CONNTRACK: FindingDef = FindingDef {
    id: "dns_failures",
    remedy: concat!(failures_remedy!(), conntrack_advice!()),
};
pub const FAILURES_WITH_BACKLOG: FindingDef = FindingDef {
    id: "dns_failures",
    remedy: concat!(failures_remedy!(), softnet_advice!()),
};
pub const FAILURES_WITH_BOTH: FindingDef = FindingDef {
    id: "dns_failures",
    remedy: concat!(failures_remedy!(), conntrack_advice!(), softnet_advice!()),
};
pub const SLOW: FindingDef = FindingDef {
    id: "dns_slow",
    remedy: "Look at CoreDNS: CPU throttling and memory (raise its requests and limits, or add replicas), its cache, and the latency of its upstream (the forward plugin's targets). Every name with fewer dots than ndots (5 in pods) is tried with each search domain first, each try an A and an AAAA query: use fully qualified names (a trailing dot), a lower ndots in the pods' dnsConfig, or NodeLocal DNSCache.",
};
pub const FINDINGS: &[&FindingDef] = &[&FAILURES, &SLOW];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "DNS")]
pub struct Thresholds {
    /// dns_failures is critical above this fraction of failed queries (or lookups)
    /// over the window; any failure is a warning.
    #[arg(id = "dns.failure-critical-ratio", long = "dns.failure-critical-ratio", env = "NODEDIAG_DNS_FAILURE_CRITICAL_RATIO", default_value = "0.05", value_parser = parse_ratio, value_name = "RATIO")]
    pub failure_critical_ratio: f64,

    /// dns_slow (warning) when the p99 of the lookups over the window, as a pod's
    /// getaddrinfo takes them (search list included), exceeds this.
    #[arg(id = "dns.slow", long = "dns.slow", env = "NODEDIAG_DNS_SLOW", default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub slow: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

/// Failures quoted in a finding or a view.
const EXAMPLES: usize = 5;
/// Pods named in a finding.
const PODS_NAMED: usize = 10;

/// Queries and lookups of some probes over the window, and their latencies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Probes that ran (rounds this target or server was probed in).
    pub probes: u32,
    /// Probes that could not run (the namespace went away, the thread overran).
    pub probe_errors: u32,
    pub queries: QueryCounts,
    pub failed_queries: u32,
    /// Failed over judged queries (the budget's cuts left out).
    pub failure_ratio: Option<f64>,
    pub lookups: u32,
    pub failed_lookups: u32,
    /// Failed lookups by how they failed (timeout, servfail, nxdomain for a name that
    /// must exist, answered for the one that must not, ...).
    pub lookup_failures: BTreeMap<&'static str, u32>,
    pub lookup_failure_ratio: Option<f64>,
    /// Lookups that succeeded, as the pod's getaddrinfo took them.
    pub lookup_p50_seconds: Option<f64>,
    pub lookup_p99_seconds: Option<f64>,
    pub lookup_max_seconds: Option<f64>,
    /// Queries that got a reply.
    pub query_p50_seconds: Option<f64>,
    pub query_p99_seconds: Option<f64>,
    /// Queries per judged lookup: the search list's fan-out.
    pub queries_per_lookup: Option<f64>,
    /// Probes in which glibc fell back to single-request (a lost reply of a pair).
    pub fallbacks: u32,
    /// Probes the round's budget cut short.
    pub cut_short: u32,
    /// The longest wait per try of these probes: a "timeout" is a wait this long.
    pub per_try_seconds: Option<f64>,
    /// The latest few failures: `team-a/web-1: kubernetes.default.svc.cluster.local
    /// AAAA: timeout after 0.94s`.
    pub examples: Vec<String>,
    /// Why probes could not run, the latest few.
    pub probe_error_examples: Vec<String>,
    /// The slowest successful lookups: `team-a/web-1: kubernetes.default 1.21s, 8 queries`.
    pub slowest: Vec<String>,
    #[serde(skip)]
    lookup_latencies: Vec<f64>,
    #[serde(skip)]
    query_latencies: Vec<f64>,
}

/// A failure quoted in [`Tally::examples`], formatted only if it is among the last
/// few: a window at 500 pods holds thousands, and formatting each was most of the
/// DNS figures' cost.
enum Example<'a> {
    Lookup {
        target: &'a str,
        name: &'a str,
        kind: &'static str,
    },
    Query {
        target: &'a str,
        failure: &'a str,
    },
}

impl std::fmt::Display for Example<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Lookup { target, name, kind } => write!(f, "{target}: {name}: lookup {kind}"),
            Self::Query { target, failure } => write!(f, "{target}: {failure}"),
        }
    }
}

/// A [`Tally`] being added up: the probes it quotes are kept by reference until
/// [`Pending::finish`] knows which it shows.
#[derive(Default)]
struct Pending<'a> {
    tally: Tally,
    examples: VecDeque<Example<'a>>,
    probe_errors: VecDeque<(&'a str, &'a str)>,
    /// Successful lookups, with the probe's target.
    successes: Vec<(&'a str, &'a LookupResult)>,
}

/// Keeps the last EXAMPLES of what is pushed: probes are added oldest first, and the
/// latest failures say most about now.
fn latest<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() == EXAMPLES {
        list.pop_front();
    }
    list.push_back(item);
}

impl<'a> Pending<'a> {
    fn add(&mut self, p: &'a ProbeResult) {
        let t = &mut self.tally;
        let target = &*p.target;
        if let Some(e) = &p.error {
            t.probe_errors += 1;
            latest(&mut self.probe_errors, (target, e.as_str()));
            return;
        }
        t.probes += 1;
        t.queries.merge(&p.queries);
        t.query_latencies.extend(&p.reply_latencies);
        t.fallbacks += u32::from(p.fell_back);
        t.cut_short += u32::from(p.cut_short);
        let per_try = round(p.per_try_seconds, 3);
        t.per_try_seconds = Some(t.per_try_seconds.map_or(per_try, |x| x.max(per_try)));
        for l in p.lookups.iter().filter(|l| l.judged()) {
            t.lookups += 1;
            match l.failure() {
                Some(kind) => {
                    t.failed_lookups += 1;
                    *t.lookup_failures.entry(kind).or_default() += 1;
                    if l.failures.is_empty() {
                        latest(
                            &mut self.examples,
                            Example::Lookup {
                                target,
                                name: &l.name,
                                kind,
                            },
                        );
                    }
                }
                None => {
                    t.lookup_latencies.push(l.elapsed_seconds);
                    self.successes.push((target, l));
                }
            }
            for f in &l.failures {
                latest(&mut self.examples, Example::Query { target, failure: f });
            }
        }
    }

    fn finish(mut self) -> Tally {
        let mut t = self.tally;
        let ratio = |n: u32, d: u32| (d > 0).then(|| round4(f64::from(n) / f64::from(d)));
        t.failed_queries = t.queries.failed();
        t.failure_ratio = ratio(t.failed_queries, t.queries.judged());
        t.lookup_failure_ratio = ratio(t.failed_lookups, t.lookups);
        t.queries_per_lookup =
            (t.lookups > 0).then(|| round(f64::from(t.queries.judged()) / f64::from(t.lookups), 2));
        let pct = |v: &mut Vec<f64>, p: f64| {
            v.sort_by(f64::total_cmp);
            super::disk::percentile(v, p).map(|s| round(s, 6))
        };
        t.lookup_p50_seconds = pct(&mut t.lookup_latencies, 0.5);
        t.lookup_p99_seconds = pct(&mut t.lookup_latencies, 0.99);
        t.lookup_max_seconds = t.lookup_latencies.last().map(|s| round(*s, 6));
        t.query_p50_seconds = pct(&mut t.query_latencies, 0.5);
        t.query_p99_seconds = pct(&mut t.query_latencies, 0.99);
        t.examples = self.examples.iter().map(Example::to_string).collect();
        t.probe_error_examples = self
            .probe_errors
            .iter()
            .map(|(target, e)| format!("{target}: {e}"))
            .collect();
        // Stable, so equal times keep the order the probes came in.
        self.successes
            .sort_by(|a, b| b.1.elapsed_seconds.total_cmp(&a.1.elapsed_seconds));
        t.slowest = self
            .successes
            .iter()
            .take(3)
            .map(|(target, l)| {
                format!(
                    "{target}: {} {:.3}s, {} queries",
                    l.name, l.elapsed_seconds, l.queries
                )
            })
            .collect();
        t
    }
}

impl Tally {
    /// The worse of the query and lookup failure ratios.
    pub fn worst_ratio(&self) -> f64 {
        self.failure_ratio
            .unwrap_or(0.0)
            .max(self.lookup_failure_ratio.unwrap_or(0.0))
    }

    pub fn failed(&self) -> bool {
        self.failed_queries > 0 || self.failed_lookups > 0
    }
}

/// One server over the window: every probe that asked it.
#[derive(Debug, Clone, Serialize)]
pub struct ServerView {
    pub server: String,
    #[serde(flatten)]
    pub tally: Tally,
    /// Pods probed with this server in the window, and those that saw a failure.
    pub pods_probed: usize,
    pub pods_with_failures: Vec<String>,
    /// Whether the host's probe of this server saw failures too.
    pub host_probes: u32,
    pub host_failed: bool,
}

#[derive(Default)]
struct ServerAcc<'a> {
    tally: Pending<'a>,
    probed: BTreeSet<&'a str>,
    failing: BTreeSet<&'a str>,
    host_probes: u32,
    host_failed: bool,
}

struct TargetAcc<'a> {
    tally: Pending<'a>,
    servers: BTreeSet<String>,
    last: SystemTime,
    latest: &'a ProbeResult,
}

/// One target (the host or a pod) over the window.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub target: String,
    pub kind: TargetKind,
    pub pod_uid: Option<String>,
    pub servers: Vec<String>,
    #[serde(serialize_with = "crate::time::serialize")]
    pub last_probed: SystemTime,
    /// As of its latest probe.
    pub resolver: Arc<ResolverSettings>,
    pub per_try_seconds: f64,
    #[serde(flatten)]
    pub tally: Tally,
}

/// What rose in the same window that explains lost DNS packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Correlation {
    /// conntrack `insert_failed` rise (None without conntrack samples).
    pub conntrack_insert_failed: Option<u64>,
    /// conntrack `drop` + `early_drop` rise.
    pub conntrack_dropped: Option<u64>,
    /// `/proc/net/softnet_stat` input-backlog drops rise.
    pub softnet_dropped: Option<u64>,
}

impl Correlation {
    fn conntrack(&self) -> bool {
        self.conntrack_insert_failed.unwrap_or(0) > 0 || self.conntrack_dropped.unwrap_or(0) > 0
    }

    fn backlog(&self) -> bool {
        self.softnet_dropped.unwrap_or(0) > 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DnsView<'a> {
    #[serde(serialize_with = "crate::time::serialize")]
    pub sampled_at: SystemTime,
    pub window_seconds: f64,
    pub rounds: usize,
    pub server: &'a ServerChoice,
    pub names: &'a [String],
    pub absent_name: Option<&'a str>,
    pub budget_seconds: f64,
    pub pod_namespaces: usize,
    pub servers: Vec<ServerView>,
    /// The host first, then the pods by name.
    pub targets: Vec<TargetView>,
    pub correlation: Correlation,
    pub unavailable: &'a [Unavailable],
}

/// The DNS figures over `window` (the store's window when None).
pub fn view(snapshot: &Snapshot, window: Option<Duration>) -> Option<DnsView<'_>> {
    build(snapshot, window, true)
}

/// The view without its targets: what the rules read. Tallying every pod probed in
/// the window, only to drop it, was most of the rules' work at 500 pods.
fn servers_view(snapshot: &Snapshot, window: Duration) -> Option<DnsView<'_>> {
    build(snapshot, Some(window), false)
}

fn build(snapshot: &Snapshot, window: Option<Duration>, with_targets: bool) -> Option<DnsView<'_>> {
    let history = snapshot.history::<DnsSample>();
    let &(at, latest) = history.last()?;
    let window = window.unwrap_or(snapshot.window);
    let recent = within(&history, window);

    let mut servers: BTreeMap<String, ServerAcc> = BTreeMap::new();
    let mut targets: BTreeMap<(bool, &str), TargetAcc> = BTreeMap::new();
    for (t, sample) in recent {
        for p in &sample.probes {
            let server = server_label(&p.server);
            let s = servers.entry(server.clone()).or_default();
            s.tally.add(p);
            let pod = p.kind == TargetKind::Pod;
            // A probe that could not run (its pod went away meanwhile) is no DNS failure.
            let failed = p.queries.failed() > 0 || p.lookups.iter().any(|l| l.failure().is_some());
            if pod {
                s.probed.insert(&p.target);
                if failed {
                    s.failing.insert(&p.target);
                }
            } else {
                s.host_probes += 1;
                s.host_failed |= failed;
            }
            if !with_targets {
                continue;
            }
            let e = targets
                .entry((pod, &*p.target))
                .or_insert_with(|| TargetAcc {
                    tally: Pending::default(),
                    servers: BTreeSet::new(),
                    last: *t,
                    latest: p,
                });
            e.tally.add(p);
            e.servers.insert(server);
            if *t >= e.last {
                e.last = *t;
                e.latest = p;
            }
        }
    }
    let servers = servers
        .into_iter()
        .map(|(server, a)| ServerView {
            server,
            tally: a.tally.finish(),
            pods_probed: a.probed.len(),
            pods_with_failures: a.failing.into_iter().map(str::to_string).collect(),
            host_probes: a.host_probes,
            host_failed: a.host_failed,
        })
        .collect();
    let targets = targets
        .into_iter()
        .map(|((_, target), a)| TargetView {
            target: target.to_string(),
            kind: a.latest.kind,
            pod_uid: a.latest.pod_uid.as_deref().map(str::to_string),
            servers: a.servers.into_iter().collect(),
            last_probed: a.last,
            resolver: a.latest.resolver.clone(),
            per_try_seconds: round(a.latest.per_try_seconds, 3),
            tally: a.tally.finish(),
        })
        .collect();
    Some(DnsView {
        sampled_at: at,
        window_seconds: span(recent).as_secs_f64(),
        rounds: recent.len(),
        server: &latest.server,
        names: &latest.names,
        absent_name: latest.absent_name.as_deref(),
        budget_seconds: latest.budget_seconds,
        pod_namespaces: latest.pod_namespaces,
        servers,
        targets,
        correlation: correlation(snapshot, recent, window),
        unavailable: &latest.unavailable,
    })
}

fn correlation(
    snapshot: &Snapshot,
    dns: &[(SystemTime, &DnsSample)],
    window: Duration,
) -> Correlation {
    let conntrack = snapshot.history::<ConntrackSample>();
    let conntrack = within(&conntrack, window);
    let stats = || conntrack.iter().filter_map(|(_, s)| s.stats.as_ref());
    let softnet: Vec<u64> = dns.iter().filter_map(|(_, s)| s.softnet_dropped).collect();
    Correlation {
        conntrack_insert_failed: (!conntrack.is_empty())
            .then(|| increase(stats().filter_map(|s| s.insert_failed))),
        conntrack_dropped: (!conntrack.is_empty())
            .then(|| increase(conntrack.iter().filter_map(|(_, s)| s.dropped()))),
        softnet_dropped: (!softnet.is_empty()).then(|| increase(softnet)),
    }
}

pub fn rules(snapshot: &Snapshot, t: &Thresholds, ctx: &RuleContext, out: &mut Vec<Finding>) {
    let Some(v) = servers_view(snapshot, ctx.window) else {
        return;
    };
    for s in &v.servers {
        out.extend(failures(s, &v, t));
        out.extend(slow(s, &v, t));
    }
}

fn seen_from(s: &ServerView) -> String {
    let mut from = match s.pods_with_failures.len() {
        0 => String::new(),
        1 => s.pods_with_failures[0].clone(),
        n => format!("{n} of {} pods probed", s.pods_probed),
    };
    if s.host_failed {
        from = if from.is_empty() {
            "the host".into()
        } else {
            format!("{from} and the host")
        };
    }
    from
}

fn failures(s: &ServerView, v: &DnsView, t: &Thresholds) -> Option<Finding> {
    let tally = &s.tally;
    if !tally.failed() {
        return None;
    }
    let ratio = tally.worst_ratio();
    let levels = [
        (t.failure_critical_ratio, Severity::Critical),
        (0.0, Severity::Warning),
    ];
    let (severity, _) = worst_level(&levels, |l| ratio > l).unwrap_or((Severity::Warning, 0.0));
    let c = v.correlation;
    let def = match (c.conntrack(), c.backlog()) {
        (false, false) => &FAILURES,
        (true, false) => &FAILURES_WITH_CONNTRACK,
        (false, true) => &FAILURES_WITH_BACKLOG,
        (true, true) => &FAILURES_WITH_BOTH,
    };
    let q = &tally.queries;
    let mut kinds: Vec<String> = [
        (q.timeout, "timeouts"),
        (q.servfail, "SERVFAIL"),
        (q.refused, "REFUSED"),
        (q.network_error, "network errors"),
        (q.other_rcode, "other errors"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if kinds.is_empty() {
        kinds.extend(
            tally
                .lookup_failures
                .iter()
                .map(|(k, n)| format!("{n} lookups {k}")),
        );
    }
    let mut f = Finding::new(
        def,
        severity,
        s.server.clone(),
        format!(
            "{} of {} DNS queries to {} failed in the last {:.0}s ({:.1}%: {}), {} of {} lookups; seen from {}",
            tally.failed_queries,
            q.judged(),
            s.server,
            v.window_seconds,
            tally.failure_ratio.unwrap_or(0.0) * 100.0,
            kinds.join(", "),
            tally.failed_lookups,
            tally.lookups,
            seen_from(s)
        ),
        v.sampled_at,
    )
    .with("queries", q.judged())
    .with("failed_queries", tally.failed_queries)
    .with("failure_ratio", tally.failure_ratio)
    .with("timeouts", q.timeout)
    .with("servfail", q.servfail)
    .with("refused", q.refused)
    .with("network_errors", q.network_error)
    .with("lookups", tally.lookups)
    .with("failed_lookups", tally.failed_lookups)
    .with("lookup_failure_ratio", tally.lookup_failure_ratio)
    .with("lookup_failures", serde_json::json!(tally.lookup_failures))
    .with(
        "pods",
        serde_json::json!(s
            .pods_with_failures
            .iter()
            .take(PODS_NAMED)
            .collect::<Vec<_>>()),
    )
    .with("pods_probed", s.pods_probed)
    .with("host_failed", s.host_failed)
    .with("examples", serde_json::json!(tally.examples))
    .with("fallbacks_to_single_request", tally.fallbacks)
    .with("per_try_seconds", tally.per_try_seconds)
    .with("threshold_ratio", t.failure_critical_ratio)
    .with("window_seconds", round(v.window_seconds, 1))
    .with("server_source", v.server.source.as_str());
    if tally.probe_errors > 0 {
        f = f.with("probe_errors", tally.probe_errors);
    }
    f = with_correlation(f, &c);
    Some(f)
}

fn with_correlation(mut f: Finding, c: &Correlation) -> Finding {
    for (name, rise) in [
        (
            "conntrack_insert_failed_in_window",
            c.conntrack_insert_failed,
        ),
        ("conntrack_dropped_in_window", c.conntrack_dropped),
        ("softnet_dropped_in_window", c.softnet_dropped),
    ] {
        if let Some(n) = rise.filter(|n| *n > 0) {
            f = f.with(name, n);
        }
    }
    if c.conntrack() {
        f.summary
            .push_str("; conntrack failed in the same window (the UDP insert race)");
    } else if c.backlog() {
        f.summary
            .push_str("; the kernel's input backlog dropped packets in the same window");
    }
    f
}

fn slow(s: &ServerView, v: &DnsView, t: &Thresholds) -> Option<Finding> {
    let tally = &s.tally;
    let p99 = tally.lookup_p99_seconds?;
    let threshold = t.slow.as_secs_f64();
    if p99 <= threshold {
        return None;
    }
    let secs = |v: Option<f64>| v.map_or("?".into(), |s| format!("{s:.3}s"));
    let f = Finding::new(
        &SLOW,
        Severity::Warning,
        s.server.clone(),
        format!(
            "DNS lookups via {} took {p99:.3}s at p99 over the last {:.0}s (over {threshold}s): p50 {}; single queries p99 {}, {} queries per lookup",
            s.server,
            v.window_seconds,
            secs(tally.lookup_p50_seconds),
            secs(tally.query_p99_seconds),
            tally.queries_per_lookup.map_or("?".into(), |n| n.to_string()),
        ),
        v.sampled_at,
    )
    .with("lookup_p50_seconds", tally.lookup_p50_seconds)
    .with("lookup_p99_seconds", p99)
    .with("lookup_max_seconds", tally.lookup_max_seconds)
    .with("query_p50_seconds", tally.query_p50_seconds)
    .with("query_p99_seconds", tally.query_p99_seconds)
    .with("queries_per_lookup", tally.queries_per_lookup)
    .with("lookups", tally.lookups - tally.failed_lookups)
    .with("slowest", serde_json::json!(tally.slowest))
    .with("fallbacks_to_single_request", tally.fallbacks)
    .with("threshold_seconds", threshold)
    .with("window_seconds", round(v.window_seconds, 1))
    .with("pods_probed", s.pods_probed);
    Some(with_correlation(f, &v.correlation))
}

/// The conntrack findings that explain lost DNS packets name the DNS failures of the
/// same window: `dns_failures_in_window` (failed queries, all servers).
pub fn attach_to_conntrack(snapshot: &Snapshot, ctx: &RuleContext, findings: &mut [Finding]) {
    let linked = [
        super::conntrack::INSERT_FAILED.id,
        super::conntrack::DROPS.id,
    ];
    if !findings.iter().any(|f| linked.contains(&f.id)) {
        return;
    }
    let Some(v) = servers_view(snapshot, ctx.window) else {
        return;
    };
    let failed: u32 = v.servers.iter().map(|s| s.tally.failed_queries).sum();
    if failed == 0 {
        return;
    }
    let servers: Vec<&str> = v
        .servers
        .iter()
        .filter(|s| s.tally.failed_queries > 0)
        .map(|s| s.server.as_str())
        .collect();
    for f in findings.iter_mut().filter(|f| linked.contains(&f.id)) {
        f.evidence.insert("dns_failures_in_window", failed.into());
        f.evidence
            .insert("dns_servers_failing", serde_json::json!(servers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::dns::{DomainSource, LookupResult, ServerSource};
    use crate::diagnose::testing::{add_samples, ctx, run_rules, store_with};
    use crate::kernel::conntrack::ConntrackStats;
    use crate::kernel::dns::exchange::SendMode;
    use crate::kernel::dns::search::Verdict;

    const SVC: &str = "kubernetes.default.svc.cluster.local";
    const ABSENT: &str = "nodediag-absent.invalid";

    /// One probe: `ok` healthy rounds' worth of queries (8 for each name), `timeouts`
    /// of them lost, each lookup taking `lookup_s`.
    fn probe(target: &str, timeouts: u32, lookup_s: f64) -> ProbeResult {
        let kind = if target == "host" {
            TargetKind::Host
        } else {
            TargetKind::Pod
        };
        let queries = QueryCounts {
            sent: 16,
            answer: 1,
            nodata: 1,
            nxdomain: 14 - timeouts,
            timeout: timeouts,
            ..QueryCounts::default()
        };
        let lookup = |name: &str, must_exist: bool, verdict: Verdict| LookupResult {
            name: name.into(),
            must_exist,
            verdict,
            answered_by: None,
            elapsed_seconds: lookup_s,
            queries: 8,
            failures: (0..timeouts)
                .map(|_| format!("{name} AAAA: timeout after 0.94s"))
                .collect(),
        };
        ProbeResult {
            target: target.into(),
            kind,
            pod_uid: (kind == TargetKind::Pod).then(|| format!("uid-{target}").into()),
            netns: None,
            pid: None,
            server: "10.96.0.10:53".parse().unwrap(),
            resolver: ResolverSettings {
                nameservers: vec![],
                search: vec!["default.svc.cluster.local".into()],
                ndots: 5,
                timeout_secs: 5,
                attempts: 2,
                mode: SendMode::Parallel,
                ignored: vec![],
            }
            .into(),
            per_try_seconds: 0.94,
            lookups: vec![
                lookup(SVC, true, Verdict::Answered),
                lookup(ABSENT, false, Verdict::NxDomain),
            ],
            queries,
            reply_latencies: vec![lookup_s / 4.0; (16 - timeouts) as usize],
            fell_back: timeouts > 0,
            final_mode: SendMode::Parallel,
            cut_short: false,
            elapsed_seconds: 2.0 * lookup_s,
            error: None,
        }
    }

    fn sample(probes: Vec<ProbeResult>, softnet: u64) -> DnsSample {
        DnsSample {
            server: ServerChoice {
                source: ServerSource::Kubelet,
                address: Some("10.96.0.10:53".parse().unwrap()),
                from: vec!["/var/lib/kubelet/config.yaml".into()],
                cluster_domain: "cluster.local".into(),
                cluster_domain_from: DomainSource::Kubelet,
            },
            names: vec![SVC.into(), ABSENT.into()],
            absent_name: Some(ABSENT.into()),
            budget_seconds: 7.5,
            pod_namespaces: 12,
            probes,
            softnet_dropped: Some(softnet),
            totals: vec![],
            unavailable: vec![],
        }
    }

    /// A round of the host and three pods; pod `web-1` loses `timeouts` queries.
    fn round(timeouts: u32, lookup_s: f64) -> DnsSample {
        sample(
            vec![
                probe("host", 0, 0.004),
                probe("team-a/web-0", 0, 0.004),
                probe("team-a/web-1", timeouts, lookup_s),
                probe("team-a/web-2", 0, 0.004),
            ],
            7,
        )
    }

    fn run(samples: Vec<DnsSample>) -> Vec<Finding> {
        run_rules(rules, &store_with(samples), &Thresholds::default())
    }

    fn ids(f: &[Finding]) -> Vec<&str> {
        f.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_healthy_window_has_no_finding_and_its_figures() {
        let store = store_with((0..4).map(|_| round(0, 0.004)));
        assert!(run_rules(rules, &store, &Thresholds::default()).is_empty());
        let snap = store.snapshot();
        let v = view(&snap, Some(Duration::from_secs(300))).unwrap();
        assert_eq!(v.rounds, 4);
        assert_eq!(v.window_seconds, 45.0);
        let s = &v.servers[0];
        assert_eq!(s.server, "10.96.0.10");
        assert_eq!(s.pods_probed, 3);
        assert_eq!(s.host_probes, 4);
        assert_eq!(s.tally.queries.judged(), 4 * 4 * 16);
        assert_eq!(s.tally.lookups, 32);
        assert_eq!(s.tally.failure_ratio, Some(0.0));
        assert_eq!(s.tally.queries_per_lookup, Some(8.0));
        assert_eq!(s.tally.lookup_p99_seconds, Some(0.004));
        assert_eq!(s.tally.query_p99_seconds, Some(0.001));
        let names: Vec<&str> = v.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(
            names,
            ["host", "team-a/web-0", "team-a/web-1", "team-a/web-2"]
        );
        assert_eq!(v.targets[1].tally.probes, 4);
        assert_eq!(v.correlation.softnet_dropped, Some(0));
        assert_eq!(
            v.correlation.conntrack_insert_failed, None,
            "no conntrack samples"
        );
    }

    #[test]
    fn the_window_keeps_the_probes_not_the_totals() {
        let samples: Vec<DnsSample> = (0..4u32)
            .map(|i| {
                let mut s = round(i % 2, 0.004 * f64::from(i + 1));
                let mut totals = crate::collect::dns::totals::ServerTotals {
                    server: "10.96.0.10".into(),
                    probes: u64::from(i + 1),
                    ..Default::default()
                };
                totals.request_duration.observe(0.001);
                s.totals = vec![totals];
                s.softnet_dropped = Some(7 + u64::from(i));
                s
            })
            .collect();
        let store = store_with(samples.clone());
        let kept = store.snapshot();
        let history = kept.history::<DnsSample>();
        assert!(history[..3].iter().all(|(_, s)| s.totals.is_empty()));
        assert_eq!(
            history[3].1.totals, samples[3].totals,
            "the newest is whole"
        );
        let whole = crate::diagnose::testing::uncompacted(&store, &samples);
        let json = |snap| serde_json::to_value(view(snap, None)).unwrap();
        assert_eq!(json(&kept), json(&whole));
        let v = view(&kept, None).unwrap();
        assert_eq!(v.servers[0].pods_with_failures, ["team-a/web-1"]);
        assert_eq!(v.correlation.softnet_dropped, Some(3));
    }

    #[test]
    fn one_timeout_is_a_warning_naming_the_pod() {
        let mut samples: Vec<DnsSample> = (0..4).map(|_| round(0, 0.004)).collect();
        samples.push(round(1, 0.004));
        let f = run(samples);
        assert_eq!(ids(&f), ["dns_failures"]);
        let f = &f[0];
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.subject, "10.96.0.10");
        assert_eq!(f.evidence["failed_queries"], 1);
        assert_eq!(f.evidence["timeouts"], 1);
        assert_eq!(f.evidence["queries"], 320);
        assert_eq!(f.evidence["failure_ratio"], 0.0031);
        assert_eq!(f.evidence["pods"], serde_json::json!(["team-a/web-1"]));
        assert_eq!(f.evidence["host_failed"], false);
        assert_eq!(f.evidence["failed_lookups"], 0, "the retry answered");
        assert_eq!(f.evidence["fallbacks_to_single_request"], 1);
        assert_eq!(f.evidence["server_source"], "kubelet");
        let examples = f.evidence["examples"].to_string();
        assert!(
            examples.contains("team-a/web-1: kubernetes.default.svc.cluster.local AAAA: timeout"),
            "{examples}"
        );
        assert!(
            f.summary
                .contains("1 of 320 DNS queries to 10.96.0.10 failed"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("seen from team-a/web-1"),
            "{}",
            f.summary
        );
        assert_eq!(f.remedy, FAILURES.remedy);
        assert!(!f.evidence.contains_key("conntrack_insert_failed_in_window"));
    }

    #[test]
    fn above_the_ratio_it_is_critical() {
        // 4 of 64 queries of one round: 6.25%.
        let f = run(vec![round(4, 0.004)]);
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].evidence["failure_ratio"], 0.0625);
        assert_eq!(f[0].evidence["threshold_ratio"], 0.05);
        // The same with the critical ratio raised: a warning.
        let t = Thresholds {
            failure_critical_ratio: 0.1,
            ..Thresholds::default()
        };
        let f = run_rules(rules, &store_with(vec![round(4, 0.004)]), &t);
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn a_dead_server_fails_lookups_from_everywhere() {
        let mut r = round(0, 0.004);
        for p in &mut r.probes {
            p.queries = QueryCounts {
                sent: 4,
                network_error: 4,
                ..QueryCounts::default()
            };
            p.reply_latencies.clear();
            for l in &mut p.lookups {
                l.verdict = Verdict::Unreachable;
                l.failures = vec![format!("{} A: Connection refused (os error 111)", l.name)];
            }
        }
        let f = run(vec![r]);
        assert_eq!(ids(&f), ["dns_failures"]);
        let f = &f[0];
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.evidence["failure_ratio"], 1.0);
        assert_eq!(f.evidence["network_errors"], 16);
        assert_eq!(f.evidence["lookup_failures"]["unreachable"], 8);
        assert_eq!(
            f.evidence["pods"],
            serde_json::json!(["team-a/web-0", "team-a/web-1", "team-a/web-2"])
        );
        assert_eq!(f.evidence["host_failed"], true);
        assert!(
            f.summary.contains("3 of 3 pods probed and the host"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn a_name_that_must_exist_and_does_not_is_a_failed_lookup() {
        let mut r = round(0, 0.004);
        r.probes[1].lookups[0].verdict = Verdict::NxDomain;
        let f = run(vec![r]);
        assert_eq!(ids(&f), ["dns_failures"]);
        assert_eq!(f[0].evidence["failed_queries"], 0);
        assert_eq!(f[0].evidence["lookup_failures"]["nxdomain"], 1);
        assert_eq!(f[0].severity, Severity::Critical, "1 of 8 lookups");
        assert!(f[0].evidence["examples"]
            .to_string()
            .contains("team-a/web-0: kubernetes.default.svc.cluster.local: lookup nxdomain"));
    }

    #[test]
    fn a_probe_that_could_not_run_is_not_a_dns_failure() {
        let mut r = round(0, 0.004);
        r.probes[2].error = Some(
            "/proc/42/ns/net: entering the network namespace: No such file or directory".into(),
        );
        assert!(run(vec![r.clone()]).is_empty());
        let store = store_with(vec![r]);
        let snap = store.snapshot();
        let v = view(&snap, None).unwrap();
        assert_eq!(v.servers[0].tally.probe_errors, 1);
        assert_eq!(v.servers[0].pods_with_failures.len(), 0);
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let mut samples = vec![round(4, 0.004)];
        samples.extend((0..24).map(|_| round(0, 0.004)));
        assert!(run(samples).is_empty());
    }

    #[test]
    fn slow_lookups_over_the_threshold_are_dns_slow() {
        let f = run(vec![round(0, 1.2)]);
        assert_eq!(ids(&f), ["dns_slow"]);
        let f = &f[0];
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.evidence["lookup_p99_seconds"], 1.2);
        assert_eq!(f.evidence["query_p99_seconds"], 0.3);
        assert_eq!(f.evidence["queries_per_lookup"], 8.0);
        assert_eq!(f.evidence["threshold_seconds"], 1.0);
        assert!(f.evidence["slowest"][0]
            .as_str()
            .unwrap()
            .starts_with("team-a/web-1: "));
        assert!(f.remedy.contains("ndots"));
        assert!(f.summary.contains("8 queries per lookup"), "{}", f.summary);
        // At the threshold exactly: not over it.
        assert!(run(vec![round(0, 1.0)]).is_empty());
    }

    fn conntrack(insert_failed: u64, drop: u64) -> ConntrackSample {
        ConntrackSample {
            entries: 10,
            max: 1000,
            buckets: None,
            stats: Some(ConntrackStats {
                drop: Some(drop),
                early_drop: Some(0),
                insert_failed: Some(insert_failed),
                ..Default::default()
            }),
            stats_source: None,
            peak: None,
            top: None,
            unavailable: vec![],
        }
    }

    #[test]
    fn conntrack_failing_in_the_window_adds_the_race_to_evidence_and_remedy() {
        let store = store_with(vec![round(0, 0.004), round(1, 0.004)]);
        add_samples(&store, vec![conntrack(5, 0), conntrack(7, 0)]);
        let f = run_rules(rules, &store, &Thresholds::default());
        let f = &f[0];
        assert_eq!(f.evidence["conntrack_insert_failed_in_window"], 2);
        assert!(!f.evidence.contains_key("conntrack_dropped_in_window"));
        assert_eq!(f.remedy, FAILURES_WITH_CONNTRACK.remedy);
        assert!(f.remedy.contains("NodeLocal DNSCache"));
        assert!(f.remedy.contains("single-request-reopen"));
        assert!(f.summary.contains("conntrack failed in the same window"));

        // Flat counters say nothing: the plain remedy.
        let store = store_with(vec![round(0, 0.004), round(1, 0.004)]);
        add_samples(&store, vec![conntrack(5, 3), conntrack(5, 3)]);
        let f = run_rules(rules, &store, &Thresholds::default());
        assert_eq!(f[0].remedy, FAILURES.remedy);
    }

    #[test]
    fn backlog_drops_in_the_window_are_named_too() {
        let mut second = round(1, 0.004);
        second.softnet_dropped = Some(19);
        let store = store_with(vec![round(0, 0.004), second]);
        add_samples(&store, vec![conntrack(5, 0), conntrack(5, 1)]);
        let f = run_rules(rules, &store, &Thresholds::default());
        let f = &f[0];
        assert_eq!(f.evidence["softnet_dropped_in_window"], 12);
        assert_eq!(f.evidence["conntrack_dropped_in_window"], 1);
        assert_eq!(f.remedy, FAILURES_WITH_BOTH.remedy);
        assert!(f.remedy.contains("netdev_max_backlog"));
    }

    #[test]
    fn the_conntrack_findings_link_back_to_dns() {
        let store = store_with(vec![round(0, 0.004), round(2, 0.004)]);
        add_samples(&store, vec![conntrack(5, 0), conntrack(7, 0)]);
        let families: Vec<(&'static str, super::super::RuleSet)> = vec![
            (
                "conntrack",
                Box::new(|s, c, o| super::super::conntrack::rules(s, &Default::default(), c, o)),
            ),
            (
                "dns",
                Box::new(|s, c, o| rules(s, &Thresholds::default(), c, o)),
            ),
        ];
        let e = super::super::evaluate(&store.snapshot(), &ctx(), &families);
        let ct = e
            .findings
            .iter()
            .find(|f| f.id == "conntrack_insert_failed")
            .unwrap();
        assert_eq!(ct.evidence["dns_failures_in_window"], 2);
        assert_eq!(
            ct.evidence["dns_servers_failing"],
            serde_json::json!(["10.96.0.10"])
        );
        let dns = e.findings.iter().find(|f| f.id == "dns_failures").unwrap();
        assert_eq!(dns.evidence["conntrack_insert_failed_in_window"], 2);

        // Without DNS failures the conntrack finding stays as it was.
        let store = store_with(vec![round(0, 0.004), round(0, 0.004)]);
        add_samples(&store, vec![conntrack(5, 0), conntrack(7, 0)]);
        let e = super::super::evaluate(&store.snapshot(), &ctx(), &families);
        assert_eq!(ids(&e.findings), ["conntrack_insert_failed"]);
        assert!(!e.findings[0]
            .evidence
            .contains_key("dns_failures_in_window"));
    }
}
