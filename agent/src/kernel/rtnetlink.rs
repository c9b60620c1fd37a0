//! Links as rtnetlink reports them (`RTM_GETLINK` dump): the link kind (veth, vxlan,
//! bridge, ...), which sysfs does not give for every type, and a veth's peer.

use super::netlink::{self, NetlinkSocket, NETLINK_ROUTE, NLM_F_DUMP};
use std::io;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    /// The peer ifindex of a veth (IFLA_LINK), in the namespace `link_netnsid` names.
    pub link: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub master: Option<u32>,
}

/// Dumps every link of the calling thread's network namespace.
pub fn dump_links() -> io::Result<Vec<Link>> {
    let mut sock = NetlinkSocket::open(NETLINK_ROUTE)?;
    let request = [0u8; IFINFOMSG_LEN];
    let replies = sock.request(RTM_GETLINK, NLM_F_DUMP, &request)?;
    Ok(replies
        .iter()
        .filter(|m| m.kind == RTM_NEWLINK)
        .filter_map(|m| parse_link(&m.payload))
        .collect())
}

pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut link = Link {
        index,
        ..Link::default()
    };
    for (kind, value) in netlink::attrs(payload.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_IFNAME => link.name = netlink::string(value),
            IFLA_MTU => link.mtu = netlink::u32_ne(value),
            IFLA_LINK => link.link = netlink::u32_ne(value),
            IFLA_MASTER => link.master = netlink::u32_ne(value),
            IFLA_LINK_NETNSID => link.link_netnsid = netlink::u32_ne(value).map(|v| v as i32),
            IFLA_LINKINFO => {
                link.kind = netlink::attrs(value)
                    .find(|(k, _)| *k == IFLA_INFO_KIND)
                    .map(|(_, v)| netlink::string(v));
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
        assert_eq!(link.name, "veth1a2b");
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(link.mtu, Some(1450));
        assert_eq!(link.link, Some(2));
        assert_eq!(link.link_netnsid, Some(3));
        assert_eq!(link.master, None);
    }
}
