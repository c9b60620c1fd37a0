//! Links as rtnetlink reports them (`RTM_GETLINK` dump): the link kind (veth, vxlan,
//! bridge, ...), which sysfs does not give for every type, and a veth's peer; the
//! addresses of a namespace (`RTM_GETADDR`) and the ids the calling namespace gives
//! its peers (`RTM_GETNSID`), which is how a veth's IFLA_LINK_NETNSID is resolved.

use super::netlink::{self, NetlinkSocket, NETLINK_ROUTE, NLM_F_DUMP};
use serde::Serialize;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::Arc;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWNSID: u16 = 88;
const RTM_NEWSTATS: u16 = 92;
const RTM_GETSTATS: u16 = 94;
const RTM_GETNSID: u16 = 90;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTGENMSG_LEN: usize = 4;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_STATS64: u16 = 23;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFLA_CARRIER: u16 = 33;
const IF_STATS_MSG_LEN: usize = 12;
const IFLA_STATS_LINK_64: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_PARENT_DEV_NAME: u16 = 56;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
const IFF_UP: u32 = 0x1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// Shared: the host's links are kept between rounds and handed out each round
    /// with fresh counters, a clone per link (a thousand at 500 pods).
    pub name: Arc<str>,
    pub kind: Option<Arc<str>>,
    pub mtu: Option<u32>,
    /// The peer ifindex of a veth (IFLA_LINK), in the namespace `link_netnsid` names.
    pub link: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub master: Option<u32>,
    /// IFF_UP: administratively up.
    pub admin_up: bool,
    /// RFC 2863 operational state (IFLA_OPERSTATE): up, down, lowerlayerdown, ...
    pub operstate: Option<Arc<str>>,
    /// IFLA_CARRIER, which the kernel sends whether or not the link is up (sysfs
    /// refuses to say for a link that is down).
    pub carrier: Option<bool>,
    /// The hardware type (`ifi_type`, ARPHRD_*): 772 is loopback.
    pub link_type: u16,
    /// The device the link sits on (IFLA_PARENT_DEV_NAME, Linux 5.16+: a PCI address,
    /// `virtio2`): the netlink view of sysfs's `device` link.
    pub parent_device: Option<Arc<str>>,
    pub stats: Option<LinkStats>,
}

/// The first counters of `struct rtnl_link_stats64`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// One address of an interface, as `ip addr` prints it (`10.244.1.5/24`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// Dumps every link of the calling thread's network namespace.
pub fn dump_links() -> io::Result<Vec<Link>> {
    let mut sock = NetlinkSocket::open(NETLINK_ROUTE)?;
    dump_links_on(&mut sock)
}

/// Dumps the links of the namespace `sock` was opened in.
pub fn dump_links_on(sock: &mut NetlinkSocket) -> io::Result<Vec<Link>> {
    dump(
        sock,
        RTM_GETLINK,
        RTM_NEWLINK,
        &[0u8; IFINFOMSG_LEN],
        parse_link,
    )
}

/// Dumps the IPv4 and IPv6 addresses of the namespace `sock` was opened in.
pub fn dump_addrs_on(sock: &mut NetlinkSocket) -> io::Result<Vec<Addr>> {
    dump(
        sock,
        RTM_GETADDR,
        RTM_NEWADDR,
        &[0u8; IFADDRMSG_LEN],
        parse_addr,
    )
}

/// Dumps the links of the namespace of `sock` without their counters
/// (RTEXT_FILTER_SKIP_STATS): the kernel then skips summing every CPU's counters of
/// each link and of its IPv6 statistics, most of what a link costs it.
pub fn dump_links_without_stats(sock: &mut NetlinkSocket) -> io::Result<Vec<Link>> {
    let mut request = vec![0u8; IFINFOMSG_LEN];
    netlink::push_attr(
        &mut request,
        IFLA_EXT_MASK,
        &RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
    );
    dump(sock, RTM_GETLINK, RTM_NEWLINK, &request, parse_link)
}

/// Every link's 64-bit counters and nothing else (`RTM_GETSTATS` with
/// IFLA_STATS_LINK_64, Linux 4.7+), by ifindex.
pub fn dump_link_stats(sock: &mut NetlinkSocket) -> io::Result<Vec<(u32, LinkStats)>> {
    let mut request = vec![0u8; IF_STATS_MSG_LEN];
    // filter_mask: the bit of IFLA_STATS_LINK_64.
    request[8..12].copy_from_slice(&(1u32 << (IFLA_STATS_LINK_64 - 1)).to_ne_bytes());
    dump(sock, RTM_GETSTATS, RTM_NEWSTATS, &request, parse_link_stats)
}

