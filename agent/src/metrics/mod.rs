//! Renders the store as Prometheus metrics. No I/O at scrape time: everything comes
//! from the samples already stored.

pub mod cgroup;
pub mod conntrack;
pub mod disk;
pub mod dns;
pub mod encode;
pub mod netns;
pub mod nic;
pub mod pressure;

use crate::store::{Snapshot, Status};
use encode::{Encoder, Format, Kind};

/// nodediag's own families (build, collectors, findings), then each signal's.
pub fn render(
    snap: &Snapshot,
    format: Format,
    signals: impl Iterator<Item = fn(&Snapshot, &mut Encoder)>,
) -> String {
    let mut e = Encoder::new(format);
    e.family(
        "nodediag_build_info",
        Kind::Gauge,
        "nodediag version, always 1.",
    );
    e.sample(
        "nodediag_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    render_collectors(snap, &mut e);
    render_rules(snap, &mut e);
    render_findings(snap, &mut e);
    for render in signals {
        render(snap, &mut e);
    }
    e.finish()
}

fn render_collectors(snap: &Snapshot, e: &mut Encoder) {
    let all = || snap.collectors.iter();
    e.family(
        "nodediag_collector_success",
        Kind::Gauge,
        "1 if the collector's last collection succeeded, 0 if it failed, hung, or its kernel feature is unavailable.",
    );
    for (name, c) in all() {
        e.sample(
            "nodediag_collector_success",
            &[("collector", name)],
            f64::from(u8::from(c.is_ok())),
        );
    }
    e.family(
        "nodediag_collector_unavailable",
        Kind::Gauge,
        "1 if the collector's kernel feature is missing on this host (not a failure; see /api/v1/collectors/NAME for the hint).",
    );
    for (name, c) in all() {
        let v = matches!(c.status, Status::Unavailable { .. });
        e.sample(
            "nodediag_collector_unavailable",
            &[("collector", name)],
            f64::from(u8::from(v)),
        );
    }
    e.family(
        "nodediag_collector_duration_seconds",
        Kind::Gauge,
        "How long the collector's last collection took.",
    );
    for (name, c) in all() {
        if let Some(d) = c.last_duration {
            e.sample(
                "nodediag_collector_duration_seconds",
                &[("collector", name)],
                d.as_secs_f64(),
            );
        }
    }
    e.family(
        "nodediag_collector_cpu_seconds_total",
        Kind::Counter,
        "CPU time (user and system) the collector's collections used, on the collection thread and the helper threads it waited for; threads that follow a source on their own (the kernel log follower, the fsync probes) are not counted.",
    );
    for (name, c) in all() {
        e.sample(
            "nodediag_collector_cpu_seconds_total",
            &[("collector", name)],
            c.cpu_total.as_secs_f64(),
        );
    }
    e.family(
        "nodediag_collector_last_success_timestamp_seconds",
        Kind::Gauge,
        "Unix time of the collector's last successful sample.",
    );
    for (name, c) in all() {
        if let Some(s) = c.latest() {
            let t =
                s.at.duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
            e.sample(
                "nodediag_collector_last_success_timestamp_seconds",
                &[("collector", name)],
                t.as_secs_f64(),
            );
        }
    }
    e.family(
        "nodediag_collector_runs_total",
        Kind::Counter,
        "Collections attempted and finished.",
    );
    for (name, c) in all() {
        e.sample(
            "nodediag_collector_runs_total",
            &[("collector", name)],
            c.runs_total as f64,
        );
    }
    e.family(
        "nodediag_collector_failures_total",
        Kind::Counter,
        "Collections that failed or hung.",
    );
    for (name, c) in all() {
        e.sample(
            "nodediag_collector_failures_total",
            &[("collector", name)],
            c.failures_total as f64,
        );
    }
}

fn render_rules(snap: &Snapshot, e: &mut Encoder) {
    e.family(
        "nodediag_rules_failures_total",
        Kind::Counter,
        "Evaluations in which a signal's rules failed (their findings were unknown); see /api/v1/snapshot for the error.",
    );
    for (name, r) in &snap.rules {
        e.sample(
            "nodediag_rules_failures_total",
            &[("signal", name)],
            r.failures_total as f64,
        );
    }
}

fn render_findings(snap: &Snapshot, e: &mut Encoder) {
    e.family(
        "nodediag_finding_active",
        Kind::Gauge,
        "1 for each active finding (root cause) on this node; series disappear when it clears.",
    );
    for f in snap.findings.iter() {
        e.sample(
            "nodediag_finding_active",
            &[
                ("finding", f.id),
                ("severity", f.severity.as_str()),
                ("subject", &f.subject),
            ],
            1.0,
        );
    }
}
