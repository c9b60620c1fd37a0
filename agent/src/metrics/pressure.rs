use super::encode::{Encoder, Kind};
use crate::collect::{KmsgSample, PressureSample};
use crate::kernel::kmsg::EventKind;
use crate::store::Snapshot;

pub fn render(snap: &Snapshot, e: &mut Encoder) {
    if let Some((_, s)) = snap.latest::<PressureSample>() {
        render_pressure(s, e);
    }
    if let Some((_, s)) = snap.latest::<KmsgSample>() {
        render_kmsg(s, e);
    }
}

fn render_pressure(s: &PressureSample, e: &mut Encoder) {
    e.single(
        "nodediag_memory_total_bytes",
        Kind::Gauge,
        "MemTotal from /proc/meminfo.",
        s.memory.total_bytes as f64,
    );
    if let Some(a) = s.memory.available_bytes {
        e.single(
            "nodediag_memory_available_bytes",
            Kind::Gauge,
            "MemAvailable from /proc/meminfo: memory the kernel can give without swapping.",
            a as f64,
        );
    }
    if let Some(k) = s.memory.kubelet_available {
        e.single(
            "nodediag_memory_kubelet_available_bytes",
            Kind::Gauge,
            "The kubelet's memory.available: MemTotal minus the root cgroup working set (usage - inactive_file), what eviction thresholds compare with.",
            k.bytes as f64,
        );
    }
    let resources = s.psi.resources();
    if resources.iter().any(|(_, p)| p.is_some()) {
        e.family(
            "nodediag_pressure_stall_ratio",
            Kind::Gauge,
            "Share of wall time tasks stalled on the resource (/proc/pressure/RESOURCE avg10/avg60/avg300): kind=some (at least one task) or full (all non-idle tasks).",
        );
        for (resource, psi) in resources {
            let Some(psi) = psi else { continue };
            for (kind, line) in [("some", psi.some), ("full", psi.full)] {
                let Some(l) = line else { continue };
                for (window, v) in [("10s", l.avg10), ("60s", l.avg60), ("300s", l.avg300)] {
                    e.sample(
                        "nodediag_pressure_stall_ratio",
                        &[("resource", resource), ("kind", kind), ("window", window)],
                        v,
                    );
                }
            }
        }
        e.family(
            "nodediag_pressure_stall_seconds_total",
            Kind::Counter,
            "Total time tasks stalled on the resource (/proc/pressure/RESOURCE total).",
        );
        for (resource, psi) in resources {
            let Some(psi) = psi else { continue };
            for (kind, line) in [("some", psi.some), ("full", psi.full)] {
                let Some(l) = line else { continue };
                e.sample(
                    "nodediag_pressure_stall_seconds_total",
                    &[("resource", resource), ("kind", kind)],
                    l.total_us as f64 / 1e6,
                );
            }
        }
    }
    if let Some(t) = s.tasks {
        e.single(
            "nodediag_tasks",
            Kind::Gauge,
            "Tasks (threads) on the node, each holding a PID (/proc/loadavg).",
            t.tasks as f64,
        );
        e.single(
            "nodediag_tasks_pid_max",
            Kind::Gauge,
            "kernel.pid_max: the highest PID plus one.",
            t.pid_max as f64,
        );
        if let Some(m) = t.threads_max {
            e.single(
                "nodediag_tasks_threads_max",
                Kind::Gauge,
                "kernel.threads-max: the most tasks the kernel allows.",
                m as f64,
            );
        }
    }
    if let Some(f) = s.files {
        e.single(
            "nodediag_file_handles_allocated",
            Kind::Gauge,
            "Allocated file handles (fs.file-nr).",
            f.allocated as f64,
        );
        e.single(
            "nodediag_file_handles_limit",
            Kind::Gauge,
            "fs.file-max: the most file handles the kernel allocates.",
            f.max as f64,
        );
    }
    if let Some(ino) = &s.inotify {
        e.single(
            "nodediag_inotify_max_user_instances",
            Kind::Gauge,
            "fs.inotify.max_user_instances: inotify instances each user may hold.",
            ino.max_user_instances as f64,
        );
        if let Some(w) = ino.max_user_watches {
            e.single(
                "nodediag_inotify_max_user_watches",
                Kind::Gauge,
                "fs.inotify.max_user_watches: inotify watches each user may hold.",
                w as f64,
            );
        }
        e.family(
            "nodediag_inotify_instances",
            Kind::Gauge,
            "inotify instances held by the user's processes (anon_inode:inotify fds under /proc/PID/fd).",
        );
        for (uid, u) in &ino.usage.users {
            e.sample(
                "nodediag_inotify_instances",
                &[("uid", &uid.to_string())],
                u.instances as f64,
            );
        }
        e.family(
            "nodediag_inotify_watches",
            Kind::Gauge,
            "inotify watches held by the user's processes (inotify wd lines in /proc/PID/fdinfo).",
        );
        for (uid, u) in &ino.usage.users {
            e.sample(
                "nodediag_inotify_watches",
                &[("uid", &uid.to_string())],
                u.watches as f64,
            );
        }
    }
    if !s.neighbors.is_empty() {
        e.family(
            "nodediag_neighbor_entries",
            Kind::Gauge,
            "Entries in the neighbour table (/proc/net/stat/arp_cache, ndisc_cache).",
        );
        for n in &s.neighbors {
            e.sample(
                "nodediag_neighbor_entries",
                &[("family", n.family)],
                n.entries as f64,
            );
        }
        e.family(
            "nodediag_neighbor_gc_thresh3",
            Kind::Gauge,
            "net.ipv4/ipv6.neigh.default.gc_thresh3: the hard limit on neighbour entries.",
        );
        for n in &s.neighbors {
            if let Some(g) = n.gc_thresh3 {
                e.sample(
                    "nodediag_neighbor_gc_thresh3",
                    &[("family", n.family)],
                    g as f64,
                );
            }
        }
        e.family(
            "nodediag_neighbor_table_fulls_total",
            Kind::Counter,
            "Times the neighbour table was full and garbage collection freed nothing (table_fulls, per-CPU summed).",
        );
        for n in &s.neighbors {
            if let Some(f) = n.table_fulls {
                e.sample(
                    "nodediag_neighbor_table_fulls_total",
                    &[("family", n.family)],
                    f as f64,
                );
            }
        }
    }
    if let Some(v) = s.forwarding.ipv4_forward {
        e.single(
            "nodediag_sysctl_ipv4_forward",
            Kind::Gauge,
            "net.ipv4.ip_forward (1: the node routes pod traffic).",
            v as f64,
        );
    }
    if let Some(v) = s.forwarding.bridge_nf_call_iptables {
        e.single(
            "nodediag_sysctl_bridge_nf_call_iptables",
            Kind::Gauge,
            "net.bridge.bridge-nf-call-iptables, present while br_netfilter is loaded.",
            v as f64,
        );
    }
    if let Some(k) = s.oom_kills {
        e.single(
            "nodediag_oom_kills_total",
            Kind::Counter,
            "OOM kills since boot, cgroup limits included (oom_kill in /proc/vmstat).",
            k as f64,
        );
    }
}

fn render_kmsg(s: &KmsgSample, e: &mut Encoder) {
    e.family(
        "nodediag_kernel_log_events_total",
        Kind::Counter,
        "Kernel log (/dev/kmsg) lines nodediag matched since it started, by event.",
    );
    for kind in EventKind::ALL {
        let v = s.totals.get(&kind).copied().unwrap_or(0);
        e.sample(
            "nodediag_kernel_log_events_total",
            &[("event", kind.as_str())],
            v as f64,
        );
    }
    e.single(
        "nodediag_kernel_log_records_total",
        Kind::Counter,
        "Kernel log records nodediag read since it started.",
        s.records_read as f64,
    );
}
