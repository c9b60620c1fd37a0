//! `nodediag_dns_*`: queries and lookups per server since start, their latency
//! histograms, and the kernel's input-backlog drops. No per-pod series: the probed
//! pods change every round, so a pod label would leave a trail of stale series.

use super::family::Families;
use super::histogram::HistogramSeries;
use crate::collect::dns::totals::{Histogram, ServerTotals, BUCKETS};
use crate::collect::DnsSample;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::fmt;

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

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<DnsSample>() else {
        return Ok(());
    };
    let server = s
        .server
        .address
        .map(|a| crate::collect::dns::totals::server_label(&a))
        .unwrap_or_default();
    e.gauge(
        "nodediag_dns_server_info",
        "The DNS server the probes ask and where it came from (source: flag, kubelet, pod_resolv_conf); server is empty when each pod asks its own resolv.conf's nameserver.",
        [(
            [("server", server.as_str()), ("source", s.server.source.as_str())],
            1u64,
        )],
    )?;
    e.gauge_value(
        "nodediag_dns_pod_network_namespaces",
        "Pod network namespaces the DNS probe takes turns through (--dns.pods of them each round).",
        s.pod_namespaces,
    )?;
    if let Some(d) = s.softnet_dropped {
        e.counter_value(
            "nodediag_softnet_dropped_total",
            "Packets dropped at a full CPU input backlog (net.core.netdev_max_backlog), summed over CPUs (/proc/net/softnet_stat column 2): losses that look like the conntrack race from a pod.",
            d,
        )?;
    }
    let totals = &s.totals;
    e.counter(
        "nodediag_dns_requests_total",
        "DNS queries the probes sent from pods and the host, by server and result (a query the probe's own deadline cut is not counted).",
        by_result(totals, &REQUEST_RESULTS, |t| &t.requests),
    )?;
    e.histogram(
        "nodediag_dns_request_duration_seconds",
        "Time from a probe query to its reply, whatever the reply said; timeouts are counted in nodediag_dns_requests_total only.",
        totals
            .iter()
            .map(|t| (server_label(t), histogram(&t.request_duration))),
    )?;
    e.counter(
        "nodediag_dns_lookups_total",
        "Name lookups as a pod's getaddrinfo makes them (search list, A and AAAA), by server and how they ended: ok, or the failure (nxdomain for a name that must exist, answered for the one that must not).",
        by_result(totals, &LOOKUP_RESULTS, |t| &t.lookups),
    )?;
    e.histogram(
        "nodediag_dns_lookup_duration_seconds",
        "Time a successful lookup took, as the pod's getaddrinfo would: every search-list candidate and retry included.",
        totals
            .iter()
            .map(|t| (server_label(t), histogram(&t.lookup_duration))),
    )?;
    e.counter(
        "nodediag_dns_fallbacks_total",
        "Probes in which glibc's resolver fell back to single-request after a reply to only one of A and AAAA (the conntrack race's mark; each costs the pod a full timeout).",
        totals.iter().map(|t| (server_label(t), t.fallbacks)),
    )
}

fn server_label(t: &ServerTotals) -> [(&'static str, &str); 1] {
    [("server", t.server.as_str())]
}

/// Every (server, result) pair, at zero when nothing ended that way yet.
fn by_result<'a>(
    totals: &'a [ServerTotals],
    results: &'a [&'static str],
    of: fn(&ServerTotals) -> &BTreeMap<&'static str, u64>,
) -> impl Iterator<Item = ([(&'static str, &'a str); 2], u64)> + 'a {
    totals.iter().flat_map(move |t| {
        results.iter().map(move |r| {
            let n = of(t).get(r).copied().unwrap_or(0);
            ([("server", t.server.as_str()), ("result", *r)], n)
        })
    })
}

fn histogram(h: &Histogram) -> HistogramSeries<'_> {
    HistogramSeries::new(&BUCKETS, &h.counts, h.sum_seconds, h.count, Some(&h.native))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::dns::{DomainSource, ServerChoice, ServerSource};
    use crate::metrics::exposition::{Exposition, Format};
    use crate::store::Store;
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
        let store = Arc::new(Store::new("n".into(), Duration::from_secs(300)));
        store.register("dns", Duration::from_secs(15));
        store.record(
            "dns",
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            Ok(Arc::new(sample())),
        );
        let out =
            Exposition::of_signal::<crate::collect::DnsSample>(store, encode).text(Format::Text);
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
        let store = Arc::new(Store::new("n".into(), Duration::from_secs(300)));
        store.register("dns", Duration::from_secs(15));
        for format in Format::ALL {
            let out = Exposition::of_signal::<crate::collect::DnsSample>(store.clone(), encode)
                .encode(format);
            let empty: &[u8] = if format == Format::OpenMetrics {
                b"# EOF\n"
            } else {
                b""
            };
            assert_eq!(out.unwrap(), empty, "{format:?}");
        }
    }
}
