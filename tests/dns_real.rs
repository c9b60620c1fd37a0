//! The DNS probe against a real resolver: dnsmasq in its own network namespace,
//! reached from pod namespaces through a node namespace that DNATs a service
//! address to it, as kube-proxy does (tests/common/dns.rs draws the topology).
//! Each test breaks the path in one way a cluster's DNS breaks and checks that the
//! probe, run from inside the pods, sees what their glibc would.

mod common;

use common::dns::{DnsLab, ABSENT_NAME, CLUSTER_IP, SERVER_IP, SERVICE_IP, SERVICE_NAME};
use nodediag::kernel::dns::exchange::{QueryOutcome, QueryRecord, SendMode};
use nodediag::kernel::dns::probe::{ProbeReport, ProbeSpec};
use nodediag::kernel::dns::probe_threads::ProbeThreads;
use nodediag::kernel::dns::resolv_conf;
use nodediag::kernel::dns::search::Verdict;
use std::time::{Duration, Instant};

const NAMES: [&str; 3] = [SERVICE_NAME, "kubernetes.default", ABSENT_NAME];

/// Probes every pod of the lab at once, each from inside its namespace.
fn probe_pods(lab: &DnsLab, specs: Vec<ProbeSpec>, budget: Duration) -> Vec<ProbeReport> {
    let targets = specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| (Some(lab.pod_netns(i)), s))
        .collect();
    ProbeThreads::default()
        .run_all(targets, Instant::now() + budget)
        .into_iter()
        .map(|r| r.expect("the probe ran"))
        .collect()
}

fn all_queries(r: &ProbeReport) -> impl Iterator<Item = &QueryRecord> {
    r.lookups.iter().flat_map(|l| l.queries.iter())
}

fn verdicts(r: &ProbeReport) -> Vec<Verdict> {
    r.lookups.iter().map(|l| l.verdict.clone()).collect()
}

#[test]
fn healthy_pods_resolve_through_the_service_dnat() {
    let Some(lab) = DnsLab::new("ok", 2) else {
        return;
    };
    let specs = (0..2)
        .map(|i| lab.pod_spec(i, &NAMES, Duration::from_secs(2)))
        .collect();
    let reports = probe_pods(&lab, specs, Duration::from_secs(10));
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(
            verdicts(r),
            [Verdict::Answered, Verdict::Answered, Verdict::NxDomain],
            "pod {i}: {r:#?}"
        );
        assert_eq!(r.server.to_string(), format!("{SERVICE_IP}:53"));
        assert_eq!(
            r.lookups[0].addresses,
            vec![CLUSTER_IP.parse::<std::net::IpAddr>().unwrap()]
        );
        // ndots:5: the service's full name walks the 3 search domains first (8
        // queries), the short one answers at its second candidate (4), the absent
        // one is asked 4 times over (8).
        let per_lookup: Vec<usize> = r.lookups.iter().map(|l| l.queries.len()).collect();
        assert_eq!(per_lookup, [8, 4, 8], "pod {i}");
        assert!(
            all_queries(r).all(|q| matches!(
                q.outcome,
                QueryOutcome::Answer { .. } | QueryOutcome::NxDomain | QueryOutcome::NoData
            )),
            "pod {i}: {r:#?}"
        );
        assert!(!r.fell_back && !r.cut_short);
    }
    // The node's conntrack carried the queries: service address out, server back.
    let entries = lab.node_exec(&["conntrack", "-L", "-p", "udp", "--orig-dst", SERVICE_IP]);
    for pod in ["10.55.0.2", "10.55.1.2"] {
        assert!(
            entries
                .lines()
                .any(|l| l.contains(&format!("src={pod} dst={SERVICE_IP}"))
                    && l.contains(&format!("src={SERVER_IP} dst={pod}"))),
            "no DNATed flow for {pod} in:\n{entries}"
        );
    }
    // And dnsmasq saw the pods' own addresses: DNAT rewrites only the destination.
    let log = lab.dnsmasq_log();
    assert!(
        log.contains("from 10.55.0.2") && log.contains("from 10.55.1.2"),
        "{log}"
    );
}

#[test]
fn a_stopped_server_fails_every_lookup() {
    let Some(mut lab) = DnsLab::new("stop", 2) else {
        return;
    };
    lab.stop_dnsmasq();
    let per_try = Duration::from_millis(300);
    let specs = (0..2).map(|i| lab.pod_spec(i, &NAMES, per_try)).collect();
    let reports = probe_pods(&lab, specs, Duration::from_secs(10));
    for (i, r) in reports.iter().enumerate() {
        // Nothing listens on the server's port, so its kernel answers with ICMP port
        // unreachable, which conntrack un-NATs back to the pod: ECONNREFUSED, and
        // glibc gives up the name at once. The server's ICMP rate limit (a burst of
        // 6, then one a second per peer) turns later queries into timeouts.
        for l in &r.lookups {
            assert!(
                matches!(l.verdict, Verdict::Unreachable | Verdict::Timeout),
                "pod {i}: {l:#?}"
            );
            assert!(l.addresses.is_empty());
        }
        assert!(
            all_queries(r).any(|q| matches!(&q.outcome,
                QueryOutcome::NetworkError { error } if error.contains("refused"))),
            "pod {i}: {r:#?}"
        );
        assert!(!r.cut_short, "pod {i}: the whole probe fits in the budget");
        let outcomes: Vec<String> = all_queries(r).map(|q| format!("{:?}", q.outcome)).collect();
        eprintln!(
            "pod {i}: {verdicts:?}: {outcomes:?}",
            verdicts = verdicts(r)
        );
    }
}

