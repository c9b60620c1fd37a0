//! netns_leaked, veth_orphaned, mtu_mismatch, cni_ipam_exhausted: what a failed CNI
//! DEL or a wrong CNI setting leaves on a node.

use super::{Finding, FindingDef, RuleContext, Severity};
use crate::collect::netns::{IpamNetwork, NetnsInfo, Overlay, PeerState, VethPair};
use crate::collect::NetnsSample;
use crate::finding::worst_level;
use crate::flags::{parse_duration_or_zero, parse_ratio};
use crate::store::Snapshot;
use crate::text::{round4, short_id};
use serde_json::json;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

pub const NETNS_LEAKED: FindingDef = FindingDef {
    id: "netns_leaked",
    remedy: "CNI DEL failed and the pod is gone: check the runtime has no sandbox for it, then unmount and delete the pin (ip netns delete NAME).",
};
pub const VETH_ORPHANED: FindingDef = FindingDef {
    id: "veth_orphaned",
    remedy: "Delete the link (ip link delete NAME) after checking no pod owns it (/api/v1/veths?interface=NAME); look at the CNI plugin logs.",
};
pub const CNI_IPAM_EXHAUSTED: FindingDef = FindingDef {
    id: "cni_ipam_exhausted",
    remedy: "After draining the node, remove stale host-local reservations (rm /var/lib/cni/networks/NET/IP for addresses whose container no longer runs); widen the node's pod CIDR.",
};
pub const MTU_MISMATCH: FindingDef = FindingDef {
    id: "mtu_mismatch",
    remedy: "Set the CNI MTU to the uplink MTU minus the tunnel overhead.",
};
pub const FINDINGS: &[&FindingDef] = &[
    &NETNS_LEAKED,
    &VETH_ORPHANED,
    &CNI_IPAM_EXHAUSTED,
    &MTU_MISMATCH,
];

#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
#[command(next_help_heading = "Network namespaces and CNI")]
pub struct Thresholds {
    /// netns_leaked when a pinned namespace has had no process for at least this long
    /// (its pin is this old); veth_orphaned uses it too. 0s flags at once.
    #[arg(long = "netns.leak-min-age", env = "NODEDIAG_NETNS_LEAK_MIN_AGE", default_value = "5m", value_parser = parse_duration_or_zero, value_name = "DURATION")]
    pub leak_min_age: Duration,

    /// cni_ipam_exhausted (warning) at this fraction of a host-local range in use.
    #[arg(long = "cni.ipam-warning-ratio", env = "NODEDIAG_CNI_IPAM_WARNING_RATIO", default_value = "0.90", value_parser = parse_ratio, value_name = "RATIO")]
    pub ipam_warning_ratio: f64,

    /// cni_ipam_exhausted (critical) at this fraction of a host-local range in use.
    #[arg(long = "cni.ipam-critical-ratio", env = "NODEDIAG_CNI_IPAM_CRITICAL_RATIO", default_value = "1.0", value_parser = parse_ratio, value_name = "RATIO")]
    pub ipam_critical_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        crate::flags::defaults()
    }
}

/// Kinds of overlay device and the bytes of encapsulation each adds to a packet over
/// an IPv4 underlay: vxlan and geneve 14 + 20 + 8 + 8, wireguard 20 + 8 + 32, ipip 20.
pub const TUNNEL_OVERHEAD: [(&str, u32); 4] = [
    ("vxlan", 50),
    ("geneve", 50),
    ("wireguard", 60),
    ("ipip", 20),
];

/// The overhead of a link kind, None for a kind that is no tunnel. The registry hands
/// this to the netns collector, which lists the links of these kinds as overlays.
pub fn tunnel_overhead(kind: &str) -> Option<u32> {
    TUNNEL_OVERHEAD
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, bytes)| *bytes)
}

/// What the rule counts for an overlay: its own figure for the kind.
fn overhead_of(o: &Overlay) -> u32 {
    tunnel_overhead(&o.kind).unwrap_or(0)
}

