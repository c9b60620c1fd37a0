//! The report's node pressure section.

use crate::collect::PressureSample;
use crate::store::Snapshot;
use crate::text::human_bytes;
use std::fmt::Write;
use std::time::SystemTime;

/// The collector line of the report.
pub fn summary(s: &PressureSample) -> String {
    let pct = |r: Option<f64>| r.map_or("?".into(), |r| format!("{:.1}%", r * 100.0));
    let mut parts = vec![format!(
        "memory {} available",
        pct(s.memory.available_ratio())
    )];
    for (name, psi) in s.psi.resources() {
        if let Some(some) = psi.and_then(|p| p.some) {
            parts.push(format!("{name} psi {:.1}%", some.avg60 * 100.0));
        }
    }
    if let Some(t) = s.tasks {
        parts.push(format!(
            "{} tasks ({} of pid_max)",
            t.tasks,
            pct(t.pid_ratio())
        ));
    }
    if let Some(f) = s.files {
        parts.push(format!("{} files open", f.allocated));
    }
    if let Some(k) = s.oom_kills {
        parts.push(format!("{k} OOM kills since boot"));
    }
    parts.join(", ")
}

pub fn section(out: &mut String, snap: &Snapshot, _now: SystemTime) {
    let Some((_, s)) = snap.latest::<PressureSample>() else {
        return;
    };
    out.push_str("\nnode pressure:\n");
    let m = &s.memory;
    let mut mem = match m.available_bytes {
        Some(a) => format!(
            "{} of {} available ({:.1}%)",
            human_bytes(a),
            human_bytes(m.total_bytes),
            m.available_ratio().unwrap_or(0.0) * 100.0
        ),
        None => format!(
            "{} total, MemAvailable not reported",
            human_bytes(m.total_bytes)
        ),
    };
    if let Some(k) = m.kubelet_available {
        mem.push_str(&format!(
            "; kubelet memory.available {}",
            human_bytes(k.bytes)
        ));
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
