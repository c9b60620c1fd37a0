//! Counts since the collector started, per server: the counters and histograms of
//! `/metrics` (a scrape must not depend on which rounds are still in the window).

use super::sample::{got_reply, query_result, ProbeResult};
use crate::collect::latency_histogram::{self, Bounds};
use crate::kernel::dns::exchange::QueryRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Upper bounds of the latency histograms, seconds: 0.5 ms (a healthy node-local
/// answer) to 5 s (glibc's default timeout), with the 1 s dns_slow default exact.
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Servers counted one by one. Pods choose their own nameservers when the server
/// comes from their resolv.conf, so beyond this the rest share one series.
pub const MAX_SERVERS: usize = 8;
pub const OTHER_SERVERS: &str = "other";

/// The latencies of DNS requests and lookups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DnsBounds;

impl Bounds for DnsBounds {
    const BOUNDS: &'static [f64] = &BUCKETS;
}

pub type Histogram = latency_histogram::Histogram<DnsBounds>;

/// One server's counts since start.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerTotals {
    /// `10.96.0.10`, `10.96.0.10:5353` off port 53, or `other`.
    pub server: String,
    /// Queries by result (answer, nxdomain, nodata, truncated, servfail, refused,
    /// timeout, error).
    pub requests: BTreeMap<&'static str, u64>,
    /// Lookups by how they ended for the pod: `ok` or the failure.
    pub lookups: BTreeMap<&'static str, u64>,
    /// Latency of the queries that got a reply.
    pub request_duration: Histogram,
    /// Latency of the lookups that succeeded, as getaddrinfo took it.
    pub lookup_duration: Histogram,
    /// Probes in which glibc's fallback to single-request happened.
    pub fallbacks: u64,
    pub probes: u64,
}

/// How a server is named in labels and findings: the address, with the port only
/// when it is not 53.
pub fn server_label(addr: &SocketAddr) -> String {
    if addr.port() == 53 {
        addr.ip().to_string()
    } else {
        addr.to_string()
    }
}

#[derive(Debug, Default)]
pub struct Totals {
    by_server: BTreeMap<String, ServerTotals>,
}

impl Totals {
    /// The counts of one server, created on first use (past MAX_SERVERS, the shared
    /// `other` ones).
    fn of(&mut self, server: &SocketAddr) -> &mut ServerTotals {
        let mut label = server_label(server);
        if !self.by_server.contains_key(&label) && self.by_server.len() >= MAX_SERVERS {
            label = OTHER_SERVERS.into();
        }
        self.by_server
            .entry(label.clone())
            .or_insert_with(|| ServerTotals {
                server: label,
                ..ServerTotals::default()
            })
    }

    /// Counts a probe that ran: every query it sent, with the raw records (the
    /// result's reply latencies are capped), and every lookup it judged.
    pub fn count(&mut self, result: &ProbeResult, queries: &[QueryRecord]) {
        let t = self.of(&result.server);
        t.probes += 1;
        t.fallbacks += u64::from(result.fell_back);
        for q in queries {
            if let Some(r) = query_result(&q.outcome) {
                *t.requests.entry(r).or_default() += 1;
            }
            if got_reply(&q.outcome) {
                t.request_duration.observe(q.latency.as_secs_f64());
            }
        }
        for l in result.lookups.iter().filter(|l| l.judged()) {
            *t.lookups.entry(l.failure().unwrap_or("ok")).or_default() += 1;
            if l.succeeded() {
                t.lookup_duration.observe(l.elapsed_seconds);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<ServerTotals> {
        self.by_server.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let mut h = Histogram::default();
        for s in [0.0004, 0.001, 0.3, 1.0, 7.0] {
            h.observe(s);
        }
        let c = h.cumulative();
        assert_eq!(c.len(), BUCKETS.len() + 1);
        assert_eq!(c[0], (0.0005, 1));
        assert_eq!(c[1], (0.001, 2), "a bound holds its own value");
        assert_eq!(c[10], (1.0, 4));
        assert_eq!(*c.last().unwrap(), (f64::INFINITY, 5));
        assert_eq!(h.count, 5);
        assert!(Histogram::default()
            .cumulative()
            .iter()
            .all(|(_, n)| *n == 0));
    }

    #[test]
    fn servers_are_named_without_the_usual_port() {
        assert_eq!(
            server_label(&"10.96.0.10:53".parse().unwrap()),
            "10.96.0.10"
        );
        assert_eq!(server_label(&"[fd00::a]:53".parse().unwrap()), "fd00::a");
        assert_eq!(
            server_label(&"10.96.0.10:5353".parse().unwrap()),
            "10.96.0.10:5353"
        );
    }

    #[test]
    fn servers_past_the_limit_share_one_series() {
        let mut t = Totals::default();
        for i in 0..(MAX_SERVERS as u8 + 3) {
            t.of(&SocketAddr::from(([10, 0, 0, i], 53))).probes += 1;
        }
        let s = t.snapshot();
        assert_eq!(s.len(), MAX_SERVERS + 1);
        let other = s.iter().find(|s| s.server == OTHER_SERVERS).unwrap();
        assert_eq!(other.probes, 3);
    }
}