#[test]
fn a_policy_dropping_port_53_times_out_every_query() {
    let Some(lab) = DnsLab::new("drop", 1) else {
        return;
    };
    lab.node_nft(&format!(
        "table ip nddns_policy {{\n\
           chain forward {{\n\
             type filter hook forward priority filter;\n\
             ip daddr {SERVER_IP} udp dport 53 drop\n\
           }}\n\
         }}\n"
    ));
    let per_try = Duration::from_millis(200);
    let reports = probe_pods(
        &lab,
        vec![lab.pod_spec(0, &NAMES, per_try)],
        Duration::from_secs(10),
    );
    let r = &reports[0];
    assert_eq!(
        verdicts(r),
        [Verdict::Timeout, Verdict::Timeout, Verdict::Timeout],
        "{r:#?}"
    );
    // Each name: the first search candidate, then the name as-is, 2 tries each.
    for l in &r.lookups {
        assert_eq!(l.queries.len(), 8, "{}", l.name);
        assert!(l
            .queries
            .iter()
            .all(|q| q.outcome == QueryOutcome::Timeout && q.latency >= per_try));
        assert!(l.elapsed >= per_try * 4);
    }
}

#[test]
fn a_slow_server_shows_its_delay_in_every_answer() {
    let Some(mut lab) = DnsLab::new("slow", 1) else {
        return;
    };
    let delay = Duration::from_millis(150);
    lab.slow_down(delay);
    let reports = probe_pods(
        &lab,
        vec![lab.pod_spec(0, &NAMES, Duration::from_secs(2))],
        Duration::from_secs(15),
    );
    let r = &reports[0];
    assert_eq!(
        verdicts(r),
        [Verdict::Answered, Verdict::Answered, Verdict::NxDomain]
    );
    assert!(all_queries(r).all(|q| q.latency >= delay), "{r:#?}");
    // Four candidates one after another: what ndots:5 costs a pod on a slow path.
    assert!(
        r.lookups[0].elapsed >= delay * 4,
        "{:?}",
        r.lookups[0].elapsed
    );
}

#[test]
fn dropping_every_fourth_query_times_out_one_in_four_and_forces_single_request() {
    let Some(lab) = DnsLab::new("nth", 1) else {
        return;
    };
    lab.node_nft(&format!(
        "table ip nddns_loss {{\n\
           chain forward {{\n\
             type filter hook forward priority filter;\n\
             ip daddr {SERVER_IP} udp dport 53 numgen inc mod 4 0 drop\n\
           }}\n\
         }}\n"
    ));
    let per_try = Duration::from_millis(150);
    let absolute = format!("{SERVICE_NAME}.");
    let names = vec![absolute.as_str(); 30];
    let reports = probe_pods(
        &lab,
        vec![lab.pod_spec(0, &names, per_try)],
        Duration::from_secs(30),
    );
    let r = &reports[0];
    assert!(!r.cut_short);
    // The losses cost time, not answers: every try after a loss gets through.
    assert!(
        r.lookups.iter().all(|l| l.verdict == Verdict::Answered),
        "{r:#?}"
    );
    let sent = all_queries(r).count();
    let timeouts = all_queries(r)
        .filter(|q| q.outcome == QueryOutcome::Timeout)
        .count();
    let ratio = timeouts as f64 / sent as f64;
    eprintln!(
        "{timeouts} of {sent} queries timed out; the probe ended in {:?} mode",
        r.final_mode
    );
    assert!(sent >= 60, "{sent} queries");
    assert!(
        (ratio - 0.25).abs() <= 0.03,
        "{timeouts} of {sent} timed out"
    );
    // A lost A or AAAA with its partner answered is what makes glibc switch to
    // single-request, then single-request-reopen, for the rest of the process.
    assert!(r.fell_back);
    assert_ne!(r.final_mode, SendMode::Parallel);
}

#[test]
fn a_resolv_conf_without_nameserver_sends_the_pod_to_its_own_loopback() {
    let Some(lab) = DnsLab::new("nons", 1) else {
        return;
    };
    std::fs::write(
        lab.resolv_conf(0),
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver kube-dns.kube-system\noptions ndots:5\n\u{0}\u{ff}garbage\n",
    )
    .unwrap();
    let conf = resolv_conf::read(&lab.resolv_conf(0)).unwrap();
    assert!(conf.nameservers.is_empty());
    assert_eq!(conf.ignored.len(), 2, "{:?}", conf.ignored);
    let spec = lab.pod_spec(0, &[SERVICE_NAME], Duration::from_millis(300));
    assert_eq!(spec.server.to_string(), "127.0.0.1:53");
    let reports = probe_pods(&lab, vec![spec], Duration::from_secs(5));
    assert_eq!(verdicts(&reports[0]), [Verdict::Unreachable]);

    // A pod whose root cannot be read is an error naming the path, not a panic.
    let err = resolv_conf::read_in_root(std::path::Path::new("/proc/999999999/root"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/proc/999999999/root"), "{err}");
}
