//! The catalog of findings: stable ids, the collector whose samples they come from,
//! and the remedy each names. The README's "Findings" section documents each id.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FindingDef {
    pub id: &'static str,
    /// The collector whose samples the rule reads; `check` says "could not tell" when
    /// that collector could not sample.
    pub collector: &'static str,
    pub remedy: &'static str,
}

const fn def(id: &'static str, collector: &'static str, remedy: &'static str) -> FindingDef {
    FindingDef {
        id,
        collector,
        remedy,
    }
}

pub const CATALOG: &[FindingDef] = &[
    def("conntrack_table_full", "conntrack",
        "Raise net.netfilter.nf_conntrack_max (and the hashsize module parameter); find the pods opening the flows (conntrack -L | sort by source)."),
    def("conntrack_table_high", "conntrack",
        "Raise net.netfilter.nf_conntrack_max before the table fills and drops packets; find the pods opening the flows."),
    def("conntrack_drops", "conntrack",
        "The table is full now and packets (DNS first) are being dropped: raise net.netfilter.nf_conntrack_max, shorten timeouts, find the flow source."),
    def("conntrack_insert_failed", "conntrack",
        "The UDP conntrack insert race behind 5 s DNS timeouts: run NodeLocal DNSCache, use --random-fully SNAT, or a kernel with the clash-resolution fix."),
    def("netns_leaked", "netns",
        "CNI DEL failed and the pod is gone: check the runtime has no sandbox for it, then unmount and delete the pin (ip netns delete NAME)."),
    def("veth_orphaned", "netns",
        "Delete the link (ip link delete NAME) after checking no pod owns it (/api/v1/veths?interface=NAME); look at the CNI plugin logs."),
    def("cni_ipam_exhausted", "netns",
        "After draining the node, remove stale host-local reservations (rm /var/lib/cni/networks/NET/IP for addresses whose container no longer runs); widen the node's pod CIDR."),
    def("mtu_mismatch", "netns",
        "Set the CNI MTU to the uplink MTU minus the tunnel overhead."),
    def("netdev_unregister_stuck", "kmsg",
        "A kernel refcount leak on a network device: new network namespaces can hang; drain and reboot, upgrade the kernel."),
    def("fsync_slow", "disk",
        "Move etcd / the kubelet directory to a dedicated SSD; look for a noisy neighbour on the device (iostat -x, the device figures in the evidence) or I/O throttling when the device itself is fast; a stall means the disk or NFS server stopped answering: check dmesg for I/O errors."),
    def("disk_space_low", "disk",
        "Free space before the kubelet evicts pods: image garbage collection (crictl rmi --prune), container log cleanup (du -sh /var/log/pods/*), leaked IPAM and netns files."),
    def("inodes_low", "disk",
        "Free inodes: remove small files (container logs, leaked IPAM reservations, unused images)."),
    def("filesystem_readonly", "disk",
        "The filesystem went read-only (usually after I/O errors): cordon, drain, fsck and check the disk."),
    def("cpu_throttled", "cgroup",
        "Raise or remove the CPU limit of the named container, or reduce its CPU use."),
    def("cpu_throttled_kernel_bug", "cgroup",
        "Throttled while far under quota: upgrade to a kernel with the CFS bandwidth fix (5.4+, 4.19.84+, 4.14.154+)."),
    def("cpu_pressure", "pressure",
        "The node is CPU-starved: compare pod CPU requests with allocatable and move load."),
    def("nic_link_down", "nic",
        "Check the cable, the switch port and the driver (ethtool NAME, dmesg)."),
    def("nic_speed_degraded", "nic",
        "Autonegotiation fell back to a lower speed: reseat or replace the cable, check the switch port."),
    def("nic_half_duplex", "nic",
        "Fix autonegotiation on both ends (ethtool -s NAME autoneg on); half duplex causes collisions."),
    def("nic_errors", "nic",
        "Look at ring buffer sizes (ethtool -g), driver and firmware, and the hardware (ethtool -S NAME)."),
    def("memory_pressure", "pressure",
        "Compare memory requests with allocatable; set kube-reserved and system-reserved; find the largest consumers."),
    def("oom_kills", "pressure",
        "Raise the memory limit of the killed container or fix its memory use; a node-wide kill (constraint CONSTRAINT_NONE) means the node is overcommitted: compare memory requests with allocatable, set kube-reserved."),
    def("pid_exhaustion", "pressure",
        "Set pod PID limits (podPidsLimit); raise kernel.pid_max; find the process forking."),
    def("fd_exhaustion", "pressure",
        "Find the process leaking file descriptors (ls /proc/*/fd | wc -l); raise fs.file-max."),
    def("inotify_watches_exhausted", "pressure",
        "Raise fs.inotify.max_user_instances (and max_user_watches)."),
    def("neighbor_table_overflow", "pressure",
        "Raise net.ipv4.neigh.default.gc_thresh1/2/3 to fit the number of pods and peers."),
    def("forwarding_disabled", "pressure",
        "Enable net.ipv4.ip_forward; modprobe br_netfilter and set net.bridge.bridge-nf-call-iptables=1."),
];

pub fn find(id: &str) -> Option<&'static FindingDef> {
    CATALOG.iter().find(|d| d.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_snake_case() {
        let mut ids: Vec<_> = CATALOG.iter().map(|d| d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOG.len());
        assert!(ids
            .iter()
            .all(|id| id.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
