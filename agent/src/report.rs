//! The plain-text report an SRE reads in a terminal (`curl node:10360/` and
//! `nodediag check`). Its first line is a one-line summary: node-problem-detector keeps
//! the first 80 bytes of a plugin's output as the condition message.

use crate::diagnose::{Finding, Severity};
use crate::store::{Snapshot, Status};
use crate::time::{age, rfc3339};
use std::fmt::Write;
use std::time::SystemTime;

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
    format!("OK: no problems found on {}", snap.node)
}

pub fn render(snap: &Snapshot, now: SystemTime) -> String {
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
    write_disks(&mut out, snap);
    out.push_str("\ncollectors:\n");
    let width = snap.collectors.keys().map(|n| n.len()).max().unwrap_or(0);
    for (name, c) in &snap.collectors {
        let when = c
            .last_attempt
            .map(|t| format!("{} ago", age(now, t)))
            .unwrap_or_else(|| "never".into());
        let detail = match &c.status {
            Status::Ok => c.latest().map(|s| s.sample.summary()).unwrap_or_default(),
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
            for u in unavailable_parts(&s.sample) {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<11}  {:>8}  {}: {}",
                    "", "partial", "", u.what, u.hint
                );
            }
        }
    }
    out
}

/// Each watched directory: fsync p50/p99 over the window, free space and inodes.
fn write_disks(out: &mut String, snap: &Snapshot) {
    let Some(v) = crate::diagnose::disk::view(snap, None) else {
        return;
    };
    if v.dirs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\ndisks (fsync over the last {:.0}s):",
        v.window_seconds
    );
    let width = v.dirs.iter().map(|d| d.dir.path.len()).max().unwrap_or(0);
    for d in &v.dirs {
        let dir = d.dir;
        let fsync = match (&dir.probe, &d.fsync) {
            (None, _) => "not probed".to_string(),
            (Some(p), _) if p.stalled => "fsync STALLED".to_string(),
            (Some(_), Some(f)) => format!(
                "fsync p50 {:.2}ms p99 {:.2}ms ({} probes)",
                f.p50_seconds * 1e3,
                f.p99_seconds * 1e3,
                f.probes
            ),
            (Some(p), None) => match &p.state {
                crate::collect::disk::watch::ProbeState::Refused { reason } => {
                    format!("probe refused: {reason}")
                }
                crate::collect::disk::watch::ProbeState::ReadOnly { .. } => {
                    "probe: read-only".into()
                }
                crate::collect::disk::watch::ProbeState::Failed { error } => {
                    format!("probe failed: {error}")
                }
                _ => "fsync: no probes yet".into(),
            },
        };
        let space = match dir.space {
            Some(u) => {
                let pct = |r: Option<f64>| {
                    r.map(|r| format!("{:.1}%", r * 100.0))
                        .unwrap_or_else(|| "n/a".into())
                };
                format!(
                    "{} free ({} of {}), inodes {} free",
                    pct(u.avail_ratio()),
                    human_bytes(u.avail_bytes),
                    human_bytes(u.size_bytes),
                    pct(u.inodes_free_ratio())
                )
            }
            None => dir.space_error.clone().unwrap_or_default(),
        };
        let device = dir.device.as_deref().unwrap_or("-");
        let ro = if dir.read_only.is_some() {
            "  READ-ONLY"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:<width$}  {device:<8}  {fsync}; {space}{ro}",
            dir.path
        );
    }
    for dev in &v.devices {
        let ms = |s: Option<f64>| {
            s.map(|s| format!("{:.2}ms", s * 1e3))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            out,
            "  device {}: {:.1} IOPS, write {} avg, flush {} avg, {:.0}% busy",
            dev.name,
            dev.read_iops + dev.write_iops,
            ms(dev.avg_write_latency_seconds),
            ms(dev.avg_flush_latency_seconds),
            dev.utilisation * 100.0
        );
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

fn unavailable_parts(sample: &crate::collect::Sample) -> &[crate::collect::Unavailable] {
    use crate::collect::Sample;
    match sample {
        Sample::Conntrack(s) => &s.unavailable,
        Sample::Nic(s) => &s.unavailable,
        Sample::Disk(s) => &s.unavailable,
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
                    "conntrack_table_full",
                    Severity::Critical,
                    "host",
                    "conntrack table 97% full",
                    t,
                ),
                Finding::new(
                    "nic_half_duplex",
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
        let text = render(&snap, t + Duration::from_secs(90));
        assert!(text.contains("remedy:   Raise net.netfilter.nf_conntrack_max"));
        assert!(text.contains("(1m ago)"));
        assert!(text.contains("2 findings: 1 critical, 1 warning, 0 info"));
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
