//! The plain-text report an SRE reads in a terminal (`curl node:10360/` and
//! `nodediag check`). Its first line is a one-line summary: node-problem-detector keeps
//! the first 80 bytes of a plugin's output as the condition message.

use crate::collect::{KmsgSample, PressureSample};
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
    let nothing_sampled =
        !snap.collectors.is_empty() && !snap.collectors.values().any(|c| c.is_ok());
    if nothing_sampled {
        let names: Vec<&str> = snap.collectors.keys().copied().collect();
        return format!("UNKNOWN: unavailable on this host: {}", names.join(", "));
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
    throttling_section(&mut out, snap);
    write_pressure(&mut out, snap);
    write_kernel_log(&mut out, snap);
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

/// How many throttled containers the report lists; the API has them all.
const TOP_THROTTLED: usize = 5;

fn throttling_section(out: &mut String, snap: &Snapshot) {
    let history = snap.history::<crate::collect::CgroupSample>();
    if history.is_empty() {
        return;
    }
    let (containers, _) = crate::diagnose::cgroup::throttling(&history, snap.window);
    if containers.is_empty() {
        // Not a Kubernetes node, or no pods yet: the collector line says which.
        return;
    }
    let limited = containers
        .iter()
        .filter(|c| c.limit_cores.is_some())
        .count();
    let throttled: Vec<_> = containers
        .iter()
        .filter(|c| c.throttled_ratio.is_some_and(|r| r > 0.0))
        .collect();
    let window = humantime::format_duration(snap.window);
    if throttled.is_empty() {
        let _ = writeln!(
            out,
            "\ncpu throttling: none of {limited} containers with a CPU limit throttled in the last {window}"
        );
        return;
    }
    let _ = writeln!(
        out,
        "\ncpu throttling over the last {window}: {} of {limited} limited containers throttled, worst first",
        throttled.len()
    );
    for c in throttled.iter().take(TOP_THROTTLED) {
        let usage = c
            .usage_cores
            .map(|u| format!(", using {u:.2}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:>4.0}%  {}  limit {} cores{usage}, throttled {:.1}s in {} of {} periods",
            c.throttled_ratio.unwrap_or(0.0) * 100.0,
            c.subject(),
            c.limit_cores
                .map(crate::diagnose::cgroup::format_cores)
                .unwrap_or_else(|| "no".into()),
            c.throttled_seconds,
            c.throttled_periods,
            c.periods
        );
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn write_pressure(out: &mut String, snap: &Snapshot) {
    let Some((_, s)) = snap.latest::<PressureSample>() else {
        return;
    };
    out.push_str("\nnode pressure:\n");
    let m = &s.memory;
    let mut mem = match m.available_bytes {
        Some(a) => format!(
            "{} of {} available ({:.1}%)",
            gib(a),
            gib(m.total_bytes),
            m.available_ratio().unwrap_or(0.0) * 100.0
        ),
        None => format!("{} total, MemAvailable not reported", gib(m.total_bytes)),
    };
    if let Some(k) = m.kubelet_available {
        mem.push_str(&format!("; kubelet memory.available {}", gib(k.bytes)));
    }
    let _ = writeln!(out, "  memory      {mem}");
    let psi: Vec<String> = s
        .psi
        .resources()
        .into_iter()
        .filter_map(|(name, p)| {
            let p = p?;
            let mut v = format!("{name} some {:.1}%", p.some?.avg60 * 100.0);
            if let Some(full) = p.full {
                v.push_str(&format!(" full {:.1}%", full.avg60 * 100.0));
            }
            Some(v)
        })
        .collect();
    if !psi.is_empty() {
        let _ = writeln!(out, "  psi avg60   {}", psi.join(", "));
    }
    if let Some(t) = s.tasks {
        let mut line = format!(
            "{} of pid_max {} ({:.1}%)",
            t.tasks,
            t.pid_max,
            t.pid_ratio().unwrap_or(0.0) * 100.0
        );
        if let Some(m) = t.threads_max {
            line.push_str(&format!(", threads-max {m}"));
        }
        let _ = writeln!(out, "  tasks       {line}");
    }
    if let Some(f) = s.files {
        let _ = writeln!(
            out,
            "  files       {} of fs.file-max {}",
            f.allocated, f.max
        );
    }
    if let Some(ino) = &s.inotify {
        for (uid, u) in &ino.usage.users {
            let _ = writeln!(
                out,
                "  inotify     uid {uid}: {} instances of {}, {} watches of {}",
                u.instances,
                ino.max_user_instances,
                u.watches,
                ino.max_user_watches
                    .map_or_else(|| "?".into(), |w| w.to_string())
            );
        }
    }
    for n in &s.neighbors {
        let _ = writeln!(
            out,
            "  neighbours  {} {} of gc_thresh3 {}, {} table overflows since boot",
            n.family,
            n.entries,
            n.gc_thresh3.map_or_else(|| "?".into(), |g| g.to_string()),
            n.table_fulls.unwrap_or(0)
        );
    }
    let f = s.forwarding;
    let show =
        |v: Option<u64>, absent: &str| v.map_or_else(|| absent.to_string(), |v| v.to_string());
    let _ = writeln!(
        out,
        "  forwarding  net.ipv4.ip_forward={}, net.bridge.bridge-nf-call-iptables={}",
        show(f.ipv4_forward, "?"),
        show(f.bridge_nf_call_iptables, "(br_netfilter not loaded)")
    );
    if let Some(k) = s.oom_kills {
        let _ = writeln!(out, "  oom kills   {k} since boot");
    }
}

/// Matching kernel log lines shown in the report.
const REPORT_LOG_LINES: usize = 10;

fn write_kernel_log(out: &mut String, snap: &Snapshot) {
    let Some((_, s)) = snap.latest::<KmsgSample>() else {
        return;
    };
    let _ = writeln!(
        out,
        "\nkernel log (latest of {} matching lines):",
        s.events.len()
    );
    if s.events.is_empty() {
        out.push_str("  nothing matched since nodediag started\n");
    }
    for e in s.events.iter().rev().take(REPORT_LOG_LINES).rev() {
        let _ = writeln!(
            out,
            "  {}  {:<23}  {}",
            rfc3339(e.seen_at),
            e.event.kind().as_str(),
            e.line
        );
    }
}

fn unavailable_parts(sample: &crate::collect::Sample) -> &[crate::collect::Unavailable] {
    use crate::collect::Sample;
    match sample {
        Sample::Conntrack(s) => &s.unavailable,
        Sample::Nic(s) => &s.unavailable,
        Sample::Cgroup(s) => &s.unavailable,
        Sample::Pressure(s) => &s.unavailable,
        Sample::Kmsg(s) => &s.unavailable,
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