/// Evidence lists are cut here; the API has them all.
const MAX_LISTED: usize = 10;

pub fn rules(snapshot: &Snapshot, t: &Thresholds, _ctx: &RuleContext, out: &mut Vec<Finding>) {
    let Some((at, s)) = snapshot.latest::<NetnsSample>() else {
        return;
    };
    let min_age = t.leak_min_age.as_secs();
    for ns in s.namespaces.iter().filter(|n| is_leaked(n, min_age)) {
        out.push(leaked(s, ns, at));
    }
    for v in &s.veths {
        out.extend(orphaned(s, v, min_age, at));
    }
    out.extend(mtu_mismatch(s, at));
    for net in &s.ipam {
        out.extend(ipam_exhausted(net, t, at));
    }
}

fn ipam_exhausted(net: &IpamNetwork, t: &Thresholds, at: SystemTime) -> Option<Finding> {
    let ratio = net.usage_ratio()?;
    let levels = [
        (t.ipam_critical_ratio, Severity::Critical),
        (t.ipam_warning_ratio, Severity::Warning),
    ];
    let (severity, _) = worst_level(&levels, |l| ratio >= l)?;
    let stale: Vec<String> = net
        .stale
        .iter()
        .take(MAX_LISTED)
        .map(|r| {
            format!(
                "{} ({})",
                r.ip,
                r.container_id.as_deref().map(short_id).unwrap_or("no id")
            )
        })
        .collect();
    let mut f = Finding::new(
        &CNI_IPAM_EXHAUSTED,
        severity,
        net.name.clone(),
        format!(
            "host-local IPAM network {} has {} of {} addresses reserved ({:.0}%){}",
            net.name,
            net.allocated,
            net.capacity.unwrap_or(0),
            ratio * 100.0,
            if net.stale.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} of them by containers that no longer run",
                    net.stale.len()
                )
            }
        ),
        at,
    )
    .with("allocated", net.allocated)
    .with("capacity", net.capacity)
    .with("usage_ratio", round4(ratio))
    .with("data_dir", net.data_dir.clone())
    .with("config_file", net.config_file.clone());
    if net.stale_known {
        f = f
            .with("stale_reservations", net.stale.len())
            .with("stale_examples", json!(stale));
    }
    Some(f)
}

fn is_leaked(ns: &NetnsInfo, min_age: u64) -> bool {
    ns.is_empty_pin() && ns.age_seconds.is_some_and(|a| a >= min_age)
}

/// The host-local reservation of one of the namespace's addresses, which names the
/// sandbox that took it when no process is left to say.
fn reservation_of(s: &NetnsSample, ns: &NetnsInfo) -> Option<String> {
    ns.interfaces
        .iter()
        .flat_map(|i| i.addresses.iter())
        .filter_map(|a| a.split('/').next())
        .find_map(|ip| {
            let addr: IpAddr = ip.parse().ok()?;
            s.ipam.iter().find_map(|net| {
                net.stale.iter().find(|r| r.ip == addr).map(|r| {
                    format!(
                        "{ip} in {} by container {}",
                        net.name,
                        r.container_id.as_deref().unwrap_or("?")
                    )
                })
            })
        })
}

fn leaked(s: &NetnsSample, ns: &NetnsInfo, at: SystemTime) -> Finding {
    let name = ns.name();
    let age = ns.age_seconds.unwrap_or(0);
    let pod = ns.former_pod.as_ref().map(|p| p.name());
    let addresses: Vec<String> = ns
        .interfaces
        .iter()
        .filter(|i| &*i.name != "lo")
        .map(|i| {
            format!("{} {}", i.name, i.addresses.join(","))
                .trim()
                .to_string()
        })
        .collect();
    let mut f = Finding::new(
        &NETNS_LEAKED,
        Severity::Warning,
        name.clone(),
        format!(
            "network namespace {name} (pinned {} ago) has no process left{}",
            crate::time::age(at, at - std::time::Duration::from_secs(age)),
            pod.as_ref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default()
        ),
        at,
    )
    .with("inode", ns.inode)
    .with("pins", json!(ns.pins))
    .with("age_seconds", age)
    .with("interfaces", json!(addresses))
    .with("host_veths", json!(ns.host_veths));
    if let Some(p) = pod {
        f = f.with("former_pod", p);
    }
    if let Some(r) = reservation_of(s, ns) {
        f = f.with("ipam_reservation", r);
    }
    f
}

