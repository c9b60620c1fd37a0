//! DNS as the pods see it. Every round, a few names are looked up the way a pod's
//! glibc looks them up (its resolv.conf's search list and ndots, A and AAAA in
//! parallel from one socket) from inside a few pod network namespaces, taking turns
//! through all of them, and from the host, against the cluster DNS server.
//!
//! - The server: `--dns.server`, else the kubelet's `clusterDNS`, else the first
//!   `nameserver` of each pod's own resolv.conf; the sample says which.
//! - The names: `--dns.name` (default `kubernetes.default.svc.<cluster domain>`) and
//!   one that must not exist, whose NXDOMAIN is a success.
//! - The cost: the whole round keeps to half the interval. The wait per try is
//!   glibc's (`timeout:`, 5 s) capped by `--dns.timeout` and shortened so that a dead
//!   server still lets every name finish in time; each probe runs on a thread made
//!   for it that enters the pod's namespace (`kernel::dns::probe`), never on an async
//!   worker, and is given up on shortly after the deadline.
//!
//! [`targets`] finds the pods, [`sample`] is what a round leaves, [`totals`] the
//! counts since start that the metrics need.

pub mod sample;
mod shared;
pub mod targets;
pub mod totals;

pub use sample::{
    DnsSample, DomainSource, LookupResult, ProbeResult, QueryCounts, ResolverSettings,
    ServerChoice, ServerSource, TargetKind,
};

use super::Collector;
use crate::host::HostRoot;
use crate::kernel::dns::exchange::QueryRecord;
use crate::kernel::dns::kubelet;
use crate::kernel::dns::probe::{ProbeError, ProbeReport, ProbeSpec};
use crate::kernel::dns::probe_threads::ProbeThreads;
use crate::kernel::dns::resolv_conf::{self, ResolvConf};
use crate::kernel::softnet;
use crate::sample::{CollectError, Unavailable};
use sample::{describe_failure, got_reply, MAX_FAILURES_QUOTED, MAX_LATENCIES};
use shared::Shared;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use targets::Rotation;
use totals::Totals;

/// Kubernetes' default cluster domain, when neither the kubelet nor a pod says.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The name that must not exist: `.invalid` is reserved (RFC 2606), so after the
/// cluster's search domains the query goes upstream and must come back NXDOMAIN.
pub const DEFAULT_ABSENT_NAME: &str = "nodediag-absent.invalid";
/// The share of the interval a round may take.
const BUDGET_SHARE: u32 = 2;
/// Pods whose resolv.conf problems are listed one by one in `unavailable`.
const MAX_LISTED: usize = 10;

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub server: Option<SocketAddr>,
    /// Empty: `kubernetes.default.svc.<cluster domain>`.
    pub names: Vec<String>,
    /// Empty: none.
    pub absent_name: String,
    /// Pod namespaces probed per round.
    pub pods: usize,
    /// The longest wait per try (glibc's `timeout:` is the other cap).
    pub timeout: Duration,
    /// Kubernetes namespaces whose pods are probed; empty: all.
    pub pod_namespaces: Vec<String>,
    /// Whether the host is probed too.
    pub host: bool,
    pub interval: Duration,
}

pub struct DnsCollector {
    root: HostRoot,
    config: DnsConfig,
    rotation: Rotation,
    totals: Totals,
    /// Names (targets, pod UIDs, names looked up and those that answered) and
    /// resolver settings, one copy each for all the probes the window holds.
    strings: Shared<str>,
    resolvers: Shared<ResolverSettings>,
    threads: ProbeThreads,
}

/// One probe to make: where, with what settings, and about whom.
struct Target {
    kind: TargetKind,
    name: String,
    pod_uid: Option<String>,
    netns: Option<u64>,
    pid: Option<u32>,
    /// None: the agent's own namespace (the host's, in the DaemonSet).
    netns_path: Option<PathBuf>,
    conf: ResolvConf,
    server: SocketAddr,
}

impl DnsCollector {
    pub fn new(root: HostRoot, config: DnsConfig) -> Self {
        Self {
            root,
            config,
            rotation: Rotation::default(),
            totals: Totals::default(),
            strings: Shared::default(),
            resolvers: Shared::default(),
            threads: ProbeThreads::default(),
        }
    }

