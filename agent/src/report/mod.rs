//! The plain-text report an SRE reads in a terminal (`curl node:10360/` and
//! `nodediag check`). Its first line is a one-line summary: node-problem-detector keeps
//! the first 80 bytes of a plugin's output as the condition message.

use crate::finding::{Finding, Severity};
use crate::sample::AnySample;
use crate::store::{SetupState, Snapshot, Status};
use crate::time::{age, rfc3339};
use std::fmt::Write;
use std::time::SystemTime;

pub mod cgroup;
pub mod conntrack;
pub mod disk;
pub mod dns;
pub mod kmsg;
pub mod netns;
pub mod nic;
pub mod pressure;

/// What one signal adds to the report: its collector's line and a section of its own.
pub struct Section {
    pub collector: &'static str,
    pub summary: fn(&dyn AnySample) -> String,
    pub detail: fn(&mut String, &Snapshot, SystemTime),
}

pub fn summary_line(snap: &Snapshot) -> String {
    let findings = &snap.findings;
    let failing: Vec<&str> = snap
        .collectors
        .iter()
        .filter(|(_, c)| matches!(c.status, Status::Error { .. } | Status::Hung { .. }))
        .map(|(n, _)| *n)
        .collect();
    if let Some(worst) = findings.first() {
        let more = if findings.len() > 1 {
            format!(" (+{} more)", findings.len() - 1)
        } else {
            String::new()
        };
        return format!(
            "{}: {} {}: {}{more}",
            worst.severity.as_str().to_uppercase(),
            worst.id,
            worst.subject,
            worst.summary
        );
    }
    if !failing.is_empty() {
        return format!("UNKNOWN: could not sample {}", failing.join(", "));
    }
    let unevaluated: Vec<&str> = snap.failed_rules().map(|(n, _)| n).collect();
    if !unevaluated.is_empty() {
        return format!(
            "UNKNOWN: could not evaluate the rules of {}",
            unevaluated.join(", ")
        );
    }
    if let Some((collector, part)) = snap.unreadable_parts().next() {
        return format!(
            "UNKNOWN: {collector} could not read {}: {}",
            part.what, part.hint
        );
    }
    let nothing_sampled =
        !snap.collectors.is_empty() && !snap.collectors.values().any(|c| c.is_ok());
    if nothing_sampled {
        let names: Vec<&str> = snap.collectors.keys().copied().collect();
        return format!("UNKNOWN: unavailable on this host: {}", names.join(", "));
    }
    format!("OK: no problems found on {}", snap.node)
}

pub fn render<'a>(
    snap: &Snapshot,
    now: SystemTime,
    sections: impl Iterator<Item = &'a Section> + Clone,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", summary_line(snap));
    let _ = writeln!(out, "node {} at {}", snap.node, rfc3339(now));
    let counts = |s: Severity| snap.findings.iter().filter(|f| f.severity == s).count();
    let _ = writeln!(
        out,
        "{} findings: {} critical, {} warning, {} info",
        snap.findings.len(),
        counts(Severity::Critical),
        counts(Severity::Warning),
        counts(Severity::Info)
    );
    for f in snap.findings.iter() {
        out.push('\n');
        write_finding(&mut out, f, now);
    }
    for section in sections.clone() {
        (section.detail)(&mut out, snap, now);
    }
    let mut failed = snap.failed_rules().peekable();
    if failed.peek().is_some() {
        out.push_str("\nrules that failed (their findings are unknown):\n");
        for (signal, error) in failed {
            let _ = writeln!(out, "  {signal}: {error}");
        }
    }
    setup(&mut out, snap);
    out.push_str("\ncollectors:\n");
    let width = snap.collectors.keys().map(|n| n.len()).max().unwrap_or(0);
    for (name, c) in &snap.collectors {
        let when = c
            .last_attempt
            .map(|t| format!("{} ago", age(now, t)))
            .unwrap_or_else(|| "never".into());
        let summary = |sample: &dyn AnySample| {
            sections
                .clone()
                .find(|s| s.collector == *name)
                .map(|s| (s.summary)(sample))
                .unwrap_or_default()
        };
        let detail = match &c.status {
            Status::Ok => c.latest().map(|s| summary(&*s.sample)).unwrap_or_default(),
            Status::Pending => "waiting for the first sample".into(),
            Status::Unavailable { what, hint } => format!("{what}: {hint}"),
            Status::Error { message } => message.clone(),
            Status::Hung { since } => format!("no answer since {}", rfc3339(*since)),
        };
        let state = match c.status {
            Status::Pending => "pending",
            Status::Ok => "ok",
            Status::Unavailable { .. } => "unavailable",
            Status::Error { .. } => "error",
            Status::Hung { .. } => "hung",
        };
        let _ = writeln!(out, "  {name:<width$}  {state:<11}  {when:>8}  {detail}");
        if let Some(s) = c.latest().filter(|_| c.is_ok()) {
            for u in s.sample.unavailable() {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<11}  {:>8}  {}: {}",
                    "",
                    if u.unreadable {
                        "unreadable"
                    } else {
                        "partial"
                    },
                    "",
                    u.what,
                    u.hint
                );
            }
        }
    }
    out
}

