use super::encode::{Encoder, Kind};
use crate::collect::netns::PeerState;
use crate::collect::NetnsSample;
use crate::store::Snapshot;

pub fn render(snap: &Snapshot, e: &mut Encoder) {
    let Some((_, s)) = snap.latest::<NetnsSample>() else {
        return;
    };
    e.family(
        "nodediag_netns_namespaces",
        Kind::Gauge,
        "Network namespaces on the node by state: host, live (has processes), empty (pinned under a netns directory with no process) (/proc/*/ns/net, netns pins).",
    );
    for state in ["host", "live", "empty"] {
        let n = s.namespaces.iter().filter(|n| n.state() == state).count();
        e.sample("nodediag_netns_namespaces", &[("state", state)], n as f64);
    }
    e.single(
        "nodediag_netns_stale_pins",
        Kind::Gauge,
        "Files left in a netns directory whose namespace is gone (no nsfs mount).",
        s.stale_pins.len() as f64,
    );
    e.family(
        "nodediag_netns_veths",
        Kind::Gauge,
        "Host-side veths by where their peer is: host, live, empty (pinned namespace with no process), unknown (rtnetlink IFLA_LINK_NETNSID).",
    );
    for state in [
        PeerState::Host,
        PeerState::Live,
        PeerState::Empty,
        PeerState::Unknown,
    ] {
        let n = s.veths.iter().filter(|v| v.peer_state == state).count();
        e.sample(
            "nodediag_netns_veths",
            &[("peer_state", state.as_str())],
            n as f64,
        );
    }
    e.family(
        "nodediag_netns_veth_info",
        Kind::Gauge,
        "One series per host-side veth, naming the pod its peer belongs to (empty when none) (rtnetlink, /proc/<pid>/cgroup, kubelet log dirs).",
    );
    for v in &s.veths {
        let pod = v.pod.as_ref();
        e.sample(
            "nodediag_netns_veth_info",
            &[
                ("interface", &v.name),
                ("peer_state", v.peer_state.as_str()),
                ("master", v.master.as_deref().unwrap_or("")),
                (
                    "namespace",
                    pod.and_then(|p| p.namespace.as_deref()).unwrap_or(""),
                ),
                ("pod", pod.and_then(|p| p.pod.as_deref()).unwrap_or("")),
                ("pod_uid", pod.map(|p| p.pod_uid.as_str()).unwrap_or("")),
            ],
            1.0,
        );
    }
    e.family(
        "nodediag_netns_veth_mtu_bytes",
        Kind::Gauge,
        "MTU of each host-side veth (rtnetlink IFLA_MTU).",
    );
    for v in &s.veths {
        if let Some(m) = v.mtu {
            e.sample(
                "nodediag_netns_veth_mtu_bytes",
                &[("interface", &v.name)],
                f64::from(m),
            );
        }
    }
    if !s.ipam.is_empty() {
        e.family(
            "nodediag_cni_ipam_allocated_addresses",
            Kind::Gauge,
            "Addresses reserved by host-local IPAM (files in /var/lib/cni/networks/<network>/).",
        );
        for n in &s.ipam {
            e.sample(
                "nodediag_cni_ipam_allocated_addresses",
                &[("network", &n.name)],
                n.allocated as f64,
            );
        }
        e.family(
            "nodediag_cni_ipam_capacity_addresses",
            Kind::Gauge,
            "Addresses host-local IPAM can hand out in the network's tightest range set (CNI config in /etc/cni/net.d).",
        );
        for n in &s.ipam {
            if let Some(c) = n.capacity {
                e.sample(
                    "nodediag_cni_ipam_capacity_addresses",
                    &[("network", &n.name)],
                    c as f64,
                );
            }
        }
        e.family(
            "nodediag_cni_ipam_stale_reservations",
            Kind::Gauge,
            "host-local reservations whose container has no process on the node.",
        );
        for n in s.ipam.iter().filter(|n| n.stale_known) {
            e.sample(
                "nodediag_cni_ipam_stale_reservations",
                &[("network", &n.name)],
                n.stale.len() as f64,
            );
        }
    }
}