    fn budget(&self) -> Duration {
        (self.config.interval / BUDGET_SHARE).max(Duration::from_millis(500))
    }

    /// `--dns.server`, else the kubelet's clusterDNS; None leaves it to each pod.
    fn configured_server(
        &self,
        unavailable: &mut Vec<Unavailable>,
    ) -> (
        Option<kubelet::ClusterDns>,
        ServerSource,
        Option<SocketAddr>,
    ) {
        let cluster = match kubelet::read(&self.root) {
            Ok(c) => c,
            Err(e) => {
                unavailable.push(Unavailable::new(
                    "kubelet cluster DNS settings",
                    format!("{e}: the server comes from the pods' resolv.conf"),
                ));
                None
            }
        };
        if let Some(s) = self.config.server {
            return (cluster, ServerSource::Flag, Some(s));
        }
        let kubelet_server = cluster
            .as_ref()
            .and_then(|c| c.servers.first())
            .map(|ip| SocketAddr::new(*ip, 53));
        match kubelet_server {
            Some(s) => (cluster, ServerSource::Kubelet, Some(s)),
            None => (cluster, ServerSource::PodResolvConf, None),
        }
    }

    /// This round's pods with their resolv.conf; those unreadable are listed as
    /// unavailable and not probed.
    fn pod_targets(
        &mut self,
        server: Option<SocketAddr>,
        unavailable: &mut Vec<Unavailable>,
    ) -> Result<(usize, Vec<Target>), CollectError> {
        let (pod_count, picked, missing) = targets::pod_namespaces(
            &self.root,
            &self.config.pod_namespaces,
            &mut self.rotation,
            self.config.pods,
        )?;
        unavailable.extend(missing);
        let mut out = Vec::new();
        let mut unlisted = 0;
        let mut note = |what: String, hint: String, unavailable: &mut Vec<Unavailable>| {
            if unavailable.len() < MAX_LISTED {
                unavailable.push(Unavailable::new(what, hint));
            } else {
                unlisted += 1;
            }
        };
        for p in picked {
            let name = p.pod.name();
            match targets::read_resolv_conf(&self.root, &p.pids) {
                Ok((pid, conf)) => {
                    if !conf.ignored.is_empty() {
                        note(
                            format!("resolv.conf of {name}"),
                            format!(
                                "glibc skips {}: probed with what it keeps",
                                conf.ignored.join("; ")
                            ),
                            unavailable,
                        );
                    }
                    let server = server
                        .unwrap_or_else(|| SocketAddr::new(conf.effective_nameservers()[0], 53));
                    out.push(Target {
                        kind: TargetKind::Pod,
                        name,
                        pod_uid: Some(p.pod.pod_uid.to_string()),
                        netns: Some(p.inode),
                        pid: Some(pid),
                        netns_path: Some(self.root.proc(&[&pid.to_string(), "ns", "net"])),
                        conf,
                        server,
                    });
                }
                Err(e) => note(
                    format!("resolv.conf of {name}"),
                    format!("{e}: this pod is not probed"),
                    unavailable,
                ),
            }
        }
        if unlisted > 0 {
            unavailable.push(Unavailable::new(
                format!("resolv.conf of {unlisted} more pods"),
                "unreadable or skipped by glibc in part: GET /api/v1/dns",
            ));
        }
        Ok((pod_count, out))
    }

    fn spec(&self, t: &Target, names: &[String], left: Duration) -> ProbeSpec {
        let mut spec = ProbeSpec::like_glibc(
            t.server,
            names.to_vec(),
            t.conf.search.clone(),
            &t.conf.options,
        );
        spec.per_try = spec.per_try.min(self.config.timeout);
        spec.fit_within(left);
        spec
    }
}

