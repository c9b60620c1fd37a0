//! Interfaces as sysfs shows them under `/sys/class/net/<name>/`.

use super::{read_capped, ReadError, MAX_VALUE_BYTES};
use crate::host::HostRoot;
use serde::Serialize;
use std::path::Path;

const IFF_UP: u32 = 0x1;
pub const ARPHRD_LOOPBACK: u16 = 772;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplex {
    Full,
    Half,
}

/// An interface's counters; each is absent when the kernel gave none or its file did
/// not read, never a made-up 0 (a counter that falls to 0 and back reads as a reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NicCounters {
    pub rx_packets: Option<u64>,
    pub tx_packets: Option<u64>,
    pub rx_errors: Option<u64>,
    pub tx_errors: Option<u64>,
    pub rx_dropped: Option<u64>,
    pub tx_dropped: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysInterface {
    pub name: String,
    pub ifindex: Option<u64>,
    /// For a veth this is the peer's ifindex (in the peer's namespace).
    pub iflink: Option<u64>,
    /// A physical NIC has a `device` link to its bus device.
    pub physical: bool,
    /// `DEVTYPE` from uevent (vlan, bridge, vxlan, wlan, ...), when the kernel sets one.
    pub devtype: Option<String>,
    pub driver: Option<String>,
    pub admin_up: bool,
    pub operstate: String,
    /// None when the kernel refuses to say (the interface is administratively down).
    pub carrier: Option<bool>,
    /// Negotiated speed in Mb/s; None when unknown (-1, EINVAL, or a virtual link).
    pub speed_mbps: Option<u64>,
    pub duplex: Option<Duplex>,
    pub mtu: Option<u64>,
    pub loopback: bool,
    pub bridge: bool,
    pub tun: bool,
    pub counters: NicCounters,
}

pub fn list(root: &HostRoot) -> Result<Vec<String>, ReadError> {
    let dir = root.sys(&["class", "net"]);
    let entries = std::fs::read_dir(&dir).map_err(|source| ReadError {
        path: dir.clone(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "bonding_masters")
        .collect();
    names.sort();
    Ok(names)
}

/// The interface as sysfs shows it; attribute files that exist but do not read or
/// parse are left out of it and pushed to `unreadable`.
pub fn read(root: &HostRoot, name: &str, unreadable: &mut Vec<ReadError>) -> SysInterface {
    let dir = root.sys(&["class", "net", name]);
    let mut attrs = Attrs { unreadable };
    let devtype = attrs.parsed(&dir.join("uevent"), parse_uevent).flatten();
    let flags = attrs.parsed(&dir.join("flags"), parse_flags);
    let mut stat = |a: &str| attrs.number(&dir.join("statistics").join(a));
    let counters = NicCounters {
        rx_packets: stat("rx_packets"),
        tx_packets: stat("tx_packets"),
        rx_errors: stat("rx_errors"),
        tx_errors: stat("tx_errors"),
        rx_dropped: stat("rx_dropped"),
        tx_dropped: stat("tx_dropped"),
    };
    SysInterface {
        name: name.to_string(),
        ifindex: attrs.number(&dir.join("ifindex")),
        iflink: attrs.number(&dir.join("iflink")),
        physical: dir.join("device").exists(),
        devtype,
        driver: link_name(&dir.join("device").join("driver")),
        admin_up: flags.is_some_and(|f| f & IFF_UP != 0),
        operstate: attrs
            .parsed(&dir.join("operstate"), parse_operstate)
            .unwrap_or("unknown")
            .to_string(),
        carrier: attrs.number(&dir.join("carrier")).map(|c| c == 1),
        speed_mbps: attrs.speed(&dir.join("speed")),
        duplex: attrs.duplex(&dir.join("duplex")),
        mtu: attrs.number(&dir.join("mtu")),
        loopback: attrs.number(&dir.join("type")) == Some(u64::from(ARPHRD_LOOPBACK)),
        bridge: dir.join("bridge").is_dir(),
        tun: dir.join("tun_flags").exists(),
        counters,
    }
}

/// Reads sysfs attribute files, keeping the ones that exist but do not read or parse.
struct Attrs<'a> {
    unreadable: &'a mut Vec<ReadError>,
}

impl Attrs<'_> {
    /// The file's trimmed text. Absent when the file is missing or the kernel declines
    /// to answer: EINVAL for the speed, duplex or carrier of a link that is down,
    /// EOPNOTSUPP where a driver has no such figure.
    fn text(&mut self, path: &Path) -> Option<String> {
        match read_capped(path, MAX_VALUE_BYTES) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.is_not_found() || declined(&e) => None,
            Err(e) => {
                self.unreadable.push(e);
                None
            }
        }
    }

    /// The file parsed by `parse`; text it cannot parse is unreadable.
    fn parsed<T>(&mut self, path: &Path, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        let text = self.text(path)?;
        let v = parse(&text);
        if v.is_none() {
            self.unreadable
                .push(ReadError::invalid(path, format!("unexpected {text:?}")));
        }
        v
    }

    fn number(&mut self, path: &Path) -> Option<u64> {
        self.parsed(path, |s| s.parse().ok())
    }

    /// Negotiated speed: a number, absent when the kernel says it is unknown.
    fn speed(&mut self, path: &Path) -> Option<u64> {
        // The kernel prints SPEED_UNKNOWN as -1; a lower figure is not one it prints.
        let v: i64 = self.parsed(path, |s| s.parse().ok().filter(|v| *v >= -1))?;
        parse_speed(&v.to_string())
    }

    /// `full`, `half`, or `unknown` (absent).
    fn duplex(&mut self, path: &Path) -> Option<Duplex> {
        self.parsed(path, |s| match s {
            "unknown" => Some(None),
            d => parse_duplex(d).map(Some),
        })
        .flatten()
    }
}

