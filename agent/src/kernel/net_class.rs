//! Interfaces as sysfs shows them under `/sys/class/net/<name>/`.

use super::{read_optional, read_optional_u64, ReadError};
use crate::host::HostRoot;
use serde::Serialize;
use std::path::Path;

const IFF_UP: u32 = 0x1;
const ARPHRD_LOOPBACK: u64 = 772;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplex {
    Full,
    Half,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NicCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
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

pub fn read(root: &HostRoot, name: &str) -> SysInterface {
    let dir = root.sys(&["class", "net", name]);
    let attr = |a: &str| read_optional(&dir.join(a));
    let num = |a: &str| read_optional_u64(&dir.join(a));
    let stat = |a: &str| read_optional_u64(&dir.join("statistics").join(a)).unwrap_or(0);
    let devtype = attr("uevent").and_then(|u| parse_uevent_devtype(&u));
    SysInterface {
        name: name.to_string(),
        ifindex: num("ifindex"),
        iflink: num("iflink"),
        physical: dir.join("device").exists(),
        devtype,
        driver: link_name(&dir.join("device").join("driver")),
        admin_up: attr("flags")
            .and_then(|f| parse_flags(&f))
            .is_some_and(|f| f & IFF_UP != 0),
        operstate: attr("operstate").unwrap_or_else(|| "unknown".into()),
        carrier: num("carrier").map(|c| c == 1),
        speed_mbps: attr("speed").and_then(|s| parse_speed(&s)),
        duplex: attr("duplex").and_then(|d| parse_duplex(&d)),
        mtu: num("mtu"),
        loopback: num("type") == Some(ARPHRD_LOOPBACK),
        bridge: dir.join("bridge").is_dir(),
        tun: dir.join("tun_flags").exists(),
        counters: NicCounters {
            rx_packets: stat("rx_packets"),
            tx_packets: stat("tx_packets"),
            rx_errors: stat("rx_errors"),
            tx_errors: stat("tx_errors"),
            rx_dropped: stat("rx_dropped"),
            tx_dropped: stat("tx_dropped"),
        },
    }
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

pub fn read_physical(root: &HostRoot, name: &str) -> PhysicalAttrs {
    let dir = root.sys(&["class", "net", name]);
    PhysicalAttrs {
        speed_mbps: read_optional(&dir.join("speed")).and_then(|s| parse_speed(&s)),
        duplex: read_optional(&dir.join("duplex")).and_then(|d| parse_duplex(&d)),
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

fn parse_uevent_devtype(uevent: &str) -> Option<String> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVTYPE="))
        .map(|s| s.trim().to_string())
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
            assert_eq!(read(&root, "lo").admin_up, up, "{flags:?}");
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
}