/// What the kubelet gives a pod in namespace `default`: how the host's probe asks.
fn kubelet_pod_conf(domain: &str) -> ResolvConf {
    resolv_conf::parse(&format!(
        "search default.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    ))
}

fn resolver_settings(conf: &ResolvConf, spec: &ProbeSpec) -> ResolverSettings {
    ResolverSettings {
        nameservers: conf.nameservers.clone(),
        search: conf.search.clone(),
        ndots: conf.options.ndots,
        timeout_secs: conf.options.timeout_secs,
        attempts: conf.options.attempts,
        mode: spec.mode,
        ignored: conf.ignored.clone(),
    }
}

/// A probe's report as the sample keeps it, and its query records for the totals.
fn summarize(
    t: Target,
    spec: &ProbeSpec,
    absent_name: Option<&str>,
    report: Result<ProbeReport, ProbeError>,
    strings: &mut Shared<str>,
    resolvers: &mut Shared<ResolverSettings>,
) -> (ProbeResult, Vec<QueryRecord>) {
    let mut result = ProbeResult {
        target: strings.get(t.name),
        kind: t.kind,
        pod_uid: t.pod_uid.map(|u| strings.get(u)),
        netns: t.netns,
        pid: t.pid,
        server: t.server,
        resolver: resolvers.get(resolver_settings(&t.conf, spec)),
        per_try_seconds: spec.per_try.as_secs_f64(),
        lookups: Vec::new(),
        queries: QueryCounts::default(),
        reply_latencies: Vec::new(),
        fell_back: false,
        final_mode: spec.mode,
        cut_short: false,
        elapsed_seconds: 0.0,
        error: None,
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            result.error = Some(e.to_string());
            return (result, Vec::new());
        }
    };
    let mut records = Vec::new();
    for l in report.lookups {
        let mut failures = Vec::new();
        for q in &l.queries {
            result.queries.add(&q.outcome);
            if got_reply(&q.outcome) && result.reply_latencies.len() < MAX_LATENCIES {
                result.reply_latencies.push(q.latency.as_secs_f64());
            }
            if failures.len() < MAX_FAILURES_QUOTED {
                failures.extend(describe_failure(q));
            }
        }
        result.lookups.push(LookupResult {
            must_exist: Some(l.name.as_str()) != absent_name,
            queries: l.queries.len() as u32,
            name: strings.get(l.name),
            verdict: l.verdict,
            answered_by: l.answered_by.map(|a| strings.get(a)),
            elapsed_seconds: l.elapsed.as_secs_f64(),
            failures,
        });
        records.extend(l.queries);
    }
    result.fell_back = report.fell_back;
    result.final_mode = report.final_mode;
    result.cut_short = report.cut_short;
    result.elapsed_seconds = report.elapsed.as_secs_f64();
    (result, records)
}

impl Collector for DnsCollector {
    type Sample = DnsSample;

    /// A round waits for the DNS server's answers, up to half the interval: the other
    /// collectors do not wait for it.
    fn takes_turns(&self) -> bool {
        false
    }

    fn collect(&mut self) -> Result<DnsSample, CollectError> {
        let deadline = Instant::now() + self.budget();
        let mut unavailable = Vec::new();
        let (cluster, source, configured) = self.configured_server(&mut unavailable);
        let (pod_namespaces, mut targets) = self.pod_targets(configured, &mut unavailable)?;

        let (domain, domain_from) = match cluster.as_ref().and_then(|c| c.domain.clone()) {
            Some(d) => (d, DomainSource::Kubelet),
            None => match targets.iter().find_map(|t| t.conf.cluster_domain()) {
                Some(d) => (d.to_string(), DomainSource::PodSearchList),
                None => (DEFAULT_CLUSTER_DOMAIN.to_string(), DomainSource::Default),
            },
        };
        let host_server = configured.or_else(|| targets.first().map(|t| t.server));
        let Some(host_server) = host_server else {
            return Err(CollectError::unavailable(
                "cluster DNS server",
                format!(
                    "no --dns.server, no clusterDNS in the kubelet's files ({} under --path.rootfs), and no pod whose /etc/resolv.conf could be read ({pod_namespaces} pod network namespaces)",
                    kubelet::CONFIG_PATHS.join(", ")
                ),
            ));
        };
        if self.config.host {
            targets.insert(
                0,
                Target {
                    kind: TargetKind::Host,
                    name: "host".into(),
                    pod_uid: None,
                    netns: None,
                    pid: None,
                    netns_path: None,
                    conf: kubelet_pod_conf(&domain),
                    server: host_server,
                },
            );
        }

        let mut names = if self.config.names.is_empty() {
            vec![format!("kubernetes.default.svc.{domain}")]
        } else {
            self.config.names.clone()
        };
        let absent = (!self.config.absent_name.is_empty()).then(|| self.config.absent_name.clone());
        names.extend(absent.clone());

        let left = deadline.saturating_duration_since(Instant::now());
        let specs: Vec<ProbeSpec> = targets.iter().map(|t| self.spec(t, &names, left)).collect();
        let reports = self.threads.run_all(
            targets
                .iter()
                .zip(&specs)
                .map(|(t, s)| (t.netns_path.clone(), s.clone()))
                .collect(),
            deadline,
        );
        self.strings.forget_unused();
        self.resolvers.forget_unused();
        let mut probes = Vec::with_capacity(targets.len());
        for ((t, spec), report) in targets.into_iter().zip(&specs).zip(reports) {
            let (result, records) = summarize(
                t,
                spec,
                absent.as_deref(),
                report,
                &mut self.strings,
                &mut self.resolvers,
            );
            match &result.error {
                None => self.totals.count(&result, &records),
                Some(e) if unavailable.len() < MAX_LISTED => {
                    let hint = if e.contains("Operation not permitted") {
                        " (entering a network namespace needs CAP_SYS_ADMIN)"
                    } else {
                        ""
                    };
                    unavailable.push(Unavailable::new(
                        format!("DNS probe from {}", result.target),
                        format!("{e}{hint}: not probed this round"),
                    ));
                }
                Some(_) => {}
            }
            probes.push(result);
        }

        let softnet_dropped = match softnet::read(&self.root) {
            Ok(s) => Some(s.dropped),
            Err(e) => {
                tracing::debug!(error = %e, "softnet_stat unreadable: backlog drops are not shown");
                None
            }
        };
        Ok(DnsSample {
            server: ServerChoice {
                source,
                address: configured,
                from: cluster
                    .filter(|_| source == ServerSource::Kubelet)
                    .map(|c| c.sources.iter().map(|p| p.display().to_string()).collect())
                    .unwrap_or_default(),
                cluster_domain: domain,
                cluster_domain_from: domain_from,
            },
            names,
            absent_name: absent,
            budget_seconds: self.budget().as_secs_f64(),
            pod_namespaces,
            probes,
            softnet_dropped,
            totals: self.totals.snapshot(),
            unavailable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::dns::search::Verdict;
    use crate::kernel::dns::test_server::{Reply, TestServer};

    /// A host with no process and no pod: a temporary procfs and rootfs, the
    /// kubelet's config written when given.
    struct Host {
        proc: tempfile::TempDir,
        rootfs: tempfile::TempDir,
    }

    impl Host {
        fn new(kubelet_config: Option<&str>) -> Host {
            let h = Host {
                proc: tempfile::tempdir().unwrap(),
                rootfs: tempfile::tempdir().unwrap(),
            };
            if let Some(c) = kubelet_config {
                let dir = h.rootfs.path().join("var/lib/kubelet");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("config.yaml"), c).unwrap();
            }
            h
        }

        fn collector(&self, server: Option<SocketAddr>) -> DnsCollector {
            DnsCollector::new(
                HostRoot {
                    proc: self.proc.path().to_path_buf(),
                    sys: "/sys".into(),
                    rootfs: self.rootfs.path().to_path_buf(),
                },
                DnsConfig {
                    server,
                    names: vec![],
                    absent_name: DEFAULT_ABSENT_NAME.into(),
                    pods: 3,
                    timeout: Duration::from_secs(5),
                    pod_namespaces: vec![],
                    host: true,
                    interval: Duration::from_secs(2),
                },
            )
        }
    }

    const CORP: &str = "clusterDNS: [10.96.0.10]\nclusterDomain: corp.example\n";

    #[test]
    fn no_server_anywhere_is_unavailable_naming_where_it_looked() {
        let host = Host::new(None);
        let err = host.collector(None).collect().unwrap_err();
        let CollectError::Unavailable(u) = err else {
            panic!("{err}")
        };
        assert_eq!(u.what, "cluster DNS server");
        assert!(
            u.hint.contains("/var/lib/kubelet/config.yaml"),
            "{}",
            u.hint
        );
        assert!(u.hint.contains("0 pod network namespaces"), "{}", u.hint);
    }

    #[test]
    fn the_server_is_the_flag_then_the_kubelets() {
        let host = Host::new(Some(CORP));
        let mut u = Vec::new();
        let (_, source, server) = host.collector(None).configured_server(&mut u);
        assert_eq!(source, ServerSource::Kubelet);
        assert_eq!(server, Some("10.96.0.10:53".parse().unwrap()));
        let flag = "10.0.0.53:53".parse().unwrap();
        let (cluster, source, server) = host.collector(Some(flag)).configured_server(&mut u);
        assert_eq!((source, server), (ServerSource::Flag, Some(flag)));
        assert_eq!(cluster.unwrap().domain.as_deref(), Some("corp.example"));
        assert!(u.is_empty());

        // A kubelet config that does not parse is named, and the pods decide.
        let broken = Host::new(Some("clusterDNS: [not-an-ip]\n"));
        let (_, source, server) = broken.collector(None).configured_server(&mut u);
        assert_eq!((source, server), (ServerSource::PodResolvConf, None));
        assert_eq!(u.len(), 1);
        assert!(u[0].hint.contains("config.yaml"), "{:?}", u[0]);
    }

    #[test]
    fn the_host_asks_like_a_pod_of_namespace_default() {
        let server = TestServer::start(|q, _| match (q.name.as_str(), q.qtype) {
            ("kubernetes.default.svc.corp.example", 1) => {
                Reply::Answer(vec![[10, 96, 0, 1].into()])
            }
            ("kubernetes.default.svc.corp.example", _) => Reply::Answer(vec![]),
            _ => Reply::Rcode(3),
        });
        let host = Host::new(Some(CORP));
        let mut c = host.collector(Some(server.addr));
        let s = c.collect().unwrap();
        assert_eq!(s.server.source, ServerSource::Flag);
        assert_eq!(s.server.cluster_domain, "corp.example");
        assert_eq!(s.server.cluster_domain_from, DomainSource::Kubelet);
        assert_eq!(
            s.names,
            ["kubernetes.default.svc.corp.example", DEFAULT_ABSENT_NAME]
        );
        assert_eq!(s.pod_namespaces, 0);
        assert_eq!(s.probes.len(), 1);
        let p = &s.probes[0];
        assert_eq!((p.kind, &*p.target), (TargetKind::Host, "host"));
        assert_eq!(p.resolver.search[0], "default.svc.corp.example");
        let verdicts: Vec<&Verdict> = p.lookups.iter().map(|l| &l.verdict).collect();
        assert_eq!(verdicts, [&Verdict::Answered, &Verdict::NxDomain]);
        assert!(p.lookups.iter().all(|l| l.failure().is_none()));
        // ndots:5: three search domains before each name as-is, A and AAAA each.
        assert_eq!(p.queries.sent, 16);
        assert_eq!(p.queries.failed(), 0);
        assert_eq!(p.reply_latencies.len(), 16);
        // Half of the 2 s interval, for 2 names x 2 candidates x 2 tries of a dead server.
        assert!(p.per_try_seconds <= 0.125, "{}", p.per_try_seconds);
        assert_eq!(server.received().len(), 16);
        let t = &s.totals[0];
        assert_eq!(t.requests["answer"], 1);
        assert_eq!(t.requests["nxdomain"], 14);
        assert_eq!(t.lookups["ok"], 2);
        assert_eq!(t.request_duration.count, 16);
        // The totals keep counting across rounds.
        let s2 = c.collect().unwrap();
        assert_eq!(s2.totals[0].requests["nxdomain"], 28);
        assert_eq!(s2.totals[0].probes, 2);
    }

    #[test]
    fn a_silent_server_costs_the_round_no_more_than_its_budget() {
        let server = TestServer::start(|_, _| Reply::Drop);
        let host = Host::new(Some(CORP));
        let mut c = host.collector(Some(server.addr));
        let started = Instant::now();
        let s = c.collect().unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1400), "{took:?}");
        let p = &s.probes[0];
        assert!(p.queries.timeout > 0, "{p:?}");
        assert!(p
            .lookups
            .iter()
            .all(|l| matches!(l.verdict, Verdict::Timeout | Verdict::Unfinished)));
        assert!(p.lookups[0].failures[0].contains("timeout after"), "{p:?}");
        assert_eq!(s.totals[0].lookups.get("ok"), None);
    }
}