pub fn parse_link_stats(payload: &[u8]) -> Option<(u32, LinkStats)> {
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let stats = netlink::attrs(payload.get(IF_STATS_MSG_LEN..)?)
        .find(|(k, _)| *k == IFLA_STATS_LINK_64)
        .and_then(|(_, v)| parse_stats64(v))?;
    Some((index, stats))
}

/// One dump, each reply parsed as it arrives rather than copied first.
fn dump<T>(
    sock: &mut NetlinkSocket,
    request_kind: u16,
    reply_kind: u16,
    request: &[u8],
    parse: fn(&[u8]) -> Option<T>,
) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    // `each` never stops the dump, so its answer is always Continue.
    let _ = sock.request_each(request_kind, NLM_F_DUMP, request, |kind, payload| {
        if kind == reply_kind {
            out.extend(parse(payload));
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// The id the namespace of `sock` gives the namespace open at `ns_fd`; None when it
/// has given it none (no link points there).
pub fn nsid_of(sock: &mut NetlinkSocket, ns_fd: RawFd) -> io::Result<Option<i32>> {
    let mut request = vec![0u8; RTGENMSG_LEN];
    netlink::push_attr(&mut request, NETNSA_FD, &(ns_fd as u32).to_ne_bytes());
    let replies = sock.request(RTM_GETNSID, 0, &request)?;
    Ok(replies
        .iter()
        .filter(|m| m.kind == RTM_NEWNSID)
        .find_map(|m| parse_nsid(&m.payload))
        .filter(|id| *id >= 0))
}

pub fn parse_nsid(payload: &[u8]) -> Option<i32> {
    netlink::attrs(payload.get(RTGENMSG_LEN..)?)
        .find(|(k, _)| *k == NETNSA_NSID)
        .and_then(|(_, v)| netlink::u32_ne(v))
        .map(|v| v as i32)
}

pub fn parse_addr(payload: &[u8]) -> Option<Addr> {
    let family = *payload.first()?;
    let prefix_len = *payload.get(1)?;
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut local = None;
    let mut address = None;
    for (kind, value) in netlink::attrs(payload.get(IFADDRMSG_LEN..)?) {
        let ip = match (family as i32, value.len()) {
            (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?)),
            (libc::AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?)),
            _ => continue,
        };
        match kind {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    // On point-to-point links IFA_ADDRESS is the far end; IFA_LOCAL is ours.
    Some(Addr {
        index,
        address: local.or(address)?,
        prefix_len,
    })
}

fn operstate_name(v: u8) -> &'static str {
    match v {
        1 => "notpresent",
        2 => "down",
        3 => "lowerlayerdown",
        4 => "testing",
        5 => "dormant",
        6 => "up",
        _ => "unknown",
    }
}

fn parse_stats64(b: &[u8]) -> Option<LinkStats> {
    let at = |i: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(
            b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some(LinkStats {
        rx_packets: at(0)?,
        tx_packets: at(1)?,
        rx_bytes: at(2)?,
        tx_bytes: at(3)?,
        rx_errors: at(4)?,
        tx_errors: at(5)?,
        rx_dropped: at(6)?,
        tx_dropped: at(7)?,
    })
}

pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let link_type = u16::from_ne_bytes(payload.get(2..4)?.try_into().ok()?);
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let flags = u32::from_ne_bytes(payload.get(8..12)?.try_into().ok()?);
    let mut link = Link {
        index,
        link_type,
        admin_up: flags & IFF_UP != 0,
        ..Link::default()
    };
    for (kind, value) in netlink::attrs(payload.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_IFNAME => link.name = netlink::string(value).into(),
            IFLA_MTU => link.mtu = netlink::u32_ne(value),
            IFLA_LINK => link.link = netlink::u32_ne(value),
            IFLA_MASTER => link.master = netlink::u32_ne(value),
            IFLA_LINK_NETNSID => link.link_netnsid = netlink::u32_ne(value).map(|v| v as i32),
            IFLA_OPERSTATE => link.operstate = value.first().map(|v| operstate_name(*v).into()),
            IFLA_STATS64 => link.stats = parse_stats64(value),
            IFLA_CARRIER => link.carrier = value.first().map(|c| *c != 0),
            IFLA_PARENT_DEV_NAME => link.parent_device = Some(netlink::string(value).into()),
            IFLA_LINKINFO => {
                link.kind = netlink::attrs(value)
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, v)| netlink::string(v).into());
            }
            _ => {}
        }
    }
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::push_attr;

    #[test]
    fn a_veth_message_gives_kind_peer_and_netnsid() {
        let mut msg = vec![0u8; IFINFOMSG_LEN];
        msg[4..8].copy_from_slice(&7u32.to_ne_bytes());
        push_attr(&mut msg, IFLA_IFNAME, b"veth1a2b\0");
        push_attr(&mut msg, IFLA_MTU, &1450u32.to_ne_bytes());
        push_attr(&mut msg, IFLA_LINK, &2u32.to_ne_bytes());
        push_attr(&mut msg, IFLA_LINK_NETNSID, &3i32.to_ne_bytes());
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, b"veth\0");
        push_attr(&mut msg, IFLA_LINKINFO, &info);
        let link = parse_link(&msg).unwrap();
        assert_eq!(link.index, 7);
        assert_eq!(&*link.name, "veth1a2b");
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(link.mtu, Some(1450));
        assert_eq!(link.link, Some(2));
        assert_eq!(link.link_netnsid, Some(3));
        assert_eq!(link.master, None);
        assert!(!link.admin_up);
        assert_eq!(link.stats, None);
    }

    #[test]
    fn flags_operstate_and_counters_are_read() {
        let mut msg = vec![0u8; IFINFOMSG_LEN];
        msg[4..8].copy_from_slice(&9u32.to_ne_bytes());
        msg[8..12].copy_from_slice(&0x1043u32.to_ne_bytes());
        push_attr(&mut msg, IFLA_OPERSTATE, &[6]);
        let stats: Vec<u8> = (1..=24u64).flat_map(|v| v.to_ne_bytes()).collect();
        push_attr(&mut msg, IFLA_STATS64, &stats);
        let link = parse_link(&msg).unwrap();
        assert!(link.admin_up);
        assert_eq!(link.operstate.as_deref(), Some("up"));
        let s = link.stats.unwrap();
        assert_eq!((s.rx_packets, s.tx_bytes, s.tx_dropped), (1, 4, 8));
        // A short stats attribute (older or corrupt) is absent, not garbage.
        let mut short = vec![0u8; IFINFOMSG_LEN];
        push_attr(&mut short, IFLA_STATS64, &[0u8; 20]);
        assert_eq!(parse_link(&short).unwrap().stats, None);
        assert_eq!(parse_link(&[0u8; 6]), None, "truncated header");
    }

    #[test]
    fn addresses_prefer_the_local_address() {
        let mut msg = vec![libc::AF_INET as u8, 24, 0, 0];
        msg.extend_from_slice(&3u32.to_ne_bytes());
        push_attr(&mut msg, IFA_ADDRESS, &[10, 244, 1, 1]);
        push_attr(&mut msg, IFA_LOCAL, &[10, 244, 1, 5]);
        let a = parse_addr(&msg).unwrap();
        assert_eq!(a.index, 3);
        assert_eq!(a.address.to_string(), "10.244.1.5");
        assert_eq!(a.prefix_len, 24);
        let mut v6 = vec![libc::AF_INET6 as u8, 64, 0, 0];
        v6.extend_from_slice(&3u32.to_ne_bytes());
        let ip: std::net::Ipv6Addr = "fd00::5".parse().unwrap();
        push_attr(&mut v6, IFA_ADDRESS, &ip.octets());
        assert_eq!(parse_addr(&v6).unwrap().address.to_string(), "fd00::5");
        let mut bad = vec![libc::AF_INET as u8, 24, 0, 0];
        bad.extend_from_slice(&3u32.to_ne_bytes());
        push_attr(&mut bad, IFA_ADDRESS, &[10, 244]);
        assert_eq!(parse_addr(&bad), None, "an address of the wrong length");
    }

    #[test]
    fn nsid_replies_are_read_and_unassigned_is_negative() {
        let mut msg = vec![0u8; RTGENMSG_LEN];
        push_attr(&mut msg, NETNSA_NSID, &4i32.to_ne_bytes());
        assert_eq!(parse_nsid(&msg), Some(4));
        let mut none = vec![0u8; RTGENMSG_LEN];
        push_attr(&mut none, NETNSA_NSID, &(-1i32).to_ne_bytes());
        assert_eq!(parse_nsid(&none), Some(-1));
        assert_eq!(parse_nsid(&[0u8; 2]), None);
    }
}
