//! A DNS probe: a few names looked up the way a pod's glibc would (search list,
//! ndots, A and AAAA together), against one server, from inside a network
//! namespace, with every query's outcome and latency recorded.
//!
//! Each probe runs on a thread of its own ([`super::probe_threads`]) that enters the
//! target namespace with `setns`. The probe keeps to a deadline: every wait is cut
//! at it, and the caller stops waiting for the thread shortly after it, so a stuck
//! probe cannot hold the collector. A probe given up on finishes on its own and its
//! report is dropped.

use super::exchange::{ExchangeSettings, Exchanger, QueryRecord, SendMode};
use super::resolv_conf::ResolverOptions;
use super::search::{self, Verdict};
use crate::kernel::thread_cpu;
use serde::Serialize;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long past its deadline a probe thread may take to hand its report back
/// (going back to the agent's namespace, channel send) before the caller gives up
/// on it.
const HANDOVER_GRACE: Duration = Duration::from_millis(250);

/// What one probe asks, of whom, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub server: SocketAddr,
    /// Names as an application passes them to getaddrinfo.
    pub names: Vec<String>,
    pub search: Vec<String>,
    pub ndots: u8,
    pub no_tld_query: bool,
    /// Wait per try, usually glibc's `timeout:` shortened to fit the interval.
    pub per_try: Duration,
    pub attempts: u8,
    pub mode: SendMode,
    pub use_tcp: bool,
    pub no_aaaa: bool,
}

impl ProbeSpec {
    /// The probe a pod with these resolv.conf settings would make, per-try wait
    /// and attempts as glibc would use them.
    pub fn like_glibc(
        server: SocketAddr,
        names: Vec<String>,
        search: Vec<String>,
        options: &ResolverOptions,
    ) -> ProbeSpec {
        let mode = if options.single_request_reopen {
            SendMode::SingleRequestReopen
        } else if options.single_request {
            SendMode::SingleRequest
        } else {
            SendMode::Parallel
        };
        ProbeSpec {
            server,
            names,
            search,
            ndots: options.ndots,
            no_tld_query: options.no_tld_query,
            // glibc waits at least a second, also for `timeout:0`.
            per_try: options.timeout().max(Duration::from_secs(1)),
            attempts: options.attempts,
            mode,
            use_tcp: options.use_vc,
            no_aaaa: options.no_aaaa,
        }
    }

    /// Shortens the per-try wait (never lengthens it) so that a server that
    /// answers nothing still lets every name finish within `budget`. A dead
    /// server costs each name two exchanges (the first search candidate, then the
    /// name as-is), each of `attempts` tries.
    pub fn fit_within(&mut self, budget: Duration) {
        let waits = 2 * u32::from(self.attempts.max(1)) * self.names.len().max(1) as u32;
        let fitted = (budget / waits).max(Duration::from_millis(100));
        self.per_try = self.per_try.min(fitted);
    }
}

/// How one name's lookup ended for the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LookupReport {
    pub name: String,
    pub verdict: Verdict,
    /// The candidate that answered, when one did.
    pub answered_by: Option<String>,
    pub addresses: Vec<IpAddr>,
    /// What getaddrinfo would have taken, from the first query to the verdict.
    pub elapsed: Duration,
    pub queries: Vec<QueryRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub server: SocketAddr,
    pub lookups: Vec<LookupReport>,
    /// The send mode at the end: past the configured one when a reply to only one
    /// of A and AAAA made glibc's fallback switch (the conntrack race's mark).
    pub final_mode: SendMode,
    pub fell_back: bool,
    /// Replies that did not parse or matched no query in flight.
    pub ignored_replies: u32,
    /// The deadline ended the probe before every lookup finished.
    pub cut_short: bool,
    pub elapsed: Duration,
}

