//! `nodediag_dns_*`: queries and lookups per server since start, their latency
//! histograms, and the kernel's input-backlog drops. No per-pod series: the probed
//! pods change every round, so a pod label would leave a trail of stale series.

use super::encode::{Encoder, Kind};
use crate::collect::dns::totals::ServerTotals;
use crate::collect::DnsSample;
use crate::store::Snapshot;

/// Every `result` of `nodediag_dns_requests_total`, written even at zero so `rate()`
/// has a start.
const REQUEST_RESULTS: [&str; 8] = [
    "answer",
    "nxdomain",
    "nodata",
    "truncated",
    "servfail",
    "refused",
    "timeout",
    "error",
];
/// Every `result` of `nodediag_dns_lookups_total`: `ok` or how the lookup failed.
const LOOKUP_RESULTS: [&str; 9] = [
    "ok",
    "nxdomain",
    "nodata",
    "answered",
    "servfail",
    "refused",
    "timeout",
    "unreachable",
    "error",
];

pub fn render(snap: &Snapshot, e: &mut Encoder) {
    let Some((_, s)) = snap.latest::<DnsSample>() else {
        return;
    };
    e.family(
        "nodediag_dns_server_info",
        Kind::Gauge,
        "The DNS server the probes ask and where it came from (source: flag, kubelet, pod_resolv_conf); server is empty when each pod asks its own resolv.conf's nameserver.",
    );
    let server = s
        .server
        .address
        .map(|a| crate::collect::dns::totals::server_label(&a))
        .unwrap_or_default();
    e.sample(
        "nodediag_dns_server_info",
        &[("server", &server), ("source", s.server.source.as_str())],
        1.0,
    );
    e.single(
        "nodediag_dns_pod_network_namespaces",
        Kind::Gauge,
        "Pod network namespaces the DNS probe takes turns through (--dns.pods of them each round).",
        s.pod_namespaces as f64,
    );
    if let Some(d) = s.softnet_dropped {
        e.single(
            "nodediag_softnet_dropped_total",
            Kind::Counter,
            "Packets dropped at a full CPU input backlog (net.core.netdev_max_backlog), summed over CPUs (/proc/net/softnet_stat column 2): losses that look like the conntrack race from a pod.",
            d as f64,
        );
    }
    if s.totals.is_empty() {
        return;
    }
    counters(
        e,
        &s.totals,
        "nodediag_dns_requests_total",
        "DNS queries the probes sent from pods and the host, by server and result (a query the probe's own deadline cut is not counted).",
        &REQUEST_RESULTS,
        |t| &t.requests,
    );
    e.family(
        "nodediag_dns_request_duration_seconds",
        Kind::Histogram,
        "Time from a probe query to its reply, whatever the reply said; timeouts are counted in nodediag_dns_requests_total only.",
    );
    histograms(e, &s.totals, "nodediag_dns_request_duration_seconds", |t| {
        &t.request_duration
    });
    counters(
        e,
        &s.totals,
        "nodediag_dns_lookups_total",
        "Name lookups as a pod's getaddrinfo makes them (search list, A and AAAA), by server and how they ended: ok, or the failure (nxdomain for a name that must exist, answered for the one that must not).",
        &LOOKUP_RESULTS,
        |t| &t.lookups,
    );
    e.family(
        "nodediag_dns_lookup_duration_seconds",
        Kind::Histogram,
        "Time a successful lookup took, as the pod's getaddrinfo would: every search-list candidate and retry included.",
    );
    histograms(e, &s.totals, "nodediag_dns_lookup_duration_seconds", |t| {
        &t.lookup_duration
    });
    e.family(
        "nodediag_dns_fallbacks_total",
        Kind::Counter,
        "Probes in which glibc's resolver fell back to single-request after a reply to only one of A and AAAA (the conntrack race's mark; each costs the pod a full timeout).",
    );
    for t in &s.totals {
        e.sample(
            "nodediag_dns_fallbacks_total",
            &[("server", &t.server)],
            t.fallbacks as f64,
        );
    }
}

fn counters(
    e: &mut Encoder,
    totals: &[ServerTotals],
    name: &str,
    help: &str,
    results: &[&str],
    of: fn(&ServerTotals) -> &std::collections::BTreeMap<&'static str, u64>,
) {
    e.family(name, Kind::Counter, help);
    for t in totals {
        for r in results {
            let n = of(t).get(r).copied().unwrap_or(0);
            e.sample(name, &[("server", &t.server), ("result", r)], n as f64);
        }
    }
}

