//! Renders the store as Prometheus metrics through prometheus-client. No I/O at
//! scrape time: everything comes from the samples already stored.

pub mod cgroup;
pub mod conntrack;
pub mod disk;
pub mod dns;
pub mod exposition;
pub mod family;
pub mod gzip;
pub mod histogram;
pub mod kmsg;
pub mod netns;
pub mod nic;
pub mod pressure;
pub mod steady;

use crate::store::{Snapshot, Status};
use family::Families;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

/// nodediag's own families: its build, its collectors, its rules, its findings.
fn own_families(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    e.gauge(
        "nodediag_build_info",
        "nodediag version, always 1.",
        [([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
    )?;
    collector_families(snap, e)?;
    rules_families(snap, e)?;
    finding_families(snap, e)
}

fn collector_families(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let all = || {
        snap.collectors
            .iter()
            .map(|(name, c)| ([("collector", *name)], c))
    };
    e.gauge(
        "nodediag_collector_success",
        "1 if the collector's last collection succeeded, 0 if it failed, hung, or its kernel feature is unavailable.",
        all().map(|(l, c)| (l, c.is_ok())),
    )?;
    e.gauge(
        "nodediag_collector_unavailable",
        "1 if the collector's kernel feature is missing on this host (not a failure; see /api/v1/collectors/NAME for the hint).",
        all().map(|(l, c)| (l, matches!(c.status, Status::Unavailable { .. }))),
    )?;
    e.gauge(
        "nodediag_collector_duration_seconds",
        "How long the collector's last collection took.",
        all().filter_map(|(l, c)| Some((l, c.last_duration?.as_secs_f64()))),
    )?;
    e.counter(
        "nodediag_collector_cpu_seconds_total",
        "CPU time (user and system) the collector's collections used, on the collection thread and the helper threads it waited for; threads that follow a source on their own (the kernel log follower, the fsync probes) are not counted.",
        all().map(|(l, c)| (l, c.cpu_total.as_secs_f64())),
    )?;
    e.gauge(
        "nodediag_collector_last_success_timestamp_seconds",
        "Unix time of the collector's last successful sample.",
        all().filter_map(|(l, c)| {
            let at = c.latest()?.at.duration_since(std::time::UNIX_EPOCH);
            Some((l, at.unwrap_or_default().as_secs_f64()))
        }),
    )?;
    e.counter(
        "nodediag_collector_runs_total",
        "Collections attempted and finished.",
        all().map(|(l, c)| (l, c.runs_total)),
    )?;
    e.counter(
        "nodediag_collector_failures_total",
        "Collections that failed or hung.",
        all().map(|(l, c)| (l, c.failures_total)),
    )
}

fn rules_families(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    e.counter(
        "nodediag_rules_failures_total",
        "Evaluations in which a signal's rules failed (their findings were unknown); see /api/v1/snapshot for the error.",
        snap.rules
            .iter()
            .map(|(name, r)| ([("signal", *name)], r.failures_total)),
    )
}

fn finding_families(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    e.gauge(
        "nodediag_finding_active",
        "1 for each active finding (root cause) on this node; series disappear when it clears.",
        snap.findings.iter().map(|f| {
            let labels = [
                ("finding", f.id),
                ("severity", f.severity.as_str()),
                ("subject", f.subject.as_str()),
            ];
            (labels, 1u64)
        }),
    )
}
