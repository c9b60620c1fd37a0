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
    write_disks(&mut out, snap);
    throttling_section(&mut out, snap);
    write_pressure(&mut out, snap);
    write_kernel_log(&mut out, snap);
    write_netns(&mut out, snap, now);
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

/// How many of each kind of leak the report spells out; the API has them all.
const NETNS_LISTED: usize = 20;

fn more(out: &mut String, total: usize, what: &str, endpoint: &str) {
    if total > NETNS_LISTED {
        let _ = writeln!(
            out,
            "  ... and {} more {what} (GET {endpoint})",
            total - NETNS_LISTED
        );
    }
}

/// Leaked namespaces, orphaned veths, stale pins and IPAM use, with the commands to
/// look closer and to clean up.
fn write_netns(out: &mut String, snap: &Snapshot, now: SystemTime) {
    use crate::collect::netns::PeerState;
    let Some((_, s)) = snap.latest::<crate::collect::NetnsSample>() else {
        return;
    };
    let _ = writeln!(out, "\nCNI: {}", s.summary());
    let pod_of = |p: Option<&crate::pods::Attribution>| match p {
        Some(p) => match (&p.namespace, &p.pod) {
            (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
            _ => format!("pod {}", p.pod_uid),
        },
        None => "no known pod".into(),
    };
    let empty: Vec<_> = s.namespaces.iter().filter(|n| n.is_empty_pin()).collect();
    for ns in empty.iter().take(NETNS_LISTED) {
        let pin = &ns.pins[0];
        let age = ns
            .created
            .map(|c| format!("pinned {} ago", age(now, c)))
            .unwrap_or_else(|| "pinned".into());
        let _ = writeln!(
            out,
            "  empty    {} (net:[{}]) {age}, no process, was {}",
            ns.name(),
            ns.inode,
            pod_of(ns.former_pod.as_ref())
        );
        let _ = writeln!(out, "           inspect: nsenter --net={pin} ip addr");
        let remove = if pin.starts_with("/run/netns/") || pin.starts_with("/var/run/netns/") {
            format!("ip netns delete {}", ns.name())
        } else {
            format!("umount {pin} && rm {pin}")
        };
        let _ = writeln!(
            out,
            "           remove:  {remove}   (once the runtime has no sandbox for it: crictl pods)"
        );
    }
    more(out, empty.len(), "empty namespaces", "/api/v1/netns");
    let orphans: Vec<_> = s
        .veths
        .iter()
        .filter(|v| matches!(v.peer_state, PeerState::Empty | PeerState::Unknown))
        .collect();
    for v in orphans.iter().take(NETNS_LISTED) {
        let peer = match (&v.peer_name, v.peer_pins.first()) {
            (Some(n), Some(p)) => format!("{n} in {p}"),
            (None, Some(p)) => format!("a link in {p}"),
            _ => format!(
                "namespace id {}",
                v.peer_netnsid.map_or("?".into(), |i| i.to_string())
            ),
        };
        let _ = writeln!(
            out,
            "  orphan   {} -> {peer} ({}), was {}",
            v.name,
            v.peer_state.as_str(),
            pod_of(v.pod.as_ref())
        );
        let _ = writeln!(out, "           inspect: ip -d link show {}", v.name);
        let _ = writeln!(out, "           remove:  ip link delete {}", v.name);
    }
    more(
        out,
        orphans.len(),
        "veths without a live peer",
        "/api/v1/veths",
    );
    for pin in s.stale_pins.iter().take(NETNS_LISTED) {
        let _ = writeln!(out, "  stale    {pin}: no namespace is mounted there");
        let _ = writeln!(out, "           remove:  rm {pin}");
    }
    more(out, s.stale_pins.len(), "stale pins", "/api/v1/netns");
    for n in &s.ipam {
        let used = match (n.capacity, n.usage_ratio()) {
            (Some(c), Some(r)) => format!("{}/{c} addresses ({:.0}%)", n.allocated, r * 100.0),
            _ => format!("{} addresses, capacity unknown", n.allocated),
        };
        let stale = if n.stale_known {
            format!(", {} stale", n.stale.len())
        } else {
            String::new()
        };
        let _ = writeln!(out, "  ipam     {} {used}{stale} ({})", n.name, n.data_dir);
        for r in n.stale.iter().take(5) {
            let _ = writeln!(
                out,
                "           stale: {} by container {} (no process runs it): rm {}/{}",
                r.ip,
                r.container_id.as_deref().unwrap_or("?"),
                n.data_dir,
                r.ip
            );
        }
    }
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
        Sample::Cgroup(s) => &s.unavailable,
        Sample::Pressure(s) => &s.unavailable,
        Sample::Kmsg(s) => &s.unavailable,
        Sample::Netns(s) => &s.unavailable,
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
    fn leaks_come_with_commands_and_long_lists_are_cut() {
        use crate::collect::netns::{NetnsInfo, NetnsSample};
        use crate::collect::Sample;
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let empty = |i: u64, pin: String| NetnsInfo {
            inode: 4026532000 + i,
            host: false,
            pins: vec![pin],
            nsid: None,
            processes: 0,
            pids: vec![],
            created: Some(t - Duration::from_secs(600)),
            age_seconds: Some(600),
            age_from: None,
            pod: None,
            former_pod: None,
            interfaces: vec![],
            interfaces_error: None,
            host_veths: vec![],
        };
        let mut namespaces: Vec<NetnsInfo> = (0..25)
            .map(|i| empty(i, format!("/run/netns/cni-{i}")))
            .collect();
        namespaces[0].pins = vec!["/var/run/docker/netns/abc".into()];
        let store = crate::store::Store::new("node-a".into(), Duration::from_secs(300));
        store.register("netns", Duration::from_secs(15));
        store.record(
            "netns",
            t,
            Duration::ZERO,
            Ok(Sample::Netns(NetnsSample {
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
        let text = render(&store.snapshot(), t);
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
