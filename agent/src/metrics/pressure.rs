use super::family::Families;
use crate::collect::pressure::NeighTable;
use crate::collect::PressureSample;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    if let Some((_, s)) = snap.latest::<PressureSample>() {
        encode_pressure(s, e)?;
    }
    Ok(())
}

fn encode_pressure(s: &PressureSample, e: &mut DescriptorEncoder) -> fmt::Result {
    e.gauge_value(
        "nodediag_memory_total_bytes",
        "MemTotal from /proc/meminfo.",
        s.memory.total_bytes,
    )?;
    if let Some(a) = s.memory.available_bytes {
        e.gauge_value(
            "nodediag_memory_available_bytes",
            "MemAvailable from /proc/meminfo: memory the kernel can give without swapping.",
            a,
        )?;
    }
    if let Some(k) = s.memory.kubelet_available {
        e.gauge_value(
            "nodediag_memory_kubelet_available_bytes",
            "The kubelet's memory.available: MemTotal minus the root cgroup working set (usage - inactive_file), what eviction thresholds compare with.",
            k.bytes,
        )?;
    }
    // (resource, kind, line) of every PSI line the kernel has.
    let lines = || {
        s.psi.resources().into_iter().flat_map(|(resource, psi)| {
            psi.into_iter().flat_map(move |psi| {
                [("some", psi.some), ("full", psi.full)]
                    .into_iter()
                    .filter_map(move |(kind, line)| Some((resource, kind, line?)))
            })
        })
    };
    e.gauge(
        "nodediag_pressure_stall_ratio",
        "Share of wall time tasks stalled on the resource (/proc/pressure/RESOURCE avg10/avg60/avg300): kind=some (at least one task) or full (all non-idle tasks).",
        lines().flat_map(|(resource, kind, l)| {
            [("10s", l.avg10), ("60s", l.avg60), ("300s", l.avg300)].map(|(window, v)| {
                let labels = [("resource", resource), ("kind", kind), ("window", window)];
                (labels, v)
            })
        }),
    )?;
    e.counter(
        "nodediag_pressure_stall_seconds_total",
        "Total time tasks stalled on the resource (/proc/pressure/RESOURCE total).",
        lines().map(|(resource, kind, l)| {
            let labels = [("resource", resource), ("kind", kind)];
            (labels, l.total_us as f64 / 1e6)
        }),
    )?;
    if let Some(t) = s.tasks {
        e.gauge_value(
            "nodediag_tasks",
            "Tasks (threads) on the node, each holding a PID (/proc/loadavg).",
            t.tasks,
        )?;
        e.gauge_value(
            "nodediag_tasks_pid_max",
            "kernel.pid_max: the highest PID plus one.",
            t.pid_max,
        )?;
        if let Some(m) = t.threads_max {
            e.gauge_value(
                "nodediag_tasks_threads_max",
                "kernel.threads-max: the most tasks the kernel allows.",
                m,
            )?;
        }
    }
    if let Some(f) = s.files {
        e.gauge_value(
            "nodediag_file_handles_allocated",
            "Allocated file handles (fs.file-nr).",
            f.allocated,
        )?;
        e.gauge_value(
            "nodediag_file_handles_limit",
            "fs.file-max: the most file handles the kernel allocates.",
            f.max,
        )?;
    }
    if let Some(ino) = &s.inotify {
        e.gauge_value(
            "nodediag_inotify_max_user_instances",
            "fs.inotify.max_user_instances: inotify instances each user may hold.",
            ino.max_user_instances,
        )?;
        if let Some(w) = ino.max_user_watches {
            e.gauge_value(
                "nodediag_inotify_max_user_watches",
                "fs.inotify.max_user_watches: inotify watches each user may hold.",
                w,
            )?;
        }
        let users: Vec<(String, _)> = ino
            .usage
            .users
            .iter()
            .map(|(uid, u)| (uid.to_string(), u))
            .collect();
        e.gauge(
            "nodediag_inotify_instances",
            "inotify instances held by the user's processes (anon_inode:inotify fds under /proc/PID/fd).",
            users
                .iter()
                .map(|(uid, u)| ([("uid", uid.as_str())], u.instances)),
        )?;
        e.gauge(
            "nodediag_inotify_watches",
            "inotify watches held by the user's processes (inotify wd lines in /proc/PID/fdinfo).",
            users
                .iter()
                .map(|(uid, u)| ([("uid", uid.as_str())], u.watches)),
        )?;
    }
    let family = |n: &NeighTable| [("family", n.family)];
    e.gauge(
        "nodediag_neighbor_entries",
        "Entries in the neighbour table (/proc/net/stat/arp_cache, ndisc_cache).",
        s.neighbors.iter().map(|n| (family(n), n.entries)),
    )?;
    e.gauge(
        "nodediag_neighbor_gc_thresh3",
        "net.ipv4/ipv6.neigh.default.gc_thresh3: the hard limit on neighbour entries.",
        s.neighbors
            .iter()
            .filter_map(|n| Some((family(n), n.gc_thresh3?))),
    )?;
    e.counter(
        "nodediag_neighbor_table_fulls_total",
        "Times the neighbour table was full and garbage collection freed nothing (table_fulls, per-CPU summed).",
        s.neighbors
            .iter()
            .filter_map(|n| Some((family(n), n.table_fulls?))),
    )?;
    if let Some(v) = s.forwarding.ipv4_forward {
        e.gauge_value(
            "nodediag_sysctl_ipv4_forward",
            "net.ipv4.ip_forward (1: the node routes pod traffic).",
            v,
        )?;
    }
    if let Some(v) = s.forwarding.bridge_nf_call_iptables {
        e.gauge_value(
            "nodediag_sysctl_bridge_nf_call_iptables",
            "net.bridge.bridge-nf-call-iptables, present while br_netfilter is loaded.",
            v,
        )?;
    }
    if let Some(k) = s.oom_kills {
        e.counter_value(
            "nodediag_oom_kills_total",
            "OOM kills since boot, cgroup limits included (oom_kill in /proc/vmstat).",
            k,
        )?;
    }
    Ok(())
}
