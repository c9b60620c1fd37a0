//! Conntrack per-CPU statistics over ctnetlink (`IPCTNL_MSG_CT_GET_STATS_CPU`), the
//! source that still works on kernels built without `CONFIG_NF_CONNTRACK_PROCFS`.
//! Needs CAP_NET_ADMIN; reads the network namespace of the calling thread.

use super::conntrack::ConntrackStats;
use super::netlink::{self, NetlinkSocket, NETLINK_NETFILTER, NLM_F_DUMP};
use std::io;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET_STATS_CPU: u16 = 4;
const NFGENMSG_LEN: usize = 4;

/// `enum ctattr_stats_cpu` from `uapi/linux/netfilter/nfnetlink_conntrack.h`; values
/// are big-endian u32. Attributes 1, 3, 5, 6 and 7 are no longer filled by the kernel.
fn attribute_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        2 => "found",
        4 => "invalid",
        8 => "insert",
        9 => "insert_failed",
        10 => "drop",
        11 => "early_drop",
        12 => "error",
        13 => "search_restart",
        14 => "clash_resolve",
        15 => "chaintoolong",
        _ => return None,
    })
}

pub fn read_stats() -> io::Result<ConntrackStats> {
    let mut sock = NetlinkSocket::open(NETLINK_NETFILTER)?;
    // struct nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
    let request = [0u8; NFGENMSG_LEN];
    let replies = sock.request(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET_STATS_CPU,
        NLM_F_DUMP,
        &request,
    )?;
    let mut stats = ConntrackStats::default();
    for reply in &replies {
        add_cpu_message(&mut stats, &reply.payload);
    }
    if replies.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ctnetlink answered with no per-CPU statistics",
        ));
    }
    Ok(stats)
}

/// Adds one per-CPU reply (nfgenmsg header, then attributes) to the running sum.
pub fn add_cpu_message(stats: &mut ConntrackStats, payload: &[u8]) {
    let Some(attrs) = payload.get(NFGENMSG_LEN..) else {
        return;
    };
    for (kind, value) in netlink::attrs(attrs) {
        if let (Some(name), Some(v)) = (attribute_name(kind), netlink::u32_be(value)) {
            stats.add(name, u64::from(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::push_attr;

    fn cpu_message(cpu: u16, values: &[(u16, u32)]) -> Vec<u8> {
        let mut m = vec![0, 0];
        m.extend_from_slice(&cpu.to_be_bytes());
        for (k, v) in values {
            push_attr(&mut m, *k, &v.to_be_bytes());
        }
        m
    }

    #[test]
    fn per_cpu_replies_are_summed_big_endian() {
        let mut s = ConntrackStats::default();
        add_cpu_message(&mut s, &cpu_message(0, &[(2, 7), (9, 1), (10, 3), (11, 0)]));
        add_cpu_message(&mut s, &cpu_message(1, &[(2, 1), (9, 2), (10, 0), (11, 4)]));
        assert_eq!(s.found, Some(8));
        assert_eq!(s.insert_failed, Some(3));
        assert_eq!(s.drop, Some(3));
        assert_eq!(s.early_drop, Some(4));
        assert_eq!(s.chaintoolong, None, "an attribute the kernel did not send");
    }

    #[test]
    fn retired_attributes_are_ignored() {
        let mut s = ConntrackStats::default();
        add_cpu_message(&mut s, &cpu_message(0, &[(1, 99), (3, 99), (5, 99)]));
        assert_eq!(s, ConntrackStats::default());
    }
}
