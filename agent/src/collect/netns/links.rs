//! The links of the host and of each namespace, and how they join: a host veth's
//! IFLA_LINK_NETNSID resolved through the host's nsid table names the namespace of
//! its peer, the peer's ifindex names the interface there. Also the uplink and the
//! overlays, which the MTU rule compares the pod interfaces with.

use super::scan::{PinScan, ProcScan};
use super::{NetnsInfo, NetnsInterface, Overlay, PeerState, TunnelOverhead, Uplink, VethPair};
use crate::collect::host_links::HostLinks;
use crate::host::HostRoot;
use crate::kernel::link_events::Changes;
use crate::kernel::netns;
use crate::kernel::rtnetlink::{Addr, Link, LinkStats};
use crate::kernel::ReadError;
use crate::kernel::{net_class, route};
use crate::sample::Unavailable;
use foldhash::{HashMap, HashMapExt, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// What the collector keeps between collections: the host's links, and each
/// namespace read by id (by inode, with that id) until a change inside it, or its
/// end, is announced.
pub(super) struct LinkCache {
    host_path: PathBuf,
    host: HostLinks,
    views: HashMap<u64, (i32, Arc<[NetnsInterface]>)>,
    /// The host's interfaces, until its links or addresses change: at 500 pods, a
    /// veth and an address each, built again every round before.
    host_interfaces: Option<Arc<[NetnsInterface]>>,
}

impl LinkCache {
    /// Forgets what announcements say changed, and namespaces no longer listed.
    fn apply(&mut self, changes: &Changes, listed: &HashSet<u64>) {
        if changes.lost || !self.host.hears_other_namespaces() {
            self.views.clear();
            return;
        }
        self.views.retain(|inode, (nsid, _)| {
            listed.contains(inode)
                && !changes.namespaces.contains(nsid)
                && !changes.forgotten.contains(nsid)
        });
    }
}

/// The host's links and addresses, and each namespace's nsid and interfaces, over
/// rtnetlink (from sysfs, host only, when netlink is off).
pub(super) fn look_inside(
    root: &HostRoot,
    netlink: bool,
    pins: &PinScan,
    procs: &ProcScan,
    namespaces: &mut [NetnsInfo],
    unavailable: &mut Vec<Unavailable>,
    cache: &mut Option<LinkCache>,
) -> (Vec<Link>, Vec<Addr>) {
    if !netlink {
        unavailable.push(Unavailable::new(
            "namespace interfaces and veth peers",
            "netlink is off (--no-netlink): host links come from sysfs, and veth peers and interfaces inside namespaces are unknown",
        ));
        return (host_links_from_sysfs(root), Vec::new());
    }
    let host_path = if procs.host_from_pid1 {
        root.proc(&["1", "ns", "net"])
    } else {
        root.proc(&["self", "ns", "net"])
    };
    // How to enter a namespace: by its first pin, else by a process in it (every
    // namespace listed has one or the other). Paths are built only for those
    // entered: most rounds enter none.
    let path_into = |n: &NetnsInfo| match pins.by_ns.get(&n.inode) {
        Some(p) => Some(p.first.clone()),
        None => {
            let pid = procs.by_ns.get(&n.inode)?.pids.first()?;
            Some(root.proc(&[&pid.to_string(), "ns", "net"]))
        }
    };
    let no_view = |unavailable: &mut Vec<Unavailable>, e: &dyn std::fmt::Display| {
        unavailable.push(Unavailable::new(
            "namespace interfaces and veth peers",
            format!("{e}: nodediag needs CAP_SYS_ADMIN and hostPID to enter namespaces"),
        ))
    };
    if cache.as_ref().is_some_and(|c| c.host_path != host_path) {
        *cache = None;
    }
    let c = match cache {
        Some(c) => c,
        None => match HostLinks::open(&host_path, true) {
            Ok(host) => cache.insert(LinkCache {
                host_path: host_path.clone(),
                host,
                views: HashMap::new(),
                host_interfaces: None,
            }),
            Err(e) => {
                no_view(unavailable, &e);
                return (Vec::new(), Vec::new());
            }
        },
    };
    let read_host = |c: &mut LinkCache| -> std::io::Result<_> {
        let (links, changes) = c.host.links()?;
        Ok((links, c.host.addrs()?.to_vec(), changes))
    };
    let (host_links, host_addrs, changes) = match read_host(c) {
        Ok(read) => read,
        Err(e) => {
            *cache = None;
            no_view(
                unavailable,
                &ReadError {
                    path: host_path,
                    source: e,
                },
            );
            return (Vec::new(), Vec::new());
        }
    };
    if changes.lost || changes.host_links || changes.host_addrs {
        c.host_interfaces = None;
    }
    let listed: HashSet<u64> = namespaces.iter().map(|n| n.inode).collect();
    c.apply(&changes, &listed);
    // Each namespace as last read unless a change inside it was announced; the
    // others from a thread that enters them.
    let mut to_enter = Vec::new();
    for (i, ns) in namespaces.iter_mut().enumerate().filter(|(_, n)| !n.host) {
        match c.views.get(&ns.inode) {
            Some((nsid, interfaces)) => {
                ns.nsid = Some(*nsid);
                ns.interfaces = interfaces.clone();
            }
            None => to_enter.extend(path_into(ns).map(|path| (i, path))),
        }
    }
    if to_enter.is_empty() {
        return (host_links, host_addrs);
    }
    let entering = to_enter
        .iter()
        .map(|(i, p)| (p.clone(), namespaces[*i].inode))
        .collect();
    match netns::enter_each(host_path, entering) {
        Ok(views) => {
            for ((i, _), target) in to_enter.iter().zip(views) {
                let ns = &mut namespaces[*i];
                ns.nsid = target.nsid;
                match target.view {
                    Ok(v) => {
                        ns.interfaces = interfaces_of(&v.links, &v.addrs).into();
                        // Only a namespace the host has an id for is announced.
                        if let Some(nsid) = target.nsid {
                            c.views.insert(ns.inode, (nsid, ns.interfaces.clone()));
                        }
                    }
                    Err(e) => ns.interfaces_error = Some(e.to_string()),
                }
            }
        }
        Err(e) => no_view(unavailable, &e),
    }
    (host_links, host_addrs)
}

/// The host's interfaces: as last built while no change was announced and the same
/// links are listed (one removed since its announcement is not).
pub(super) fn host_interfaces(
    cache: &mut Option<LinkCache>,
    links: &[Link],
    addrs: &[Addr],
) -> Arc<[NetnsInterface]> {
    let Some(c) = cache else {
        return interfaces_of(links, addrs).into();
    };
    let same_links = |kept: &Arc<[NetnsInterface]>| {
        kept.len() == links.len() && kept.iter().zip(links).all(|(i, l)| i.index == l.index)
    };
    match &c.host_interfaces {
        Some(kept) if same_links(kept) => kept.clone(),
        _ => c
            .host_interfaces
            .insert(interfaces_of(links, addrs).into())
            .clone(),
    }
}

fn cidr(a: &Addr) -> String {
    format!("{}/{}", a.address, a.prefix_len)
}

pub(super) fn interfaces_of(links: &[Link], addrs: &[Addr]) -> Vec<NetnsInterface> {
    // The host holds a link (and a link-local address) per pod: addresses are
    // grouped once, not searched once per link.
    let mut by_index: HashMap<u32, Vec<String>> = HashMap::new();
    for a in addrs {
        by_index.entry(a.index).or_default().push(cidr(a));
    }
    links
        .iter()
        .map(|l| NetnsInterface {
            index: l.index,
            name: l.name.clone(),
            kind: l.kind.clone(),
            mtu: l.mtu,
            operstate: l.operstate.clone(),
            addresses: by_index.remove(&l.index).unwrap_or_default().into(),
            // IFLA_LINK of a vlan or macvlan is its lower device, not a peer.
            peer_ifindex: l
                .link
                .filter(|p| *p != l.index && *p != 0 && l.kind.as_deref() == Some("veth")),
        })
        .collect()
}

/// The host's links from sysfs when netlink is off. sysfs has no link kind for a
/// veth: a virtual link without DEVTYPE whose iflink names another interface is taken
/// as one (its peer's namespace stays unknown).
fn host_links_from_sysfs(root: &HostRoot) -> Vec<Link> {
    let Ok(names) = net_class::list(root) else {
        return Vec::new();
    };
    names
        .iter()
        .map(|name| {
            let s = net_class::read(root, name, &mut Vec::new());
            let index = s.ifindex.unwrap_or(0) as u32;
            let iflink = s.iflink.map(|i| i as u32);
            let veth_like = !s.physical
                && s.devtype.is_none()
                && !s.bridge
                && !s.loopback
                && !s.tun
                && iflink.is_some_and(|i| i != index && i != 0);
            let kind = s
                .devtype
                .clone()
                .or_else(|| s.bridge.then(|| "bridge".into()))
                .or_else(|| veth_like.then(|| "veth".into()));
            Link {
                index,
                name: s.name.as_str().into(),
                kind: kind.map(Into::into),
                mtu: s.mtu.map(|m| m as u32),
                link: iflink,
                link_netnsid: None,
                master: None,
                admin_up: s.admin_up,
                operstate: Some(s.operstate.as_str().into()),
                carrier: s.carrier,
                link_type: 0,
                parent_device: None,
                stats: sysfs_stats(&s.counters),
            }
        })
        .collect()
}

/// Counters from sysfs, when every one of them read.
fn sysfs_stats(c: &net_class::NicCounters) -> Option<LinkStats> {
    Some(LinkStats {
        rx_packets: c.rx_packets?,
        tx_packets: c.tx_packets?,
        rx_errors: c.rx_errors?,
        tx_errors: c.tx_errors?,
        rx_dropped: c.rx_dropped?,
        tx_dropped: c.tx_dropped?,
        ..LinkStats::default()
    })
}

/// Each host-side veth with where its peer is and whose pod that is; records each
/// namespace's host veths. `first_seen` carries over between samples.
pub(super) fn join_veths(
    first_seen: &mut HashMap<(u32, Arc<str>), SystemTime>,
    netlink: bool,
    host_links: &[Link],
    namespaces: &mut [NetnsInfo],
    now: SystemTime,
) -> Vec<VethPair> {
    let names: HashMap<u32, &Arc<str>> = host_links.iter().map(|l| (l.index, &l.name)).collect();
    let by_nsid: HashMap<i32, usize> = namespaces
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((n.nsid?, i)))
        .collect();
    // `first_seen` holds the last round's veths: this round has about as many.
    let mut seen = HashMap::with_capacity(first_seen.len());
    let mut veths = Vec::with_capacity(first_seen.len());
    for l in host_links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
    {
        let key = (l.index, l.name.clone());
        let first = *first_seen.get(&key).unwrap_or(&now);
        seen.insert(key, first);
        let peer_ns = l.link_netnsid.and_then(|id| by_nsid.get(&id).copied());
        let (peer_state, peer_netns) = match (l.link_netnsid, peer_ns) {
            (None, _) if netlink => (PeerState::Host, None),
            (None, _) => (PeerState::Unknown, None),
            (Some(_), Some(i)) if namespaces[i].processes > 0 => {
                (PeerState::Live, Some(namespaces[i].inode))
            }
            (Some(_), Some(i)) if namespaces[i].is_empty_pin() => {
                (PeerState::Empty, Some(namespaces[i].inode))
            }
            (Some(_), _) => (PeerState::Unknown, None),
        };
        let peer = peer_ns.map(|i| &namespaces[i]);
        let peer_if = peer.and_then(|ns| ns.interfaces.iter().find(|i| Some(i.index) == l.link));
        let (pod, pod_gone) = match peer {
            Some(ns) if ns.pod.is_some() => (ns.pod.clone(), false),
            Some(ns) => (ns.former_pod.clone(), ns.former_pod.is_some()),
            None => (None, false),
        };
        veths.push(VethPair {
            name: l.name.clone(),
            index: l.index,
            mtu: l.mtu,
            admin_up: l.admin_up,
            operstate: l.operstate.clone(),
            master: l.master.and_then(|m| names.get(&m).map(|n| Arc::clone(n))),
            stats: l.stats,
            peer_ifindex: l.link.filter(|p| *p != 0),
            peer_netnsid: l.link_netnsid,
            peer_netns,
            peer_state,
            peer_name: peer_if.map(|i| i.name.clone()),
            peer_mtu: peer_if.and_then(|i| i.mtu),
            peer_addresses: peer_if.map(|i| i.addresses.clone()).unwrap_or_default(),
            peer_pins: peer.map(|ns| ns.pins.clone()).unwrap_or_default(),
            pod,
            pod_gone,
            first_seen: first,
        });
        if let Some(i) = peer_ns {
            namespaces[i].host_veths.push(l.name.clone());
        }
    }
    *first_seen = seen;
    veths
}

