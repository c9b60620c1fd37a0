use super::family::Families;
use crate::collect::netns::PeerState;
use crate::collect::NetnsSample;
use crate::store::Snapshot;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;

pub fn encode(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
    let Some((_, s)) = snap.latest::<NetnsSample>() else {
        return Ok(());
    };
    e.gauge(
        "nodediag_netns_namespaces",
        "Network namespaces on the node by state: host, live (has processes), empty (pinned under a netns directory with no process) (/proc/*/ns/net, netns pins).",
        ["host", "live", "empty"].map(|state| {
            let n = s.namespaces.iter().filter(|n| n.state() == state).count();
            ([("state", state)], n)
        }),
    )?;
    e.gauge_value(
        "nodediag_netns_stale_pins",
        "Files left in a netns directory whose namespace is gone (no nsfs mount).",
        s.stale_pins.len(),
    )?;
    e.gauge(
        "nodediag_netns_veths",
        "Host-side veths by where their peer is: host, live, empty (pinned namespace with no process), unknown (rtnetlink IFLA_LINK_NETNSID).",
        [
            PeerState::Host,
            PeerState::Live,
            PeerState::Empty,
            PeerState::Unknown,
        ]
        .map(|state| {
            let n = s.veths.iter().filter(|v| v.peer_state == state).count();
            ([("peer_state", state.as_str())], n)
        }),
    )?;
    e.gauge(
        "nodediag_netns_veth_info",
        "One series per host-side veth, naming the pod its peer belongs to (empty when none) (rtnetlink, /proc/<pid>/cgroup, kubelet log dirs).",
        s.veths.iter().map(|v| {
            let pod = v.pod.as_ref();
            let labels = [
                ("interface", &*v.name),
                ("peer_state", v.peer_state.as_str()),
                ("master", v.master.as_deref().unwrap_or("")),
                (
                    "namespace",
                    pod.and_then(|p| p.namespace.as_deref()).unwrap_or(""),
                ),
                ("pod", pod.and_then(|p| p.pod.as_deref()).unwrap_or("")),
                ("pod_uid", pod.map(|p| &*p.pod_uid).unwrap_or("")),
            ];
            (labels, 1u64)
        }),
    )?;
    e.gauge(
        "nodediag_netns_veth_mtu_bytes",
        "MTU of each host-side veth (rtnetlink IFLA_MTU).",
        s.veths
            .iter()
            .filter_map(|v| Some(([("interface", &*v.name)], v.mtu?))),
    )?;
    fn network(name: &str) -> [(&'static str, &str); 1] {
        [("network", name)]
    }
    e.gauge(
        "nodediag_cni_ipam_allocated_addresses",
        "Addresses reserved by host-local IPAM (files in /var/lib/cni/networks/<network>/).",
        s.ipam.iter().map(|n| (network(&n.name), n.allocated)),
    )?;
    e.gauge(
        "nodediag_cni_ipam_capacity_addresses",
        "Addresses host-local IPAM can hand out in the network's tightest range set (CNI config in /etc/cni/net.d).",
        s.ipam
            .iter()
            .filter_map(|n| Some((network(&n.name), n.capacity?))),
    )?;
    e.gauge(
        "nodediag_cni_ipam_stale_reservations",
        "host-local reservations whose container has no process on the node.",
        s.ipam
            .iter()
            .filter(|n| n.stale_known)
            .map(|n| (network(&n.name), n.stale.len())),
    )
}