/// Runs the probe on the calling thread, in its network namespace.
pub fn run(spec: &ProbeSpec, deadline: Instant) -> ProbeReport {
    let started = Instant::now();
    let mut ex = Exchanger::new(
        ExchangeSettings {
            server: spec.server,
            per_try: spec.per_try,
            attempts: spec.attempts,
            mode: spec.mode,
            use_tcp: spec.use_tcp,
            no_aaaa: spec.no_aaaa,
        },
        deadline,
    );
    let mut lookups = Vec::with_capacity(spec.names.len());
    let mut cut_short = false;
    for name in &spec.names {
        let begun = Instant::now();
        let first_record = ex.records.len();
        let mut addresses = Vec::new();
        let (answered_by, verdict) = if cut_short || begun >= deadline {
            (None, Verdict::Unfinished)
        } else {
            search::search(name, &spec.search, spec.ndots, spec.no_tld_query, |fqdn| {
                let got = ex.exchange(fqdn);
                addresses = got.addresses;
                got.verdict
            })
        };
        cut_short |= verdict == Verdict::Unfinished;
        lookups.push(LookupReport {
            name: name.clone(),
            answered_by,
            addresses: if verdict == Verdict::Answered {
                addresses
            } else {
                Vec::new()
            },
            verdict,
            elapsed: begun.elapsed(),
            queries: ex.records.split_off(first_record),
        });
    }
    ProbeReport {
        server: spec.server,
        lookups,
        final_mode: ex.mode(),
        fell_back: ex.mode() != spec.mode,
        ignored_replies: ex.ignored_replies,
        cut_short,
        elapsed: started.elapsed(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{path}: entering the network namespace: {source}")]
    EnterNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("starting the probe thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("the probe did not report back within {0:?} of its deadline")]
    Overran(Duration),
    #[error("the probe thread ended without a report")]
    Lost,
}

/// What a probe thread hands back: the report, and the CPU the probe took.
pub(super) type Handback = (Result<ProbeReport, ProbeError>, Duration);

/// A probe running on its own thread.
pub struct PendingProbe {
    rx: mpsc::Receiver<Handback>,
    deadline: Instant,
}

impl PendingProbe {
    pub(super) fn new(rx: mpsc::Receiver<Handback>, deadline: Instant) -> Self {
        Self { rx, deadline }
    }

    /// Waits for the report until shortly after the deadline, never longer. The
    /// probe thread's CPU is charged to the waiting thread ([`thread_cpu::charge`]),
    /// so the collection that started it counts it; a probe given up on is not
    /// counted.
    pub fn wait(self) -> Result<ProbeReport, ProbeError> {
        let wait = self.deadline.saturating_duration_since(Instant::now()) + HANDOVER_GRACE;
        match self.rx.recv_timeout(wait) {
            Ok((result, cpu)) => {
                thread_cpu::charge(cpu);
                result
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ProbeError::Overran(HANDOVER_GRACE)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ProbeError::Lost),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::exchange::{QueryOutcome, Transport};
    use super::super::test_server::{Received, Reply, TestServer};
    use super::super::wire::QType;
    use super::*;
    use std::net::Ipv4Addr;

    pub(crate) const SVC: &str = "kubernetes.default.svc.cluster.local";
    const A: u16 = 1;
    const AAAA: u16 = 28;

    fn cluster_ip() -> Ipv4Addr {
        Ipv4Addr::new(10, 96, 0, 1)
    }

    /// What a cluster DNS says: SVC has an A record and no AAAA, the rest of
    /// cluster.local does not exist.
    pub(crate) fn coredns(q: &Received) -> Reply {
        match (q.name.as_str(), q.qtype) {
            (SVC, A) => Reply::Answer(vec![cluster_ip()]),
            (SVC, _) => Reply::Answer(vec![]),
            _ => Reply::Rcode(3),
        }
    }

    pub(crate) fn spec(server: &TestServer, names: &[&str]) -> ProbeSpec {
        ProbeSpec {
            server: server.addr,
            names: names.iter().map(|n| n.to_string()).collect(),
            search: [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            ndots: 5,
            no_tld_query: false,
            per_try: Duration::from_secs(2),
            attempts: 2,
            mode: SendMode::Parallel,
            use_tcp: false,
            no_aaaa: false,
        }
    }

    fn in_10s() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn outcomes(l: &LookupReport) -> Vec<(String, QType, QueryOutcome)> {
        l.queries
            .iter()
            .map(|q| (q.name.clone(), q.qtype, q.outcome.clone()))
            .collect()
    }

    #[test]
    fn a_service_name_costs_four_candidates_and_eight_queries() {
        let server = TestServer::start(|q, _| coredns(q));
        let report = run(&spec(&server, &[SVC]), in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Answered);
        assert_eq!(l.answered_by.as_deref(), Some(SVC));
        assert_eq!(l.addresses, vec![IpAddr::V4(cluster_ip())]);
        assert_eq!(l.queries.len(), 8);
        let got = outcomes(l);
        for pair in got[..6].chunks(2) {
            assert_eq!((pair[0].1, pair[1].1), (QType::A, QType::Aaaa));
            assert!(
                pair.iter().all(|q| q.2 == QueryOutcome::NxDomain),
                "{pair:?}"
            );
        }
        assert_eq!(
            got[6],
            (SVC.into(), QType::A, QueryOutcome::Answer { records: 1 })
        );
        assert_eq!(got[7], (SVC.into(), QType::Aaaa, QueryOutcome::NoData));
        assert!(!report.fell_back && !report.cut_short);
        assert_eq!(report.ignored_replies, 0);

        // On the server's side: each candidate's A and AAAA came from one socket,
        // every candidate from a new one, as glibc closes its socket after an answer.
        let rx = server.received();
        assert_eq!(rx.len(), 8);
        for pair in rx.chunks(2) {
            assert_eq!(pair[0].name, pair[1].name);
            assert_eq!(
                pair[0].from, pair[1].from,
                "same source port for A and AAAA"
            );
        }
        let ports: std::collections::HashSet<u16> = rx.iter().map(|r| r.from.port()).collect();
        assert_eq!(ports.len(), 4);
    }

    #[test]
    fn a_name_that_does_not_exist_is_nxdomain_after_every_candidate() {
        let server = TestServer::start(|q, _| coredns(q));
        let report = run(&spec(&server, &["nodediag-absent.invalid"]), in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::NxDomain);
        assert_eq!(l.answered_by, None);
        assert_eq!(l.queries.len(), 8);
        assert_eq!(l.queries[7].name, "nodediag-absent.invalid");
    }

    #[test]
    fn a_slow_server_shows_in_every_latency() {
        let delay = Duration::from_millis(150);
        let server = TestServer::start(move |q, _| Reply::Delay(delay, Box::new(coredns(q))));
        let report = run(&spec(&server, &[SVC]), in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Answered);
        assert!(
            l.queries.iter().all(|q| q.latency >= delay),
            "{:?}",
            l.queries
        );
        assert!(l.elapsed >= delay * 4, "four candidates one after another");
    }

    #[test]
    fn a_lost_aaaa_costs_a_timeout_and_switches_to_single_request() {
        // The conntrack race's shape: the first AAAA of the answering name is lost.
        let server = TestServer::start(|q, n| match (q.name.as_str(), q.qtype, n) {
            (SVC, AAAA, 0) => Reply::Drop,
            _ => coredns(q),
        });
        let mut s = spec(&server, &[SVC, "kubernetes"]);
        s.per_try = Duration::from_millis(300);
        let report = run(&s, in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Answered);
        assert!(report.fell_back);
        assert_eq!(report.final_mode, SendMode::SingleRequest);
        let tail: Vec<_> = l.queries[6..]
            .iter()
            .map(|q| (q.qtype, q.mode, q.attempt, q.outcome.clone()))
            .collect();
        assert_eq!(
            tail,
            [
                (
                    QType::A,
                    SendMode::Parallel,
                    0,
                    QueryOutcome::Answer { records: 1 }
                ),
                (QType::Aaaa, SendMode::Parallel, 0, QueryOutcome::Timeout),
                (
                    QType::A,
                    SendMode::SingleRequest,
                    0,
                    QueryOutcome::Answer { records: 1 }
                ),
                (
                    QType::Aaaa,
                    SendMode::SingleRequest,
                    0,
                    QueryOutcome::NoData
                ),
            ]
        );
        assert!(l.elapsed >= s.per_try);
        // The next lookup stays in single-request mode: A answered before AAAA sent.
        let second = &report.lookups[1];
        assert_eq!(second.verdict, Verdict::Answered);
        assert!(second
            .queries
            .iter()
            .all(|q| q.mode == SendMode::SingleRequest));
        let rx = server.received();
        let (a, aaaa) = (&rx[rx.len() - 2], &rx[rx.len() - 1]);
        assert_eq!((a.qtype, aaaa.qtype), (A, AAAA));
        assert_eq!(a.from, aaaa.from, "single-request keeps the socket");
    }

    #[test]
    fn single_request_reopen_sends_the_aaaa_after_the_a_reply_from_a_new_socket() {
        let delay = Duration::from_millis(100);
        let server = TestServer::start(move |q, _| Reply::Delay(delay, Box::new(coredns(q))));
        let mut s = spec(&server, &["kubernetes"]);
        s.mode = SendMode::SingleRequestReopen;
        let report = run(&s, in_10s());
        assert_eq!(report.lookups[0].verdict, Verdict::Answered);
        assert!(!report.fell_back);
        let rx = server.received();
        assert_eq!(
            rx.len(),
            2,
            "kubernetes.default.svc.cluster.local answers first"
        );
        assert_ne!(rx[0].from, rx[1].from);
        assert!(rx[1].at - rx[0].at >= delay, "AAAA waited for the A reply");
    }

    #[test]
    fn servfail_is_retried_then_the_search_moves_on() {
        let server = TestServer::start(|_, _| Reply::Rcode(2));
        let report = run(&spec(&server, &[SVC]), in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::ServFail);
        assert_eq!(l.queries.len(), 16, "4 candidates x 2 attempts x A+AAAA");
        assert!(l
            .queries
            .iter()
            .all(|q| q.outcome == QueryOutcome::ServFail));
        assert_eq!(l.queries[2].attempt, 1);
    }

    #[test]
    fn servfail_on_one_of_the_pair_does_not_hide_the_answer() {
        let server = TestServer::start(|q, _| match (q.name.as_str(), q.qtype) {
            (SVC, AAAA) => Reply::Rcode(2),
            _ => coredns(q),
        });
        let report = run(&spec(&server, &[SVC]), in_10s());
        assert_eq!(report.lookups[0].verdict, Verdict::Answered);
        assert_eq!(report.lookups[0].queries.len(), 8);
    }

    #[test]
    fn refused_stops_the_walk_and_tries_the_name_as_is() {
        let server = TestServer::start(|_, _| Reply::Rcode(5));
        let report = run(&spec(&server, &["web"]), in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Refused);
        let names: Vec<&str> = l.queries.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names[0], "web.default.svc.cluster.local");
        assert_eq!(*names.last().unwrap(), "web");
        assert_eq!(names.len(), 8, "2 candidates x 2 attempts x A+AAAA");
    }

    #[test]
    fn a_silent_server_times_out_twice_per_candidate() {
        let server = TestServer::start(|_, _| Reply::Drop);
        let mut s = spec(&server, &[SVC]);
        s.per_try = Duration::from_millis(100);
        let report = run(&s, in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Timeout);
        assert_eq!(
            l.queries.len(),
            8,
            "first candidate then as-is, 2 tries each"
        );
        assert!(l.queries.iter().all(|q| q.outcome == QueryOutcome::Timeout));
        assert!(l.queries.iter().all(|q| q.latency >= s.per_try));
        assert!(l.elapsed >= s.per_try * 4);
        // Both tries of a candidate reuse the socket and the query ids.
        let rx = server.received();
        assert_eq!(rx[0].from, rx[2].from);
    }

    #[test]
    fn the_deadline_cuts_the_probe_short() {
        let server = TestServer::start(|_, _| Reply::Drop);
        let mut s = spec(&server, &[SVC, "other"]);
        s.per_try = Duration::from_secs(5);
        let budget = Duration::from_millis(300);
        let started = Instant::now();
        let report = super::super::probe_threads::ProbeThreads::default()
            .spawn(s, None, started + budget)
            .unwrap()
            .wait()
            .unwrap();
        let took = started.elapsed();
        assert!(took >= budget && took < budget + HANDOVER_GRACE, "{took:?}");
        assert!(report.cut_short);
        assert_eq!(report.lookups[0].verdict, Verdict::Unfinished);
        assert_eq!(report.lookups[1].verdict, Verdict::Unfinished);
        assert!(report.lookups[1].queries.is_empty());
        assert!(report.lookups[0]
            .queries
            .iter()
            .all(|q| q.outcome == QueryOutcome::Cancelled));
    }

    #[test]
    fn fit_within_shortens_the_wait_so_a_dead_server_fits() {
        let server = TestServer::start(|_, _| Reply::Drop);
        let mut s = spec(&server, &[SVC, "nodediag-absent.invalid"]);
        s.fit_within(Duration::from_millis(800));
        assert_eq!(
            s.per_try,
            Duration::from_millis(100),
            "2 names x 2 exchanges x 2 tries"
        );
        let report = run(&s, Instant::now() + Duration::from_secs(2));
        assert!(!report.cut_short);
        assert!(report.lookups.iter().all(|l| l.verdict == Verdict::Timeout));
        let mut long = spec(&server, &[SVC]);
        long.per_try = Duration::from_secs(1);
        long.fit_within(Duration::from_secs(60));
        assert_eq!(long.per_try, Duration::from_secs(1), "never lengthened");
    }

    #[test]
    fn a_closed_port_is_unreachable_at_once() {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut s = ProbeSpec::like_glibc(
            port,
            vec![SVC.into()],
            vec!["cluster.local".into()],
            &super::super::resolv_conf::parse("options ndots:5 timeout:1\n").options,
        );
        s.attempts = 2;
        let report = run(&s, in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Unreachable);
        assert!(matches!(
            l.queries[0].outcome,
            QueryOutcome::NetworkError { ref error } if error.contains("refused")
        ));
        assert!(l.elapsed < Duration::from_millis(500), "{:?}", l.elapsed);
    }

    #[test]
    fn a_truncated_reply_is_asked_again_over_tcp() {
        let server = TestServer::start(|q, _| Reply::Truncate(Box::new(coredns(q))));
        let report = run(&spec(&server, &["kubernetes"]), in_10s());
        let l = &report.lookups[0];
        assert_eq!(l.verdict, Verdict::Answered);
        assert_eq!(l.addresses, vec![IpAddr::V4(cluster_ip())]);
        assert_eq!(l.queries[0].outcome, QueryOutcome::Truncated);
        let over_tcp: Vec<_> = l
            .queries
            .iter()
            .filter(|q| q.transport == Transport::Tcp)
            .collect();
        assert_eq!(over_tcp.len(), 2);
        assert!(server.received().iter().filter(|r| r.tcp).count() == 2);
    }

    #[test]
    fn use_vc_goes_over_tcp_from_the_start() {
        let server = TestServer::start(|q, _| coredns(q));
        let mut s = spec(&server, &["kubernetes"]);
        s.use_tcp = true;
        let report = run(&s, in_10s());
        assert_eq!(report.lookups[0].verdict, Verdict::Answered);
        assert!(server.received().iter().all(|r| r.tcp));
    }

    #[test]
    fn noise_and_stray_replies_are_ignored() {
        let server = TestServer::start(|q, _| Reply::Noise(Box::new(coredns(q))));
        let report = run(&spec(&server, &["kubernetes"]), in_10s());
        assert_eq!(report.lookups[0].verdict, Verdict::Answered);
        assert_eq!(report.ignored_replies, 4, "two of each per query");
    }

    #[test]
    fn no_aaaa_sends_only_a() {
        let server = TestServer::start(|q, _| coredns(q));
        let mut s = spec(&server, &["kubernetes"]);
        s.no_aaaa = true;
        let report = run(&s, in_10s());
        assert_eq!(report.lookups[0].verdict, Verdict::Answered);
        assert!(server.received().iter().all(|r| r.qtype == A));
    }

    #[test]
    fn like_glibc_takes_the_resolver_options() {
        let conf = super::super::resolv_conf::parse(
            "options ndots:2 timeout:3 attempts:4 single-request use-vc no-aaaa\n",
        );
        let s = ProbeSpec::like_glibc(
            "10.96.0.10:53".parse().unwrap(),
            vec![],
            conf.search.clone(),
            &conf.options,
        );
        assert_eq!(s.ndots, 2);
        assert_eq!(s.per_try, Duration::from_secs(3));
        assert_eq!(s.attempts, 4);
        assert_eq!(s.mode, SendMode::SingleRequest);
        assert!(s.use_tcp && s.no_aaaa);
    }
}
