//! What the dns collector hands the store: this round's probes (the host and a few
//! pods), each summed up per lookup and per query, and the counters since start that
//! the metrics need. Figures over the window are the rules' business (`diagnose::dns`).

use super::totals::ServerTotals;
use crate::kernel::dns::exchange::{QueryOutcome, QueryRecord, SendMode};
use crate::kernel::dns::search::Verdict;
use crate::sample::{Compacted, Sample, Unavailable};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Reply latencies kept per probe: enough for a p99 over a window of rounds, bounded
/// whatever names and search lists are configured.
pub const MAX_LATENCIES: usize = 256;
/// Failed queries quoted per lookup.
pub const MAX_FAILURES_QUOTED: usize = 3;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsSample {
    pub server: ServerChoice,
    /// Names each probe looks up, as an application passes them to getaddrinfo.
    pub names: Vec<String>,
    /// The name that must not exist (its NXDOMAIN is a success), when one is asked.
    pub absent_name: Option<String>,
    /// What the whole round may take, and the wait per try fitted into it.
    pub budget_seconds: f64,
    /// Pod network namespaces on the node (of pods in the selected Kubernetes
    /// namespaces), of which `probes` holds this round's share.
    pub pod_namespaces: usize,
    /// The host first (when probed), then the pods of this round.
    pub probes: Vec<ProbeResult>,
    /// `/proc/net/softnet_stat` input-backlog drops summed over CPUs, since boot.
    pub softnet_dropped: Option<u64>,
    /// Counts since the collector started, per server, for the metrics.
    pub totals: Vec<ServerTotals>,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for DnsSample {
    const COLLECTOR: &'static str = "dns";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// The probes and the softnet counter: the DNS view tallies every probe in the
    /// window and correlates softnet drops over it. The totals since start (two
    /// histograms per server, for the metrics), the names and the unavailable parts
    /// are read from the newest sample only (the server choice and the budget stay,
    /// a few bytes); at `--interval 1s` the totals of 300 older samples were over a
    /// megabyte.
    fn compact(&self) -> Compacted<Self> {
        Compacted::Part(DnsSample {
            server: self.server.clone(),
            names: Vec::new(),
            absent_name: None,
            budget_seconds: self.budget_seconds,
            pod_namespaces: self.pod_namespaces,
            probes: self.probes.clone(),
            softnet_dropped: self.softnet_dropped,
            totals: Vec::new(),
            unavailable: Vec::new(),
        })
    }
}

impl DnsSample {
    pub fn pods_probed(&self) -> impl Iterator<Item = &ProbeResult> {
        self.probes.iter().filter(|p| p.kind == TargetKind::Pod)
    }
}

/// Which server the probes ask, and why that one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerChoice {
    pub source: ServerSource,
    /// The server of every probe; None when each pod asks the first nameserver of its
    /// own resolv.conf.
    pub address: Option<SocketAddr>,
    /// The kubelet files it was read from.
    pub from: Vec<String>,
    /// The cluster domain the default name is built from, and where it came from.
    pub cluster_domain: String,
    pub cluster_domain_from: DomainSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerSource {
    /// `--dns.server`.
    Flag,
    /// The kubelet's `clusterDNS` (its config file or `--cluster-dns`).
    Kubelet,
    /// The `nameserver` of each probed pod's `/etc/resolv.conf`.
    PodResolvConf,
}

impl ServerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::Flag => "flag",
            ServerSource::Kubelet => "kubelet",
            ServerSource::PodResolvConf => "pod_resolv_conf",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainSource {
    Kubelet,
    /// The search list of a probed pod (`svc.<domain>`).
    PodSearchList,
    /// Neither said: Kubernetes' default, `cluster.local`.
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Host,
    Pod,
}

/// The resolver settings a probe used: the pod's resolv.conf as glibc reads it (for
/// the host, those the kubelet gives a pod in namespace `default`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResolverSettings {
    /// The resolv.conf's own nameservers (the probe may ask another: see
    /// `ServerChoice`).
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub ndots: u8,
    pub timeout_secs: u8,
    pub attempts: u8,
    pub mode: SendMode,
    /// Lines glibc skipped or capped.
    pub ignored: Vec<String>,
}

