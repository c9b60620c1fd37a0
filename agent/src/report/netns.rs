//! The report's CNI section: leaks and orphans with the commands to inspect them.

use crate::collect::netns::NetnsSample;
use crate::collect::pods::Attribution;
use crate::store::Snapshot;
use crate::time::age;
use std::fmt::Write;
use std::time::SystemTime;

/// The collector line of the report.
pub fn summary(s: &NetnsSample) -> String {
    let empty = s.namespaces.iter().filter(|n| n.is_empty_pin()).count();
    let pods = s.namespaces.iter().filter(|n| n.pod.is_some()).count();
    let lost = s.veths.iter().filter(|v| !v.peer_state.is_live()).count();
    format!(
        "{} network namespaces ({} of pods, {} pinned without a process), {} veths ({} without a live peer), {} host-local IPAM networks",
        s.namespaces.len(),
        pods,
        empty,
        s.veths.len(),
        lost,
        s.ipam.len()
    )
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
pub fn section(out: &mut String, snap: &Snapshot, now: SystemTime) {
    let Some((_, s)) = snap.latest::<NetnsSample>() else {
        return;
    };
    let _ = writeln!(out, "\nCNI: {}", summary(s));
    let pod_of = |p: Option<&Attribution>| p.map_or_else(|| "no known pod".into(), |p| p.name());
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
    let orphans: Vec<_> = s.veths.iter().filter(|v| !v.peer_state.is_live()).collect();
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