/// The series of one histogram family per server; the family is started by the
/// caller.
fn histograms(
    e: &mut Encoder,
    totals: &[ServerTotals],
    name: &str,
    of: fn(&ServerTotals) -> &crate::collect::dns::totals::Histogram,
) {
    for t in totals {
        let h = of(t);
        e.histogram(
            name,
            &[("server", &t.server)],
            &h.cumulative(),
            h.sum_seconds,
            h.count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::dns::totals::{Histogram, ServerTotals};
    use crate::collect::dns::{DomainSource, ServerChoice, ServerSource};
    use crate::metrics::encode::Format;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn sample() -> DnsSample {
        let mut request_duration = Histogram::default();
        for s in [0.0004, 0.003, 0.2] {
            request_duration.observe(s);
        }
        let mut lookup_duration = Histogram::default();
        lookup_duration.observe(1.5);
        DnsSample {
            server: ServerChoice {
                source: ServerSource::Kubelet,
                address: Some("10.96.0.10:53".parse().unwrap()),
                from: vec![],
                cluster_domain: "cluster.local".into(),
                cluster_domain_from: DomainSource::Kubelet,
            },
            names: vec![],
            absent_name: None,
            budget_seconds: 7.5,
            pod_namespaces: 40,
            probes: vec![],
            softnet_dropped: Some(12),
            totals: vec![ServerTotals {
                server: "10.96.0.10".into(),
                requests: [("answer", 2), ("timeout", 1)].into_iter().collect(),
                lookups: [("ok", 1), ("timeout", 1)].into_iter().collect(),
                request_duration,
                lookup_duration,
                fallbacks: 1,
                probes: 2,
            }],
            unavailable: vec![],
        }
    }

    #[test]
    fn counters_start_at_zero_for_every_result_and_histograms_are_per_server() {
        let store = crate::store::Store::new("n".into(), Duration::from_secs(300));
        store.register("dns", Duration::from_secs(15));
        store.record(
            "dns",
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            Ok(Arc::new(sample())),
        );
        let mut e = Encoder::new(Format::Text);
        render(&store.snapshot(), &mut e);
        let out = e.finish();
        for line in [
            "nodediag_dns_server_info{server=\"10.96.0.10\",source=\"kubelet\"} 1",
            "nodediag_dns_pod_network_namespaces 40",
            "nodediag_softnet_dropped_total 12",
            "nodediag_dns_requests_total{server=\"10.96.0.10\",result=\"answer\"} 2",
            "nodediag_dns_requests_total{server=\"10.96.0.10\",result=\"servfail\"} 0",
            "nodediag_dns_requests_total{server=\"10.96.0.10\",result=\"timeout\"} 1",
            "nodediag_dns_request_duration_seconds_bucket{server=\"10.96.0.10\",le=\"0.0005\"} 1",
            "nodediag_dns_request_duration_seconds_bucket{server=\"10.96.0.10\",le=\"0.005\"} 2",
            "nodediag_dns_request_duration_seconds_bucket{server=\"10.96.0.10\",le=\"+Inf\"} 3",
            "nodediag_dns_request_duration_seconds_count{server=\"10.96.0.10\"} 3",
            "nodediag_dns_lookups_total{server=\"10.96.0.10\",result=\"ok\"} 1",
            "nodediag_dns_lookups_total{server=\"10.96.0.10\",result=\"unreachable\"} 0",
            "nodediag_dns_lookup_duration_seconds_bucket{server=\"10.96.0.10\",le=\"1\"} 0",
            "nodediag_dns_lookup_duration_seconds_bucket{server=\"10.96.0.10\",le=\"2.5\"} 1",
            "nodediag_dns_lookup_duration_seconds_sum{server=\"10.96.0.10\"} 1.5",
            "nodediag_dns_fallbacks_total{server=\"10.96.0.10\"} 1",
            "# TYPE nodediag_dns_request_duration_seconds histogram",
            "# TYPE nodediag_dns_requests_total counter",
        ] {
            assert!(out.contains(&format!("{line}\n")), "no {line:?} in:\n{out}");
        }
        assert_eq!(
            out.matches("nodediag_dns_requests_total{").count(),
            REQUEST_RESULTS.len()
        );
    }

    #[test]
    fn nothing_without_a_sample() {
        let store = crate::store::Store::new("n".into(), Duration::from_secs(300));
        let mut e = Encoder::new(Format::Text);
        render(&store.snapshot(), &mut e);
        assert!(e.finish().is_empty());
    }
}