/// One target's probe in one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    /// `host`, `namespace/pod`, or `pod <uid>` when the kubelet's log directories do
    /// not name it.
    pub target: Arc<str>,
    pub kind: TargetKind,
    pub pod_uid: Option<Arc<str>>,
    /// The network namespace's inode.
    pub netns: Option<u64>,
    /// The process whose namespace was entered and whose root the resolv.conf was
    /// read through.
    pub pid: Option<u32>,
    pub server: SocketAddr,
    pub resolver: Arc<ResolverSettings>,
    /// The wait per try, after fitting every name into the round's budget.
    pub per_try_seconds: f64,
    pub lookups: Vec<LookupResult>,
    pub queries: QueryCounts,
    /// Latencies of the queries that got a reply, seconds (at most MAX_LATENCIES).
    pub reply_latencies: Vec<f64>,
    /// glibc's fallback to single-request happened: a reply to only one of A and
    /// AAAA, the conntrack race's mark (each switch costs the pod a full timeout).
    pub fell_back: bool,
    pub final_mode: SendMode,
    /// The round's budget ended the probe before every lookup finished.
    pub cut_short: bool,
    pub elapsed_seconds: f64,
    /// Why the probe could not run (the namespace went away, the thread overran);
    /// then it counts no lookup and no query.
    pub error: Option<String>,
}

/// How one name's lookup went, as the pod's getaddrinfo would have seen it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LookupResult {
    pub name: Arc<str>,
    /// Whether the name must exist (the absent name must not).
    pub must_exist: bool,
    pub verdict: Verdict,
    pub answered_by: Option<Arc<str>>,
    pub elapsed_seconds: f64,
    pub queries: u32,
    /// Failed queries, a few: `kubernetes.default.svc.cluster.local AAAA: timeout
    /// after 0.94s`.
    pub failures: Vec<String>,
}

impl LookupResult {
    /// What went wrong for the pod, or None: an answer for a name that exists, and
    /// NXDOMAIN or NODATA for the one that must not, are successes. A lookup the
    /// round's budget cut is not judged.
    pub fn failure(&self) -> Option<&'static str> {
        match (&self.verdict, self.must_exist) {
            (Verdict::Answered, true) => None,
            (Verdict::Answered, false) => Some("answered"),
            (Verdict::NxDomain, true) => Some("nxdomain"),
            (Verdict::NoData, true) => Some("nodata"),
            (Verdict::NxDomain | Verdict::NoData, false) => None,
            (Verdict::ServFail, _) => Some("servfail"),
            (Verdict::Refused, _) => Some("refused"),
            (Verdict::Timeout, _) => Some("timeout"),
            (Verdict::Unreachable, _) => Some("unreachable"),
            (Verdict::Error(_), _) => Some("error"),
            (Verdict::Unfinished, _) => None,
        }
    }

    pub fn judged(&self) -> bool {
        self.verdict != Verdict::Unfinished
    }

    /// The lookup ended as it should (what the latency figures are taken of).
    pub fn succeeded(&self) -> bool {
        self.judged() && self.failure().is_none()
    }
}

/// Queries sent, by what became of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueryCounts {
    pub sent: u32,
    pub answer: u32,
    pub nxdomain: u32,
    pub nodata: u32,
    pub truncated: u32,
    pub servfail: u32,
    pub refused: u32,
    /// FORMERR, NOTIMP or an rcode without a name.
    pub other_rcode: u32,
    pub timeout: u32,
    /// The socket said why: ECONNREFUSED (nothing listens: an ICMP port unreachable
    /// came back), ENETUNREACH...
    pub network_error: u32,
    /// Cut by the round's budget: neither a success nor a failure.
    pub cancelled: u32,
}

impl QueryCounts {
    pub fn add(&mut self, outcome: &QueryOutcome) {
        self.sent += 1;
        *match outcome {
            QueryOutcome::Answer { .. } => &mut self.answer,
            QueryOutcome::NxDomain => &mut self.nxdomain,
            QueryOutcome::NoData => &mut self.nodata,
            QueryOutcome::Truncated => &mut self.truncated,
            QueryOutcome::ServFail => &mut self.servfail,
            QueryOutcome::Refused => &mut self.refused,
            QueryOutcome::OtherRcode { .. } => &mut self.other_rcode,
            QueryOutcome::Timeout => &mut self.timeout,
            QueryOutcome::NetworkError { .. } => &mut self.network_error,
            QueryOutcome::Cancelled => &mut self.cancelled,
        } += 1;
    }

    pub fn merge(&mut self, o: &QueryCounts) {
        self.sent += o.sent;
        self.answer += o.answer;
        self.nxdomain += o.nxdomain;
        self.nodata += o.nodata;
        self.truncated += o.truncated;
        self.servfail += o.servfail;
        self.refused += o.refused;
        self.other_rcode += o.other_rcode;
        self.timeout += o.timeout;
        self.network_error += o.network_error;
        self.cancelled += o.cancelled;
    }

    /// Queries that reached a verdict (the budget's cuts left out).
    pub fn judged(&self) -> u32 {
        self.sent - self.cancelled
    }

    /// Timeouts, SERVFAIL, REFUSED, other rcodes and network errors.
    pub fn failed(&self) -> u32 {
        self.servfail + self.refused + self.other_rcode + self.timeout + self.network_error
    }
}

