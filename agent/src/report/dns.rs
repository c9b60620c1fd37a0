//! The report's DNS section: each server and each probed pod over the window, pods
//! with failures first, and what rose beside them in conntrack and the input backlog.

use crate::collect::dns::{DnsSample, ServerSource, TargetKind};
use crate::diagnose::dns::{view, Tally};
use crate::store::Snapshot;
use std::fmt::Write;
use std::time::SystemTime;

/// Pods spelled out in the section; the API has them all.
const PODS_LISTED: usize = 10;

fn source(s: ServerSource) -> &'static str {
    match s {
        ServerSource::Flag => "--dns.server",
        ServerSource::Kubelet => "the kubelet's clusterDNS",
        ServerSource::PodResolvConf => "each pod's resolv.conf",
    }
}

/// The collector line of the report: this round.
pub fn summary(s: &DnsSample) -> String {
    let server = match s.server.address {
        Some(a) => crate::collect::dns::totals::server_label(&a),
        None => "each pod's nameserver".into(),
    };
    let pods = s.pods_probed().count();
    let host = if s.probes.iter().any(|p| p.kind == TargetKind::Host) {
        "the host and "
    } else {
        ""
    };
    let (sent, failed) = s.probes.iter().fold((0, 0), |(n, f), p| {
        (n + p.queries.judged(), f + p.queries.failed())
    });
    let slowest = s
        .probes
        .iter()
        .flat_map(|p| p.lookups.iter())
        .filter(|l| l.succeeded())
        .map(|l| l.elapsed_seconds)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    format!(
        "server {server} ({}): {host}{pods} of {} pods this round, {sent} queries, {failed} failed{}",
        source(s.server.source),
        s.pod_namespaces,
        slowest
            .map(|v| format!(", slowest lookup {}", ms(v)))
            .unwrap_or_default()
    )
}

fn ms(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.1}ms", seconds * 1e3)
    } else {
        format!("{seconds:.2}s")
    }
}

fn line(t: &Tally) -> String {
    let opt = |v: Option<f64>| v.map_or("-".into(), ms);
    let mut s = format!(
        "{} queries, {} failed ({:.1}%); {} lookups, {} failed; lookups p50 {} p99 {}, queries p99 {}",
        t.queries.judged(),
        t.failed_queries,
        t.failure_ratio.unwrap_or(0.0) * 100.0,
        t.lookups,
        t.failed_lookups,
        opt(t.lookup_p50_seconds),
        opt(t.lookup_p99_seconds),
        opt(t.query_p99_seconds)
    );
    let q = &t.queries;
    let kinds: Vec<String> = [
        (q.timeout, "timeout"),
        (q.servfail, "SERVFAIL"),
        (q.refused, "REFUSED"),
        (q.network_error, "network error"),
        (q.other_rcode, "other rcode"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, k)| format!("{n} {k}"))
    .collect();
    if !kinds.is_empty() {
        let _ = write!(s, " [{}]", kinds.join(", "));
    }
    if t.fallbacks > 0 {
        let _ = write!(s, "; {} fallbacks to single-request", t.fallbacks);
    }
    if t.probe_errors > 0 {
        let _ = write!(s, "; {} probes could not run", t.probe_errors);
    }
    s
}

pub fn section(out: &mut String, snap: &Snapshot, _now: SystemTime) {
    let Some(v) = view(snap, None) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nDNS over the last {:.0}s ({} rounds; server from {}; names {}):",
        v.window_seconds,
        v.rounds,
        source(v.server.source),
        v.names.join(", ")
    );
    for s in &v.servers {
        let _ = writeln!(out, "  server {}: {}", s.server, line(&s.tally));
    }
    // The host, then pods that saw failures, then the others.
    let mut targets: Vec<_> = v.targets.iter().collect();
    targets.sort_by_key(|t| (t.kind == TargetKind::Pod, !t.tally.failed()));
    let width = targets
        .iter()
        .take(PODS_LISTED + 1)
        .map(|t| t.target.len())
        .max()
        .unwrap_or(0);
    for t in targets.iter().take(PODS_LISTED + 1) {
        let _ = writeln!(
            out,
            "  {:<width$}  ndots:{}, {} search domains, {:.2}s per try: {}",
            t.target,
            t.resolver.ndots,
            t.resolver.search.len(),
            t.per_try_seconds,
            line(&t.tally)
        );
        for e in t.tally.examples.iter().take(2) {
            let _ = writeln!(out, "  {:<width$}    {e}", "");
        }
    }
    if targets.len() > PODS_LISTED + 1 {
        let _ = writeln!(
            out,
            "  ... and {} more pods (GET /api/v1/dns)",
            targets.len() - PODS_LISTED - 1
        );
    }
    let c = v.correlation;
    let rise = |v: Option<u64>| v.map_or("n/a".into(), |n| format!("+{n}"));
    let _ = writeln!(
        out,
        "  in the same window: conntrack insert_failed {}, conntrack drops {}, input backlog drops {}",
        rise(c.conntrack_insert_failed),
        rise(c.conntrack_dropped),
        rise(c.softnet_dropped)
    );
}
