//! The NIC collector's two ways of reading interfaces against this machine's kernel:
//! one rtnetlink dump (with sysfs only for physical NICs) must say what reading every
//! interface's sysfs directory says, for a veth pair made here (one end up, one
//! down), loopback and the physical NICs.

mod common;

use common::conntrack::is_root;
use common::{sh, skip};
use nodediag::collect::nic::{Nic, NicClass, NicCollector};
use nodediag::collect::Collector;
use nodediag::host::HostRoot;

/// A veth pair in this (the host's) namespace, removed on drop.
struct VethPair(String, String);

impl VethPair {
    fn new() -> Option<VethPair> {
        if !is_root() {
            skip("needs root to create a veth pair");
            return None;
        }
        let pid = std::process::id();
        let pair = VethPair(format!("ndnic{pid}a"), format!("ndnic{pid}b"));
        sh(
            "ip",
            &[
                "link", "add", &pair.0, "type", "veth", "peer", "name", &pair.1,
            ],
        );
        sh("ip", &["link", "set", &pair.0, "mtu", "1400", "up"]);
        Some(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

fn by_name<'a>(nics: &'a [Nic], name: &str) -> &'a Nic {
    nics.iter().find(|n| *n.name == *name).unwrap_or_else(|| {
        panic!(
            "{name} not in {:?}",
            nics.iter().map(|n| &n.name).collect::<Vec<_>>()
        )
    })
}

#[test]
fn one_link_dump_says_what_sysfs_says() {
    let Some(pair) = VethPair::new() else {
        return;
    };
    let root = HostRoot::default();
    let dumped = NicCollector::new(root.clone(), true).collect().unwrap();
    let read = NicCollector::new(root, false).collect().unwrap();
    assert!(
        dumped
            .unavailable
            .iter()
            .all(|u| u.what != "rtnetlink link kinds"),
        "{:?}",
        dumped.unavailable
    );

    let up = by_name(&dumped.interfaces, &pair.0);
    let down = by_name(&dumped.interfaces, &pair.1);
    assert_eq!(up.class, NicClass::Virtual);
    assert_eq!(
        up.kind.as_deref(),
        Some("veth"),
        "the kind sysfs cannot give"
    );
    assert_eq!(up.mtu, Some(1400));
    assert!(up.admin_up);
    assert_eq!(up.carrier, Some(false), "up, its peer down");
    assert_eq!(&*up.operstate, "lowerlayerdown");
    assert!(!down.admin_up);
    assert_eq!(
        down.carrier, None,
        "sysfs does not say for a link that is down"
    );
    assert_eq!(&*down.operstate, "down");

    let mut compared = vec![pair.0.clone(), pair.1.clone(), "lo".to_string()];
    compared.extend(
        read.interfaces
            .iter()
            .filter(|n| n.class == NicClass::Physical)
            .map(|n| n.name.to_string()),
    );
    for name in &compared {
        let (d, r) = (
            by_name(&dumped.interfaces, name),
            by_name(&read.interfaces, name),
        );
        // Only veths differ: sysfs has no kind for them.
        let kind = if d.kind.as_deref() == Some("veth") {
            None
        } else {
            d.kind.clone()
        };
        let same = Nic {
            kind,
            // Loopback and the NICs carry other tests' traffic between the two reads.
            counters: if name.starts_with("ndnic") {
                d.counters
            } else {
                r.counters
            },
            // Link modes come over ethtool netlink, which --no-netlink leaves off.
            link_modes: None,
            link_modes_error: None,
            ..d.clone()
        };
        assert_eq!(&same, r, "{name}: netlink and sysfs disagree");
        if d.class == NicClass::Physical {
            assert!(
                d.link_modes.is_some() || d.link_modes_error.is_some(),
                "{name}: ethtool was not asked"
            );
        }
    }
    // The whole list is the same set, less interfaces others made or removed meanwhile.
    assert!(dumped.interfaces.windows(2).all(|w| w[0].name < w[1].name));
}