fn orphaned(s: &NetnsSample, v: &VethPair, min_age: u64, at: SystemTime) -> Option<Finding> {
    let why = match v.peer_state {
        PeerState::Empty => {
            let ns = s.namespace(v.peer_netns?)?;
            if !is_leaked(ns, min_age) {
                return None;
            }
            format!("its peer is in {}, pinned with no process", ns.name())
        }
        PeerState::Unknown if !s.peers_known => return None,
        PeerState::Unknown => {
            let seen = at
                .duration_since(v.first_seen)
                .unwrap_or_default()
                .as_secs();
            if seen < min_age {
                return None;
            }
            match v.peer_netnsid {
                Some(id) => format!(
                    "its peer is in namespace id {id}, which no pin or process on the node holds"
                ),
                None => "its peer's namespace is unknown".to_string(),
            }
        }
        PeerState::Host | PeerState::Live => return None,
    };
    let pod = v.pod.as_ref().map(|p| p.name());
    let mut f = Finding::new(
        &VETH_ORPHANED,
        Severity::Warning,
        v.name.to_string(),
        format!(
            "veth {} has no live peer: {why}{}",
            v.name,
            pod.as_ref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default()
        ),
        at,
    )
    .with("peer_state", v.peer_state.as_str())
    .with("peer_ifindex", v.peer_ifindex)
    .with("peer_netnsid", v.peer_netnsid)
    .with("peer_netns_inode", v.peer_netns)
    .with("peer_pins", json!(v.peer_pins))
    .with("master", v.master.as_deref());
    if let Some(p) = pod {
        f = f.with("former_pod", p);
    }
    Some(f)
}

fn veth_line(v: &VethPair) -> String {
    let mut line = format!(
        "{} mtu {}",
        v.name,
        v.mtu.map_or("?".into(), |m| m.to_string())
    );
    if let (Some(name), Some(m)) = (&v.peer_name, v.peer_mtu) {
        line.push_str(&format!(", pod {name} mtu {m}"));
    }
    if let Some(p) = &v.pod {
        line.push_str(&format!(" ({})", p.name()));
    }
    line
}

