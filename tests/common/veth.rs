//! "Pods" for real-kernel tests: each its own network namespace, joined to a "node"
//! namespace by a veth pair with a /30 of TEST-NET-1 (192.0.2.0/24) and a /126 of
//! the IPv6 documentation prefix, so its traffic reaches the node through the
//! node's prerouting as a real pod's does. Removed with its namespace.

use super::conntrack::Netns;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub struct Pod {
    pub ns: Netns,
    /// The pod's addresses.
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// The node side of the veth: where the pod sends.
    pub gateway_v4: Ipv4Addr,
    pub gateway_v6: Ipv6Addr,
}

impl Pod {
    /// Pod number `index` (0..63) of `node`; None (skipped) when not root.
    pub fn attach(node: &Netns, tag: &str, index: u8) -> Option<Pod> {
        assert!(index < 64, "a /30 each in 192.0.2.0/24");
        let ns = Netns::new(tag)?;
        let base = 4 * index;
        let gateway_v4 = Ipv4Addr::new(192, 0, 2, base + 1);
        let v4 = Ipv4Addr::new(192, 0, 2, base + 2);
        let gateway_v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, index as u16, 1);
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, index as u16, 2);
        // Names are per namespace: the node side is only seen inside the node's.
        let host_if = format!("vpod{index}");
        super::sh(
            "ip",
            &[
                "-n", &node.0, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.0,
            ],
        );
        let addr = |netns: &str, ifname: &str, a: String| {
            super::sh("ip", &["-n", netns, "addr", "add", &a, "dev", ifname]);
        };
        // nodad: usable at once, not after duplicate address detection.
        let addr6 = |netns: &str, ifname: &str, a: String| {
            super::sh(
                "ip",
                &["-n", netns, "addr", "add", &a, "dev", ifname, "nodad"],
            );
        };
        addr(&node.0, &host_if, format!("{gateway_v4}/30"));
        addr6(&node.0, &host_if, format!("{gateway_v6}/126"));
        addr(&ns.0, "eth0", format!("{v4}/30"));
        addr6(&ns.0, "eth0", format!("{v6}/126"));
        super::sh("ip", &["-n", &node.0, "link", "set", &host_if, "up"]);
        super::sh("ip", &["-n", &ns.0, "link", "set", "eth0", "up"]);
        Some(Pod {
            ns,
            v4,
            v6,
            gateway_v4,
            gateway_v6,
        })
    }

    pub fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}