/// What the agent set up for itself, when it is not in place as asked: a missing
/// notrack exemption means the agent may go dark when the conntrack table fills.
fn setup(out: &mut String, snap: &Snapshot) {
    let mut trouble = snap
        .setup
        .iter()
        .filter_map(|(name, s)| match &s.state {
            SetupState::Unavailable { what, hint } => {
                Some(format!("  {name}  unavailable  {what}: {hint}"))
            }
            SetupState::Error { message } => Some(format!("  {name}  error  {message}")),
            SetupState::Installed | SetupState::Disabled => None,
        })
        .peekable();
    if trouble.peek().is_some() {
        out.push_str("\nagent setup not in place:\n");
        for line in trouble {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn write_finding(out: &mut String, f: &Finding, now: SystemTime) {
    let _ = writeln!(
        out,
        "{:<8}  {}  {}",
        f.severity.as_str().to_uppercase(),
        f.id,
        f.subject
    );
    let _ = writeln!(out, "  {}", f.summary);
    let evidence: Vec<String> = f
        .evidence
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect();
    let _ = writeln!(out, "  evidence: {}", evidence.join(" "));
    let _ = writeln!(out, "  remedy:   {}", f.remedy);
    let _ = writeln!(
        out,
        "  since:    {} ({} ago)",
        rfc3339(f.since),
        age(now, f.since)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn summary_names_the_worst_finding_first() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let snap = Snapshot {
            node: "node-a".into(),
            findings: Arc::new(vec![
                Finding::new(
                    &crate::diagnose::conntrack::TABLE_FULL,
                    Severity::Critical,
                    "host",
                    "conntrack table 97% full",
                    t,
                ),
                Finding::new(
                    &crate::diagnose::nic::HALF_DUPLEX,
                    Severity::Warning,
                    "eth1",
                    "eth1 negotiated half duplex",
                    t,
                ),
            ]),
            ..Snapshot::default()
        };
        assert_eq!(
            summary_line(&snap),
            "CRITICAL: conntrack_table_full host: conntrack table 97% full (+1 more)"
        );
        let text = render(&snap, t + Duration::from_secs(90), std::iter::empty());
        assert!(text.contains("remedy:   Raise net.netfilter.nf_conntrack_max"));
        assert!(text.contains("(1m ago)"));
        assert!(text.contains("2 findings: 1 critical, 1 warning, 0 info"));
    }

    #[test]
    fn leaks_come_with_commands_and_long_lists_are_cut() {
        use crate::collect::netns::{NetnsInfo, NetnsSample};
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let empty = |i: u64, pin: String| NetnsInfo {
            inode: 4026532000 + i,
            host: false,
            pins: vec![pin].into(),
            nsid: None,
            processes: 0,
            pids: vec![],
            created: Some(t - Duration::from_secs(600)),
            age_seconds: Some(600),
            age_from: None,
            pod: None,
            former_pod: None,
            interfaces: Default::default(),
            interfaces_error: None,
            host_veths: vec![],
        };
        let mut namespaces: Vec<NetnsInfo> = (0..25)
            .map(|i| empty(i, format!("/run/netns/cni-{i}")))
            .collect();
        namespaces[0].pins = vec!["/var/run/docker/netns/abc".into()].into();
        let store = crate::store::Store::new("node-a".into(), Duration::from_secs(300));
        store.register("netns", Duration::from_secs(15));
        store.record(
            "netns",
            t,
            Duration::ZERO,
            Ok(Arc::new(NetnsSample {
                host_netns: None,
                peers_known: true,
                namespaces,
                veths: vec![],
                ipam: vec![],
                uplink: None,
                overlays: vec![],
                stale_pins: vec!["/run/netns/gone".into()],
                unavailable: vec![],
            })),
        );
        let mut text = String::new();
        netns::section(&mut text, &store.snapshot(), t);
        assert!(text.contains("umount /var/run/docker/netns/abc && rm /var/run/docker/netns/abc"));
        assert!(text.contains("ip netns delete cni-1 "));
        assert!(text.contains("nsenter --net=/run/netns/cni-1 ip addr"));
        assert_eq!(text.matches("  empty    ").count(), 20);
        assert!(text.contains("... and 5 more empty namespaces (GET /api/v1/netns)"));
        assert!(text.contains("rm /run/netns/gone"));
    }

    #[test]
    fn a_healthy_node_says_so() {
        let snap = Snapshot {
            node: "node-a".into(),
            ..Snapshot::default()
        };
        assert_eq!(summary_line(&snap), "OK: no problems found on node-a");
    }
}