fn mtu_mismatch(s: &NetnsSample, at: SystemTime) -> Option<Finding> {
    let uplink = s.uplink.as_ref()?;
    let uplink_mtu = uplink.mtu?;
    let overhead = s.overlays.iter().map(overhead_of).max().unwrap_or(0);
    let max = uplink_mtu.saturating_sub(overhead);
    let overlay_over = |o: &&Overlay| {
        o.mtu
            .is_some_and(|m| m > uplink_mtu.saturating_sub(overhead_of(o)))
    };
    let veth_over = |v: &&VethPair| {
        v.peer_state != PeerState::Host
            && (v.mtu.is_some_and(|m| m > max) || v.peer_mtu.is_some_and(|m| m > max))
    };
    let count =
        s.overlays.iter().filter(overlay_over).count() + s.veths.iter().filter(veth_over).count();
    if count == 0 {
        return None;
    }
    // Only the listed ones are formatted: at 500 pods, formatting every veth was
    // most of the rules' time.
    let examples: Vec<String> = s
        .overlays
        .iter()
        .filter(overlay_over)
        .map(|o| format!("{} ({}) mtu {}", o.name, o.kind, o.mtu.unwrap_or(0)))
        .chain(s.veths.iter().filter(veth_over).map(veth_line))
        .take(MAX_LISTED)
        .collect();
    let overlays: Vec<String> = s
        .overlays
        .iter()
        .map(|o| format!("{} ({}, {} B)", o.name, o.kind, overhead_of(o)))
        .collect();
    let because = if overlays.is_empty() {
        String::new()
    } else {
        format!(" minus {overhead} B of tunnel overhead")
    };
    Some(
        Finding::new(
            &MTU_MISMATCH,
            Severity::Warning,
            uplink.name.clone(),
            format!(
                "{} interface{} with an MTU above {max}: the uplink {} has MTU {uplink_mtu}{because}",
                count,
                if count == 1 { "" } else { "s" },
                uplink.name
            ),
            at,
        )
        .with("uplink", uplink.name.clone())
        .with("uplink_mtu", uplink_mtu)
        .with("overlays", json!(overlays))
        .with("overhead_bytes", overhead)
        .with("max_mtu", max)
        .with("interfaces_over", count)
        .with("examples", json!(examples)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::netns::{
        AgeSource, IpamNetwork, IpamRangeSet, NetnsInterface, Overlay, Reservation, Uplink,
    };
    use crate::collect::pods::{Attribution, PodIdentity, Qos};
    use crate::diagnose::testing::run_rules;
    use crate::store::Store;
    use std::sync::Arc;

    use std::time::Duration;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn pod(name: &str) -> Attribution {
        PodIdentity {
            pod_uid: "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9".into(),
            qos: Qos::Burstable,
            namespace: Some("default".into()),
            pod: Some(name.into()),
            container: None,
            container_id: None,
        }
        .into()
    }

    fn ns(inode: u64, pin: &str, processes: u32, age: u64) -> NetnsInfo {
        NetnsInfo {
            inode,
            host: false,
            pins: vec![format!("/run/netns/{pin}")].into(),
            nsid: Some(inode as i32 % 100),
            processes,
            pids: vec![],
            created: Some(at(T0 - age)),
            age_seconds: Some(age),
            age_from: Some(AgeSource::Pin),
            pod: (processes > 0).then(|| pod("web-1")),
            former_pod: (processes == 0).then(|| pod("web-0")),
            interfaces: vec![NetnsInterface {
                index: 2,
                name: "eth0".into(),
                kind: Some("veth".into()),
                mtu: Some(1450),
                operstate: Some("up".into()),
                addresses: vec!["10.244.1.5/24".into()].into(),
                peer_ifindex: Some(9),
            }]
            .into(),
            interfaces_error: None,
            host_veths: vec![],
        }
    }

    fn veth(name: &str, state: PeerState, peer: Option<u64>, first_seen: u64) -> VethPair {
        VethPair {
            name: name.into(),
            index: 9,
            mtu: Some(1450),
            admin_up: true,
            operstate: Some("up".into()),
            master: Some("cni0".into()),
            stats: None,
            peer_ifindex: Some(2),
            peer_netnsid: Some(3),
            peer_netns: peer,
            peer_state: state,
            peer_name: Some("eth0".into()),
            peer_mtu: Some(1450),
            peer_addresses: Arc::from([]),
            peer_pins: Arc::from([]),
            pod: None,
            pod_gone: false,
            first_seen: at(first_seen),
        }
    }

    fn sample() -> NetnsSample {
        NetnsSample {
            host_netns: Some(1),
            peers_known: true,
            namespaces: vec![],
            veths: vec![],
            ipam: vec![],
            uplink: Some(Uplink {
                name: "eth0".into(),
                mtu: Some(1500),
            }),
            overlays: vec![],
            stale_pins: vec![],
            unavailable: vec![],
        }
    }

    fn run(s: NetnsSample, thresholds: Thresholds) -> Vec<Finding> {
        // Sampled at T0, which the namespace and veth ages in these tests count from.
        let store = Store::new("n".into(), Duration::from_secs(300));
        store.register("netns", Duration::from_secs(15));
        store.record("netns", at(T0), Duration::ZERO, Ok(Arc::new(s)));
        run_rules(rules, &store, &thresholds)
    }

    fn ids(f: &[Finding]) -> Vec<(&str, &str)> {
        f.iter().map(|f| (f.id, f.subject.as_str())).collect()
    }

    #[test]
    fn an_empty_pin_older_than_the_minimum_age_is_leaked() {
        let mut s = sample();
        s.namespaces = vec![
            ns(10, "cni-live", 2, 3600),
            ns(11, "cni-young", 0, 60),
            ns(12, "cni-old", 0, 600),
        ];
        s.ipam = vec![IpamNetwork {
            name: "cbr0".into(),
            plugin: Some("bridge".into()),
            config_file: None,
            data_dir: "/var/lib/cni/networks/cbr0".into(),
            range_sets: vec![],
            allocated: 1,
            capacity: None,
            stale_known: true,
            stale: vec![Reservation {
                ip: "10.244.1.5".parse().unwrap(),
                container_id: Some("abc123".into()),
                interface: Some("eth0".into()),
                pod: None,
            }],
            owned: vec![],
        }];
        let f = run(s.clone(), Thresholds::default());
        assert_eq!(ids(&f), vec![("netns_leaked", "cni-old")]);
        assert_eq!(f[0].evidence["age_seconds"], 600);
        assert_eq!(f[0].evidence["former_pod"], "default/web-0");
        assert_eq!(
            f[0].summary,
            "network namespace cni-old (pinned 10m ago) has no process left (was default/web-0)"
        );
        assert_eq!(
            f[0].evidence["ipam_reservation"],
            "10.244.1.5 in cbr0 by container abc123"
        );
        let t = Thresholds {
            leak_min_age: Duration::ZERO,
            ..Thresholds::default()
        };
        assert_eq!(
            run(s, t).len(),
            2,
            "with no minimum age the young one counts"
        );
    }

    #[test]
    fn a_namespace_without_a_pin_is_never_leaked() {
        let mut s = sample();
        let mut unpinned = ns(10, "x", 0, 3600);
        unpinned.pins = Arc::from([]);
        s.namespaces = vec![unpinned];
        assert!(run(s, Thresholds::default()).is_empty());
    }

    #[test]
    fn veths_into_leaked_or_unknown_namespaces_are_orphaned() {
        let mut s = sample();
        s.namespaces = vec![ns(10, "cni-live", 1, 3600), ns(12, "cni-old", 0, 600)];
        s.veths = vec![
            veth("veth-live", PeerState::Live, Some(10), T0 - 3600),
            veth("veth-empty", PeerState::Empty, Some(12), T0 - 3600),
            veth("veth-lost", PeerState::Unknown, None, T0 - 3600),
            veth("veth-new", PeerState::Unknown, None, T0 - 10),
            veth("veth-host", PeerState::Host, None, T0 - 3600),
        ];
        let f = run(s.clone(), Thresholds::default());
        let orphans: Vec<&str> = f
            .iter()
            .filter(|f| f.id == "veth_orphaned")
            .map(|f| f.subject.as_str())
            .collect();
        assert_eq!(orphans, vec!["veth-empty", "veth-lost"]);
        let lost = f.iter().find(|f| f.subject == "veth-lost").unwrap();
        assert_eq!(lost.evidence["peer_state"], "unknown");
        assert!(lost.summary.contains("namespace id 3"), "{}", lost.summary);
        s.peers_known = false;
        let f = run(s, Thresholds::default());
        assert!(
            !f.iter().any(|f| f.subject == "veth-lost"),
            "without netlink a peer is unknown, not lost"
        );
    }

    #[test]
    fn mtu_above_the_uplink_minus_the_overlay_overhead() {
        let mut s = sample();
        s.veths = vec![veth("veth-ok", PeerState::Live, Some(10), T0)];
        assert!(run(s.clone(), Thresholds::default()).is_empty());
        s.overlays = vec![Overlay {
            name: "flannel.1".into(),
            kind: "vxlan".into(),
            mtu: Some(1450),
            overhead_bytes: 50,
        }];
        let mut big = veth("veth-big", PeerState::Live, Some(10), T0);
        big.peer_mtu = Some(1500);
        big.pod = Some(pod("web-1"));
        s.veths.push(big);
        let f = run(s.clone(), Thresholds::default());
        assert_eq!(ids(&f), vec![("mtu_mismatch", "eth0")]);
        assert_eq!(f[0].evidence["max_mtu"], 1450);
        assert_eq!(f[0].evidence["interfaces_over"], 1);
        assert_eq!(
            f[0].evidence["examples"][0],
            "veth-big mtu 1450, pod eth0 mtu 1500 (default/web-1)"
        );
        s.overlays[0].kind = "wireguard".into();
        s.overlays[0].overhead_bytes = 60;
        let f = run(s.clone(), Thresholds::default());
        assert_eq!(f[0].evidence["max_mtu"], 1440);
        assert_eq!(
            f[0].evidence["interfaces_over"], 3,
            "the overlay itself and both veths"
        );
        for i in 0..MAX_LISTED {
            s.veths
                .push(veth(&format!("veth-{i}"), PeerState::Live, Some(10), T0));
        }
        let f = run(s, Thresholds::default());
        assert_eq!(f[0].evidence["interfaces_over"], 3 + MAX_LISTED);
        let examples = f[0].evidence["examples"].as_array().unwrap();
        assert_eq!(examples.len(), MAX_LISTED, "{examples:?}");
        assert_eq!(
            examples[0], "flannel.1 (wireguard) mtu 1450",
            "overlays first"
        );
        assert!(
            f[0].summary.starts_with("13 interfaces"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn the_rule_counts_its_own_overhead_for_each_tunnel_kind() {
        assert_eq!(tunnel_overhead("vxlan"), Some(50));
        assert_eq!(tunnel_overhead("wireguard"), Some(60));
        assert_eq!(tunnel_overhead("bridge"), None);
        assert_eq!(tunnel_overhead(""), None);
        let mut s = sample();
        s.overlays = vec![Overlay {
            name: "tunl0".into(),
            kind: "ipip".into(),
            mtu: Some(1480),
            overhead_bytes: 0,
        }];
        let mut big = veth("veth-big", PeerState::Live, Some(10), T0);
        big.mtu = Some(1500);
        s.veths = vec![big];
        let f = run(s, Thresholds::default());
        assert_eq!(f[0].evidence["max_mtu"], 1480);
        assert_eq!(f[0].evidence["overlays"][0], "tunl0 (ipip, 20 B)");
    }

    #[test]
    fn ipam_at_90_percent_warns_and_full_is_critical() {
        let net = |allocated: u64| IpamNetwork {
            name: "cbr0".into(),
            plugin: Some("bridge".into()),
            config_file: Some("/etc/cni/net.d/10-bridge.conflist".into()),
            data_dir: "/var/lib/cni/networks/cbr0".into(),
            range_sets: vec![IpamRangeSet {
                ranges: vec!["10.244.1.0/28 10.244.1.1-10.244.1.14".into()],
                capacity: 13,
                allocated,
            }],
            allocated,
            capacity: Some(13),
            stale_known: true,
            stale: vec![],
            owned: vec![],
        };
        let mut s = sample();
        s.ipam = vec![net(11)];
        assert!(run(s.clone(), Thresholds::default()).is_empty(), "85%");
        s.ipam = vec![net(12)];
        let f = run(s.clone(), Thresholds::default());
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence["usage_ratio"], 0.9231);
        s.ipam = vec![net(13)];
        let f = run(s, Thresholds::default());
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].evidence["stale_reservations"], 0);
    }
}