/// The interface of the default route, with its MTU.
pub(super) fn uplink(root: &HostRoot, host_links: &[Link]) -> Option<Uplink> {
    let name = route::default_interface(root)?;
    let mtu = host_links
        .iter()
        .find(|l| *l.name == *name)
        .and_then(|l| l.mtu);
    Some(Uplink { name, mtu })
}

/// The tunnel devices that are up, with the overhead of their kind.
pub(super) fn overlays(host_links: &[Link], overhead_of: TunnelOverhead) -> Vec<Overlay> {
    host_links
        .iter()
        .filter(|l| l.admin_up)
        .filter_map(|l| {
            let kind = l.kind.as_deref()?;
            Some(Overlay {
                name: l.name.to_string(),
                kind: kind.to_string(),
                mtu: l.mtu,
                overhead_bytes: overhead_of(kind)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_carry_their_addresses_and_veth_peers() {
        let links = vec![
            Link {
                index: 1,
                name: "lo".into(),
                link: Some(1),
                ..Link::default()
            },
            Link {
                index: 3,
                name: "eth0.100".into(),
                kind: Some("vlan".into()),
                link: Some(2),
                ..Link::default()
            },
            Link {
                index: 2,
                name: "eth0".into(),
                kind: Some("veth".into()),
                mtu: Some(1450),
                link: Some(17),
                link_netnsid: Some(0),
                ..Link::default()
            },
        ];
        let addrs = vec![Addr {
            index: 2,
            address: "10.244.1.5".parse().unwrap(),
            prefix_len: 24,
        }];
        let got = interfaces_of(&links, &addrs);
        assert_eq!(got[0].peer_ifindex, None, "a link to itself is no peer");
        assert!(got[0].addresses.is_empty());
        assert_eq!(
            got[1].peer_ifindex, None,
            "a vlan's lower device is no peer"
        );
        assert_eq!(got[2].addresses, ["10.244.1.5/24".to_string()].into());
        assert_eq!(got[2].peer_ifindex, Some(17));
    }

    #[test]
    fn host_interfaces_are_kept_while_the_same_links_are_listed() {
        let link = |index: u32, name: &str| Link {
            index,
            name: name.into(),
            ..Link::default()
        };
        let mut cache = Some(LinkCache {
            host_path: "/proc/self/ns/net".into(),
            host: HostLinks::open(std::path::Path::new("/proc/self/ns/net"), false).unwrap(),
            views: HashMap::new(),
            host_interfaces: None,
        });
        let links = [link(1, "lo"), link(2, "eth0")];
        let first = host_interfaces(&mut cache, &links, &[]);
        let again = host_interfaces(&mut cache, &links, &[]);
        assert!(Arc::ptr_eq(&first, &again), "no change: kept");
        let gone = host_interfaces(&mut cache, &links[..1], &[]);
        assert_eq!(gone.len(), 1, "a link left unannounced is not kept");
        let renumbered = host_interfaces(&mut cache, &[link(1, "lo"), link(5, "eth1")], &[]);
        assert_eq!(&*renumbered[1].name, "eth1");
        // What an announcement invalidates is built again (see look_inside).
        cache.as_mut().unwrap().host_interfaces = None;
        let built = host_interfaces(&mut cache, &links, &[]);
        assert!(!Arc::ptr_eq(&first, &built));
        assert_eq!(*built, *first);
        assert_eq!(host_interfaces(&mut None, &links, &[]).len(), 2);
    }

    #[test]
    fn overlays_are_the_tunnels_that_are_up() {
        let link = |name: &str, kind: &str, up: bool| Link {
            name: name.into(),
            kind: Some(kind.into()),
            mtu: Some(1450),
            admin_up: up,
            ..Link::default()
        };
        let links = [
            link("flannel.1", "vxlan", true),
            link("wg0", "wireguard", false),
            link("cni0", "bridge", true),
        ];
        let tunnels = |kind: &str| (kind != "bridge").then_some(50);
        let got = overlays(&links, tunnels);
        assert_eq!(
            got,
            [Overlay {
                name: "flannel.1".into(),
                kind: "vxlan".into(),
                mtu: Some(1450),
                overhead_bytes: 50,
            }],
            "a link that is down carries nothing; a bridge is no tunnel"
        );
    }
}
