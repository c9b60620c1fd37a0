//! Announcements of link and address changes (rtnetlink multicast groups), so that a
//! reader keeps what it read and reads again only what changed. Subscribed with
//! NETLINK_LISTEN_ALL_NSID, the host's socket also hears every namespace the host has
//! given an id, and the host's own announcements of ids it takes back
//! (RTM_DELNSID: that namespace is gone, and its id may go to another).

use super::netlink::NetlinkSocket;
use super::rtnetlink;
use std::collections::HashSet;
use std::io;

const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_NSID: u32 = 28;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_DELNSID: u16 = 89;

/// Room for bursts (a node starting many pods at once): past it the kernel drops
/// announcements and everything is read again.
const RECEIVE_BUFFER: usize = 4 << 20;

pub struct LinkEvents {
    sock: NetlinkSocket,
    other_namespaces: bool,
}

/// What changed since the last [`LinkEvents::changes`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The kernel dropped announcements: anything may have changed.
    pub lost: bool,
    pub host_links: bool,
    pub host_addrs: bool,
    /// Namespaces, by the host's id for them, whose links or addresses changed.
    pub namespaces: HashSet<i32>,
    /// Ids the host took back: their namespaces are gone.
    pub forgotten: HashSet<i32>,
}

impl LinkEvents {
    /// Subscribes `sock`, a rtnetlink socket in the host's namespace that makes no
    /// requests (replies would be mistaken for announcements), to link and address
    /// changes; with `other_namespaces`, to those of every namespace the host has
    /// an id for too, when allowed (CAP_NET_BROADCAST): [`Self::hears_other_namespaces`]
    /// says whether it was.
    pub fn subscribe(sock: NetlinkSocket, other_namespaces: bool) -> io::Result<Self> {
        let groups = [
            RTNLGRP_LINK,
            RTNLGRP_IPV4_IFADDR,
            RTNLGRP_IPV6_IFADDR,
            RTNLGRP_NSID,
        ]
        .iter()
        .fold(0, |mask, g| mask | 1 << (g - 1));
        sock.subscribe(groups)?;
        // A smaller buffer only means more rereads after a burst.
        let _ = sock.grow_receive_buffer(RECEIVE_BUFFER);
        let other_namespaces = other_namespaces && sock.listen_all_nsid().is_ok();
        Ok(Self {
            sock,
            other_namespaces,
        })
    }

    /// Whether changes inside other namespaces are announced here. When not, only
    /// the host's are, and a reader must read other namespaces every time.
    pub fn hears_other_namespaces(&self) -> bool {
        self.other_namespaces
    }

    /// What was announced since the last call. `own_id` gives the id the host's
    /// namespace has in its own table, if any (reading a pod's links by id makes the
    /// kernel give the host one, for the pod's veth peer): the kernel tags the host's
    /// own announcements with it once it exists. It is asked after the queue is
    /// read, so a tag given meanwhile is known.
    pub fn changes(&mut self, own_id: impl FnOnce() -> Option<i32>) -> io::Result<Changes> {
        let mut heard: Heard = Vec::new();
        let lost = self.sock.drain_announcements(|nsid, kind, payload| {
            let forgotten = (kind == RTM_DELNSID)
                .then(|| rtnetlink::parse_nsid(payload))
                .flatten();
            heard.push((nsid, kind, forgotten));
        })?;
        let own = if heard.iter().any(|(nsid, _, _)| nsid.is_some()) {
            own_id()
        } else {
            None
        };
        Ok(classify(lost, heard, own))
    }
}

/// Announcements heard: (the namespace's id, None for the host's own; the message
/// type; the id an RTM_DELNSID takes back).
type Heard = Vec<(Option<i32>, u16, Option<i32>)>;

fn classify(lost: bool, heard: Heard, own: Option<i32>) -> Changes {
    let mut c = Changes {
        lost,
        ..Changes::default()
    };
    for (nsid, kind, forgotten) in heard {
        let from = nsid.filter(|id| Some(*id) != own);
        match (kind, from) {
            (RTM_NEWLINK | RTM_DELLINK, None) => c.host_links = true,
            (RTM_NEWADDR | RTM_DELADDR, None) => c.host_addrs = true,
            (RTM_NEWLINK | RTM_DELLINK | RTM_NEWADDR | RTM_DELADDR, Some(id)) => {
                c.namespaces.insert(id);
            }
            (RTM_DELNSID, None) => c.forgotten.extend(forgotten),
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_tagged_with_the_hosts_own_id_are_the_hosts() {
        let heard = vec![
            (Some(7), RTM_NEWADDR, None),
            (Some(3), RTM_NEWLINK, None),
            (Some(7), RTM_DELNSID, Some(4)),
            (Some(5), RTM_DELNSID, Some(9)),
        ];
        let c = classify(false, heard.clone(), Some(7));
        assert!(c.host_addrs && !c.host_links);
        assert_eq!(c.namespaces, HashSet::from([3]));
        assert_eq!(
            c.forgotten,
            HashSet::from([4]),
            "only the host's own table's ids matter"
        );
        let c = classify(false, heard, None);
        assert_eq!(c.namespaces, HashSet::from([3, 7]));
        assert!(c.forgotten.is_empty() && !c.host_addrs);
    }

    #[test]
    fn untagged_announcements_are_the_hosts() {
        let heard = vec![(None, RTM_DELLINK, None), (None, RTM_DELNSID, Some(2))];
        let c = classify(true, heard, None);
        assert!(c.lost && c.host_links && !c.host_addrs);
        assert_eq!(c.forgotten, HashSet::from([2]));
    }
}
