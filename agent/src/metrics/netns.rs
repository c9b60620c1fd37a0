//! Every netns family is steady: namespaces, veths and IPAM reservations change as
//! pods come and go, not from one round to the next.

use super::family::Families;
use super::steady::SteadyFamilies;
use crate::collect::netns::PeerState;
use crate::collect::NetnsSample;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

const NAMESPACE_STATES: [&str; 3] = ["host", "live", "empty"];
const PEER_STATES: [PeerState; 4] = [
    PeerState::Host,
    PeerState::Live,
    PeerState::Empty,
    PeerState::Unknown,
];

/// Namespaces, veths and IPAM networks as the families read them.
pub struct Namespaces;

#[derive(Hash)]
pub struct Rows<'a> {
    namespaces_by_state: [usize; 3],
    stale_pins: usize,
    veths_by_peer_state: [usize; 4],
    veths: Vec<Veth<'a>>,
    networks: Vec<Network<'a>>,
}

#[derive(Hash)]
struct Veth<'a> {
    interface: &'a str,
    peer_state: &'static str,
    master: &'a str,
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    mtu: Option<u32>,
}

#[derive(Hash)]
struct Network<'a> {
    name: &'a str,
    allocated: u64,
    capacity: Option<u64>,
    /// None when which reservations are stale is not known.
    stale: Option<usize>,
}

impl SteadyFamilies for Namespaces {
    type Rows<'a> = Rows<'a>;

    fn rows(snap: &Snapshot) -> Option<Rows<'_>> {
        let (_, s) = snap.latest::<NetnsSample>()?;
        Some(Rows {
            namespaces_by_state: NAMESPACE_STATES
                .map(|state| s.namespaces.iter().filter(|n| n.state() == state).count()),
            stale_pins: s.stale_pins.len(),
            veths_by_peer_state: PEER_STATES
                .map(|state| s.veths.iter().filter(|v| v.peer_state == state).count()),
            veths: s
                .veths
                .iter()
                .map(|v| {
                    let pod = v.pod.as_ref();
                    Veth {
                        interface: &v.name,
                        peer_state: v.peer_state.as_str(),
                        master: v.master.as_deref().unwrap_or(""),
                        namespace: pod.and_then(|p| p.namespace.as_deref()).unwrap_or(""),
                        pod: pod.and_then(|p| p.pod.as_deref()).unwrap_or(""),
                        pod_uid: pod.map(|p| &*p.pod_uid).unwrap_or(""),
                        mtu: v.mtu,
                    }
                })
                .collect(),
            networks: s
                .ipam
                .iter()
                .map(|n| Network {
                    name: &n.name,
                    allocated: n.allocated,
                    capacity: n.capacity,
                    stale: n.stale_known.then_some(n.stale.len()),
                })
                .collect(),
        })
    }

    fn encode(rows: Rows<'_>, e: &mut DescriptorEncoder) -> fmt::Result {
        e.gauge(
            "nodediag_netns_namespaces",
            "Network namespaces on the node by state: host, live (has processes), empty (pinned under a netns directory with no process) (/proc/*/ns/net, netns pins).",
            NAMESPACE_STATES
                .into_iter()
                .zip(rows.namespaces_by_state)
                .map(|(state, n)| ([("state", state)], n)),
        )?;
        e.gauge_value(
            "nodediag_netns_stale_pins",
            "Files left in a netns directory whose namespace is gone (no nsfs mount).",
            rows.stale_pins,
        )?;
        e.gauge(
            "nodediag_netns_veths",
            "Host-side veths by where their peer is: host, live, empty (pinned namespace with no process), unknown (rtnetlink IFLA_LINK_NETNSID).",
            PEER_STATES
                .into_iter()
                .zip(rows.veths_by_peer_state)
                .map(|(state, n)| ([("peer_state", state.as_str())], n)),
        )?;
        e.gauge(
            "nodediag_netns_veth_info",
            "One series per host-side veth, naming the pod its peer belongs to (empty when none) (rtnetlink, /proc/<pid>/cgroup, kubelet log dirs).",
            rows.veths.iter().map(|v| {
                let labels = [
                    ("interface", v.interface),
                    ("peer_state", v.peer_state),
                    ("master", v.master),
                    ("namespace", v.namespace),
                    ("pod", v.pod),
                    ("pod_uid", v.pod_uid),
                ];
                (labels, 1u64)
            }),
        )?;
        e.gauge(
            "nodediag_netns_veth_mtu_bytes",
            "MTU of each host-side veth (rtnetlink IFLA_MTU).",
            rows.veths
                .iter()
                .filter_map(|v| Some(([("interface", v.interface)], v.mtu?))),
        )?;
        fn network(name: &str) -> [(&'static str, &str); 1] {
            [("network", name)]
        }
        e.gauge(
            "nodediag_cni_ipam_allocated_addresses",
            "Addresses reserved by host-local IPAM (files in /var/lib/cni/networks/<network>/).",
            rows.networks.iter().map(|n| (network(n.name), n.allocated)),
        )?;
        e.gauge(
            "nodediag_cni_ipam_capacity_addresses",
            "Addresses host-local IPAM can hand out in the network's tightest range set (CNI config in /etc/cni/net.d).",
            rows.networks
                .iter()
                .filter_map(|n| Some((network(n.name), n.capacity?))),
        )?;
        e.gauge(
            "nodediag_cni_ipam_stale_reservations",
            "host-local reservations whose container has no process on the node.",
            rows.networks
                .iter()
                .filter_map(|n| Some((network(n.name), n.stale?))),
        )
    }
}