/// The `result` label of `nodediag_dns_requests_total` for a query's outcome; None
/// for a query the budget cut.
pub fn query_result(outcome: &QueryOutcome) -> Option<&'static str> {
    Some(match outcome {
        QueryOutcome::Answer { .. } => "answer",
        QueryOutcome::NxDomain => "nxdomain",
        QueryOutcome::NoData => "nodata",
        QueryOutcome::Truncated => "truncated",
        QueryOutcome::ServFail => "servfail",
        QueryOutcome::Refused => "refused",
        QueryOutcome::Timeout => "timeout",
        QueryOutcome::OtherRcode { .. } | QueryOutcome::NetworkError { .. } => "error",
        QueryOutcome::Cancelled => return None,
    })
}

/// Whether a reply came back (whatever it said): its latency is the server's.
pub fn got_reply(outcome: &QueryOutcome) -> bool {
    !matches!(
        outcome,
        QueryOutcome::Timeout | QueryOutcome::Cancelled | QueryOutcome::NetworkError { .. }
    )
}

/// A failed query as a finding quotes it.
pub fn describe_failure(q: &QueryRecord) -> Option<String> {
    let what = match &q.outcome {
        QueryOutcome::Timeout => format!("timeout after {:.2}s", q.latency.as_secs_f64()),
        QueryOutcome::ServFail => "SERVFAIL".into(),
        QueryOutcome::Refused => "REFUSED".into(),
        QueryOutcome::OtherRcode { rcode } => format!("rcode {rcode}"),
        QueryOutcome::NetworkError { error } => crate::text::truncate(error, 60).to_string(),
        _ => return None,
    };
    Some(format!("{} {}: {what}", q.name, q.qtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::dns::exchange::Transport;
    use crate::kernel::dns::wire::QType;
    use std::time::Duration;

    fn lookup(verdict: Verdict, must_exist: bool) -> LookupResult {
        LookupResult {
            name: "x".into(),
            must_exist,
            verdict,
            answered_by: None,
            elapsed_seconds: 0.0,
            queries: 0,
            failures: vec![],
        }
    }

    #[test]
    fn nxdomain_is_success_only_for_the_absent_name() {
        assert_eq!(lookup(Verdict::Answered, true).failure(), None);
        assert_eq!(lookup(Verdict::NxDomain, false).failure(), None);
        assert_eq!(lookup(Verdict::NoData, false).failure(), None);
        assert_eq!(lookup(Verdict::NxDomain, true).failure(), Some("nxdomain"));
        assert_eq!(
            lookup(Verdict::Answered, false).failure(),
            Some("answered"),
            "a wildcard in a search domain answers names that do not exist"
        );
        assert_eq!(lookup(Verdict::ServFail, false).failure(), Some("servfail"));
        assert_eq!(lookup(Verdict::Timeout, true).failure(), Some("timeout"));
        let cut = lookup(Verdict::Unfinished, true);
        assert!(!cut.judged() && !cut.succeeded() && cut.failure().is_none());
    }

    #[test]
    fn counts_split_failures_from_cuts() {
        let mut c = QueryCounts::default();
        for o in [
            QueryOutcome::Answer { records: 1 },
            QueryOutcome::NxDomain,
            QueryOutcome::Timeout,
            QueryOutcome::ServFail,
            QueryOutcome::NetworkError {
                error: "Connection refused".into(),
            },
            QueryOutcome::Cancelled,
        ] {
            c.add(&o);
        }
        assert_eq!(c.sent, 6);
        assert_eq!(c.judged(), 5);
        assert_eq!(c.failed(), 3);
        let mut sum = c;
        sum.merge(&c);
        assert_eq!((sum.sent, sum.failed(), sum.cancelled), (12, 6, 2));
        assert_eq!(query_result(&QueryOutcome::Cancelled), None);
        assert_eq!(
            query_result(&QueryOutcome::OtherRcode { rcode: 4 }),
            Some("error")
        );
        assert!(!got_reply(&QueryOutcome::Timeout));
        assert!(got_reply(&QueryOutcome::ServFail));
    }

    #[test]
    fn failures_are_quoted_with_name_type_and_wait() {
        let q = QueryRecord {
            name: "kubernetes.default.svc.cluster.local".into(),
            qtype: QType::Aaaa,
            attempt: 0,
            mode: SendMode::Parallel,
            transport: Transport::Udp,
            outcome: QueryOutcome::Timeout,
            latency: Duration::from_millis(940),
        };
        assert_eq!(
            describe_failure(&q).unwrap(),
            "kubernetes.default.svc.cluster.local AAAA: timeout after 0.94s"
        );
        let ok = QueryRecord {
            outcome: QueryOutcome::NxDomain,
            ..q
        };
        assert_eq!(describe_failure(&ok), None);
    }
}
