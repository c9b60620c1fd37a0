//! Which pod an IP address belongs to, from the netns inventory: the addresses of
//! each pod network namespace's interfaces, then the host-local IPAM reservations of
//! running sandboxes (for a pod whose interfaces could not be read). A conntrack
//! entry's source address names the pod that opened the flow this way.

use crate::collect::conntrack_top::Owners;
use crate::collect::NetnsSample;
use crate::store::Snapshot;
use std::collections::HashMap;
use std::net::IpAddr;

/// How the host's own addresses are named: the host and every hostNetwork pod use them.
pub const HOST_NETWORK: &str = "host network";

/// How sure an owner is: a live pod's interface beats a reservation, which beats a
/// namespace whose pod has gone (an address can be handed out again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    GonePod,
    Reservation,
    Interface,
}

/// Address -> `namespace/pod` (or [`HOST_NETWORK`]) from the latest netns sample;
/// empty without one.
pub fn from_snapshot(snap: &Snapshot) -> Owners {
    snap.latest::<NetnsSample>()
        .map(|(_, s)| owners(s))
        .unwrap_or_default()
}

pub fn owners(sample: &NetnsSample) -> Owners {
    let mut found: HashMap<IpAddr, (Source, String)> = HashMap::new();
    let mut claim = |ip: IpAddr, source: Source, owner: String| {
        if !attributable(ip) {
            return;
        }
        match found.get(&ip) {
            // Equal claims: the first stays, so the answer does not flap.
            Some((had, _)) if *had >= source => {}
            _ => {
                found.insert(ip, (source, owner));
            }
        }
    };
    for ns in &sample.namespaces {
        let (source, owner) = if ns.host {
            (Source::Interface, HOST_NETWORK.to_string())
        } else if let Some(p) = &ns.pod {
            (Source::Interface, p.name())
        } else if let Some(p) = &ns.former_pod {
            (Source::GonePod, format!("{} (gone)", p.name()))
        } else {
            continue;
        };
        for iface in ns.interfaces.iter() {
            for addr in iface.addresses.iter() {
                if let Some(ip) = address(addr) {
                    claim(ip, source, owner.clone());
                }
            }
        }
    }
    for net in &sample.ipam {
        for r in &net.owned {
            if let Some(pod) = &r.pod {
                claim(r.ip, Source::Reservation, pod.name());
            }
        }
    }
    found.into_iter().map(|(ip, (_, o))| (ip, o)).collect()
}

/// `10.244.1.5/24` or `10.244.1.5`.
fn address(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.parse().ok()
}

/// Loopback, link-local and unspecified addresses are in every namespace: they name
/// no one.
fn attributable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_loopback() || a.is_link_local() || a.is_unspecified()),
        IpAddr::V6(a) => {
            !(a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collect::netns::{IpamNetwork, NetnsInfo, NetnsInterface, Reservation};
    use crate::collect::pods::{Attribution, PodIdentity, Qos};

    pub fn pod(ns: &str, name: &str) -> Attribution {
        PodIdentity {
            pod_uid: "0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9".into(),
            qos: Qos::Burstable,
            namespace: Some(ns.into()),
            pod: Some(name.into()),
            container: None,
            container_id: Some("abc".into()),
        }
        .into()
    }

    fn netns(inode: u64, host: bool, addrs: &[&str]) -> NetnsInfo {
        NetnsInfo {
            inode,
            host,
            pins: std::sync::Arc::from([]),
            nsid: None,
            processes: 1,
            pids: vec![],
            created: None,
            age_seconds: None,
            age_from: None,
            pod: None,
            former_pod: None,
            interfaces: vec![
                NetnsInterface {
                    index: 1,
                    name: "lo".into(),
                    kind: None,
                    mtu: None,
                    operstate: None,
                    addresses: vec!["127.0.0.1/8".into(), "::1/128".into()].into(),
                    peer_ifindex: None,
                },
                NetnsInterface {
                    index: 2,
                    name: "eth0".into(),
                    kind: Some("veth".into()),
                    mtu: None,
                    operstate: None,
                    addresses: addrs.iter().map(|a| a.to_string()).collect(),
                    peer_ifindex: None,
                },
            ]
            .into(),
            interfaces_error: None,
            host_veths: vec![],
        }
    }

    pub fn sample(namespaces: Vec<NetnsInfo>, owned: Vec<Reservation>) -> NetnsSample {
        NetnsSample {
            host_netns: None,
            peers_known: true,
            namespaces,
            veths: vec![],
            ipam: vec![IpamNetwork {
                name: "cbr0".into(),
                plugin: None,
                config_file: None,
                data_dir: "/var/lib/cni/networks/cbr0".into(),
                range_sets: vec![],
                allocated: owned.len() as u64,
                capacity: None,
                stale_known: true,
                stale: vec![],
                owned,
            }],
            uplink: None,
            overlays: vec![],
            stale_pins: vec![],
            unavailable: vec![],
        }
    }

    fn reservation(ip: &str, owner: Attribution) -> Reservation {
        Reservation {
            ip: ip.parse().unwrap(),
            container_id: owner.container_id.clone(),
            interface: Some("eth0".into()),
            pod: Some(owner),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn interfaces_then_reservations_name_the_addresses() {
        let mut cart = netns(
            10,
            false,
            &["10.244.1.7/24", "fd00:244::7/64", "fe80::1/64"],
        );
        cart.pod = Some(pod("shop", "cart-0"));
        // Interfaces unreadable: only its reservation names it.
        let mut dns = netns(11, false, &[]);
        dns.pod = Some(pod("kube-system", "coredns-1"));
        dns.interfaces = Default::default();
        let host = netns(1, true, &["192.168.1.5/24"]);
        let s = sample(
            vec![host, cart, dns],
            vec![
                reservation("10.244.1.9", pod("kube-system", "coredns-1")),
                // A reservation that disagrees with a live interface loses.
                reservation("10.244.1.7", pod("shop", "other")),
            ],
        );
        let o = owners(&s);
        assert_eq!(o[&ip("10.244.1.7")], "shop/cart-0");
        assert_eq!(o[&ip("fd00:244::7")], "shop/cart-0");
        assert_eq!(o[&ip("10.244.1.9")], "kube-system/coredns-1");
        assert_eq!(o[&ip("192.168.1.5")], HOST_NETWORK);
        for nobody in ["127.0.0.1", "::1", "fe80::1"] {
            assert!(!o.contains_key(&ip(nobody)), "{nobody}");
        }
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn a_gone_pod_is_named_so_and_loses_its_address_to_a_live_one() {
        let mut gone = netns(10, false, &["10.244.1.7/24"]);
        gone.processes = 0;
        gone.former_pod = Some(pod("shop", "cart-0"));
        let mut reused = netns(12, false, &["10.244.1.8/24"]);
        reused.processes = 0;
        reused.former_pod = Some(pod("shop", "old"));
        let mut live = netns(11, false, &["10.244.1.8/24"]);
        live.pod = Some(pod("shop", "new"));
        let o = owners(&sample(vec![gone, reused, live], vec![]));
        assert_eq!(o[&ip("10.244.1.7")], "shop/cart-0 (gone)");
        assert_eq!(o[&ip("10.244.1.8")], "shop/new");
        // A namespace no pod was ever seen in names no one.
        let o = owners(&sample(vec![netns(13, false, &["10.9.9.9/32"])], vec![]));
        assert!(o.is_empty());
    }
}