/// The kernel's way of saying it has no answer for this interface now.
fn declined(e: &ReadError) -> bool {
    matches!(
        e.source.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENODEV)
    )
}

/// Whether the interface sits on a bus device (its `device` link): a physical NIC.
pub fn has_device(root: &HostRoot, name: &str) -> bool {
    root.sys(&["class", "net", name, "device"]).exists()
}

/// What only a physical NIC's sysfs directory says: negotiated speed and duplex, and
/// its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalAttrs {
    pub speed_mbps: Option<u64>,
    pub duplex: Option<Duplex>,
    pub driver: Option<String>,
}

/// Files that exist but do not read or parse are pushed to `unreadable`.
pub fn read_physical(
    root: &HostRoot,
    name: &str,
    unreadable: &mut Vec<ReadError>,
) -> PhysicalAttrs {
    let dir = root.sys(&["class", "net", name]);
    let mut attrs = Attrs { unreadable };
    PhysicalAttrs {
        speed_mbps: attrs.speed(&dir.join("speed")),
        duplex: attrs.duplex(&dir.join("duplex")),
        driver: link_name(&dir.join("device").join("driver")),
    }
}

/// `flags`, which the kernel prints with `%#x`: `0x1003`. A bare number reads as
/// decimal, as C reads an integer literal.
pub fn parse_flags(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The kernel prints SPEED_UNKNOWN as -1; some drivers print 65535 or u32::MAX.
pub fn parse_speed(s: &str) -> Option<u64> {
    let v: i64 = s.trim().parse().ok()?;
    (v > 0 && v != 65535 && v != i64::from(u32::MAX)).then_some(v as u64)
}

pub fn parse_duplex(s: &str) -> Option<Duplex> {
    match s.trim() {
        "full" => Some(Duplex::Full),
        "half" => Some(Duplex::Half),
        _ => None,
    }
}

/// The `DEVTYPE` of a net device's `uevent` (none for a plain Ethernet NIC); `None`
/// when the text is not a net device's uevent, which always names its `INTERFACE`.
fn parse_uevent(uevent: &str) -> Option<Option<String>> {
    let net_device = uevent.lines().any(|l| l.starts_with("INTERFACE="));
    net_device.then(|| parse_uevent_devtype(uevent))
}

fn parse_uevent_devtype(uevent: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .map(|s| s.trim().to_string())
}

/// One of the RFC 2863 states the kernel prints (`IF_OPER_*`).
fn parse_operstate(s: &str) -> Option<&'static str> {
    [
        "unknown",
        "notpresent",
        "down",
        "lowerlayerdown",
        "testing",
        "dormant",
        "up",
    ]
    .into_iter()
    .find(|state| *state == s)
}

fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_speeds_are_absent() {
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("65535"), None);
        assert_eq!(parse_speed("4294967295"), None);
        assert_eq!(parse_speed("0"), None);
        assert_eq!(parse_speed("garbage"), None);
        assert_eq!(parse_speed("10000\n"), Some(10000));
    }

    #[test]
    fn flags_are_hex() {
        assert_eq!(parse_flags("0x1003\n"), Some(0x1003));
        assert_eq!(parse_flags("0x9"), Some(9));
        assert_eq!(parse_flags("zz"), None);
        assert_eq!(parse_flags("0x1002"), Some(0x1002));
        assert_eq!(parse_flags("4099"), Some(4099));
        assert_eq!(parse_flags("0xzz"), None);
        assert_eq!(parse_flags(""), None);
        assert_eq!(parse_flags("0x"), None);
        assert_eq!(parse_flags("0x100000000"), None);
    }

    #[test]
    fn admin_state_comes_from_the_flags_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            sys: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let lo = dir.path().join("class/net/lo");
        std::fs::create_dir_all(&lo).unwrap();
        for (flags, up) in [("0x9\n", true), ("0x1002\n", false), ("garbage\n", false)] {
            std::fs::write(lo.join("flags"), flags).unwrap();
            assert_eq!(read(&root, "lo", &mut Vec::new()).admin_up, up, "{flags:?}");
        }
    }

    #[test]
    fn duplex_and_devtype() {
        assert_eq!(parse_duplex("half\n"), Some(Duplex::Half));
        assert_eq!(parse_duplex("unknown"), None);
        assert_eq!(
            parse_uevent_devtype("DEVTYPE=vxlan\nINTERFACE=vxlan0\nIFINDEX=4\n").as_deref(),
            Some("vxlan")
        );
        assert_eq!(parse_uevent_devtype("INTERFACE=eth0\n"), None);
    }

    #[test]
    fn attributes_that_do_not_read_are_absent_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            sys: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let eth = dir.path().join("class/net/eth0");
        std::fs::create_dir_all(eth.join("statistics/rx_errors")).unwrap();
        for (file, text) in [
            ("statistics/rx_packets", "12\n"),
            ("statistics/tx_errors", "garbage\n"),
            ("speed", "fast\n"),
            ("duplex", "sideways\n"),
            ("mtu", "1500\n"),
        ] {
            std::fs::write(eth.join(file), text).unwrap();
        }
        let mut unreadable = Vec::new();
        let i = read(&root, "eth0", &mut unreadable);
        assert_eq!(i.counters.rx_packets, Some(12));
        assert_eq!(i.counters.rx_errors, None, "a directory is not a counter");
        assert_eq!(i.counters.tx_errors, None, "garbage is not 0");
        assert_eq!(i.counters.tx_packets, None, "missing");
        assert_eq!((i.speed_mbps, i.duplex, i.mtu), (None, None, Some(1500)));
        let mut named: Vec<_> = unreadable
            .iter()
            .map(|e| e.path.strip_prefix(&eth).unwrap().display().to_string())
            .collect();
        named.sort();
        assert_eq!(
            named,
            [
                "duplex",
                "speed",
                "statistics/rx_errors",
                "statistics/tx_errors"
            ]
        );

        let mut unreadable = Vec::new();
        let p = read_physical(&root, "eth0", &mut unreadable);
        assert_eq!((p.speed_mbps, p.duplex), (None, None));
        assert_eq!(unreadable.len(), 2);
    }

    #[test]
    fn states_and_numbers_the_kernel_never_prints_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            sys: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let eth = dir.path().join("class/net/eth0");
        std::fs::create_dir_all(&eth).unwrap();
        for (file, text) in [
            ("operstate", "x!#@\n"),
            ("uevent", "not a uevent\n"),
            ("speed", "-5\n"),
        ] {
            std::fs::write(eth.join(file), text).unwrap();
        }
        let mut unreadable = Vec::new();
        let i = read(&root, "eth0", &mut unreadable);
        assert_eq!((i.operstate.as_str(), i.speed_mbps), ("unknown", None));
        assert_eq!(unreadable.len(), 3, "{unreadable:?}");

        for (file, text) in [
            ("operstate", "lowerlayerdown\n"),
            ("uevent", "DEVTYPE=vlan\nINTERFACE=eth0\nIFINDEX=3\n"),
            ("speed", "-1\n"),
        ] {
            std::fs::write(eth.join(file), text).unwrap();
        }
        let mut unreadable = Vec::new();
        let i = read(&root, "eth0", &mut unreadable);
        assert!(unreadable.is_empty(), "{unreadable:?}");
        assert_eq!(i.operstate, "lowerlayerdown");
        assert_eq!(i.devtype.as_deref(), Some("vlan"));
        assert_eq!(i.speed_mbps, None, "-1 is the kernel's unknown");
    }

    #[test]
    fn what_the_kernel_declines_or_calls_unknown_is_absent_not_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            sys: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        let eth = dir.path().join("class/net/eth0");
        std::fs::create_dir_all(&eth).unwrap();
        std::fs::write(eth.join("speed"), "-1\n").unwrap();
        std::fs::write(eth.join("duplex"), "unknown\n").unwrap();
        let mut unreadable = Vec::new();
        let p = read_physical(&root, "eth0", &mut unreadable);
        assert_eq!((p.speed_mbps, p.duplex), (None, None));
        assert!(unreadable.is_empty(), "{unreadable:?}");
    }
}
