//! CNI network configurations (`/etc/cni/net.d/*.conf`, `*.conflist`, `*.json`) and
//! the host-local IPAM plugin's reservations (`/var/lib/cni/networks/<net>/<ip>`,
//! each file holding the container id that reserved the address).
//!
//! Capacity follows host-local's defaults: a range runs from the subnet's first host
//! (`.1`) to its last (`.254` in a /24: IPv4 leaves out the broadcast address), and
//! the gateway (default `.1`) is never handed out.

use super::{read_capped, read_dir, read_string, ReadError, MAX_VALUE_BYTES};
use crate::text::truncate;
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    pub subnet: String,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (to_u128(ip), to_u128(self.start), to_u128(self.end)) {
            (Some(v), Some(s), Some(e)) => same_family(ip, self.start) && s <= v && v <= e,
            _ => false,
        }
    }

    /// Addresses host-local can hand out from this range.
    pub fn capacity(&self) -> u128 {
        let (Some(s), Some(e)) = (to_u128(self.start), to_u128(self.end)) else {
            return 0;
        };
        if e < s {
            return 0;
        }
        let all = e - s + 1;
        let gw_inside = self.gateway.is_some_and(|g| self.contains(g));
        all - u128::from(gw_inside)
    }
}

/// A network whose IPAM is host-local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLocalNetwork {
    pub name: String,
    /// The main plugin (bridge, ptp, ...).
    pub plugin: String,
    /// Where the reservations live, as a host path.
    pub data_dir: String,
    /// One pool per address family: a pod gets one address from each.
    pub range_sets: Vec<Vec<IpRange>>,
}

/// What a configuration file says about IPAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkConfig {
    HostLocal(HostLocalNetwork),
    /// Another IPAM (calico-ipam, whereabouts, a delegating plugin such as flannel):
    /// its reservations are not host-local files nodediag can count.
    Other {
        name: String,
        plugin: String,
        ipam: Option<String>,
    },
}

/// The configuration files of a directory, in the order the runtime reads them.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut files: Vec<PathBuf> = read_dir(dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and parses one configuration file; a parse error is `InvalidData` saying why.
pub fn read_config(path: &Path) -> Result<NetworkConfig, ReadError> {
    parse_config(&read_string(path)?).map_err(|e| ReadError::invalid(path, e))
}

/// Parses a `.conf` (one plugin) or `.conflist` (a `plugins` chain) file.
pub fn parse_config(text: &str) -> Result<NetworkConfig, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or("no network \"name\"")?
        .to_string();
    let plugins: Vec<&Value> = match v.get("plugins") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(_) => return Err("\"plugins\" is not a list".into()),
        None => vec![&v],
    };
    let main = plugins.first().ok_or("\"plugins\" is empty")?;
    let plugin = main
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let with_ipam = plugins.iter().find(|p| p.get("ipam").is_some());
    let ipam = with_ipam.and_then(|p| p.get("ipam"));
    let ipam_type = ipam.and_then(|i| i.get("type")).and_then(Value::as_str);
    let Some(ipam) = ipam.filter(|_| ipam_type == Some("host-local")) else {
        return Ok(NetworkConfig::Other {
            name,
            plugin,
            ipam: ipam_type.map(str::to_string),
        });
    };
    let data_dir = ipam
        .get("dataDir")
        .and_then(Value::as_str)
        .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
        .unwrap_or_else(|| format!("{DEFAULT_DATA_DIR}/{name}"));
    let range_sets = match ipam.get("ranges") {
        Some(Value::Array(sets)) => sets
            .iter()
            .map(|set| match set {
                Value::Array(ranges) => ranges.iter().map(parse_range).collect(),
                _ => Err("each entry of \"ranges\" must be a list of ranges".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("\"ranges\" is not a list".into()),
        // The deprecated single range at the top of "ipam".
        None if ipam.get("subnet").is_some() => vec![vec![parse_range(ipam)?]],
        None => Vec::new(),
    };
    Ok(NetworkConfig::HostLocal(HostLocalNetwork {
        name,
        plugin,
        data_dir,
        range_sets,
    }))
}

fn parse_range(v: &Value) -> Result<IpRange, String> {
    let subnet = v
        .get("subnet")
        .and_then(Value::as_str)
        .ok_or("a range without \"subnet\"")?;
    let (net, bits) = parse_cidr(subnet)?;
    let ip_field = |k: &str| -> Result<Option<IpAddr>, String> {
        match v.get(k).and_then(Value::as_str) {
            Some(s) => s.parse().map(Some).map_err(|e| format!("{k} {s:?}: {e}")),
            None => Ok(None),
        }
    };
    let (first, last) = host_bounds(net, bits);
    let start = ip_field("rangeStart")?.unwrap_or(first);
    let end = ip_field("rangeEnd")?.unwrap_or(last);
    let gateway = ip_field("gateway")?.or(Some(first));
    Ok(IpRange {
        subnet: subnet.to_string(),
        start,
        end,
        gateway,
    })
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u32), String> {
    let (ip, bits) = s
        .split_once('/')
        .ok_or_else(|| format!("subnet {s:?} is not a CIDR"))?;
    let ip: IpAddr = ip.parse().map_err(|e| format!("subnet {s:?}: {e}"))?;
    let bits: u32 = bits.parse().map_err(|e| format!("subnet {s:?}: {e}"))?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    if bits > width {
        return Err(format!("subnet {s:?}: prefix longer than the address"));
    }
    Ok((ip, bits))
}

/// The first and last address host-local may use in a subnet.
fn host_bounds(ip: IpAddr, bits: u32) -> (IpAddr, IpAddr) {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let host_bits = width - bits;
    let mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let v = to_u128(ip).unwrap_or(0);
    let network = v & !mask;
    let broadcast = network | mask;
    let first = network.saturating_add(1);
    let last = if ip.is_ipv4() {
        broadcast.saturating_sub(1)
    } else {
        broadcast
    };
    (from_u128(first, ip), from_u128(last, ip))
}

fn to_u128(ip: IpAddr) -> Option<u128> {
    Some(match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    })
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((v as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(v.into()),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The networks host-local keeps reservations for: the directories under its data
/// directory (`/var/lib/cni/networks`), by name.
pub fn list_networks(data_root: &Path) -> Result<Vec<String>, ReadError> {
    let mut names: Vec<String> = read_dir(data_root)?
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_type()
                .ok()?
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// An address host-local handed out, and to whom.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reservation {
    pub ip: IpAddr,
    /// Shared with each round's sample that names it, which clones them.
    pub container_id: Option<Arc<str>>,
    pub interface: Option<Arc<str>>,
}

/// The reservations of one network's directory, by address. A file that vanishes or
/// cannot be read between listing and reading is a reservation of nobody known.
pub fn read_reservations(dir: &Path) -> Result<Vec<Reservation>, ReadError> {
    let mut out = Vec::new();
    for e in read_dir(dir)?.flatten() {
        let Some(ip) = reservation_ip(&e.file_name().to_string_lossy()) else {
            continue;
        };
        let (container_id, interface) = read_capped(&e.path(), MAX_VALUE_BYTES)
            .map(|c| parse_reservation(&c))
            .unwrap_or((None, None));
        out.push(Reservation {
            ip,
            container_id,
            interface,
        });
    }
    out.sort();
    Ok(out)
}

/// A reservation file's name is the address; `lock` and `last_reserved_ip.N` are
/// host-local's own bookkeeping.
pub fn reservation_ip(file_name: &str) -> Option<IpAddr> {
    file_name.parse().ok()
}

/// A reservation file holds the container id, then (since CNI plugins 0.8) the
/// interface name on the next line.
/// Both are bounded: an id is an id (runtimes use 64 hex digits), a name is an
/// interface name, whatever else the file holds.
pub fn parse_reservation(content: &str) -> (Option<Arc<str>>, Option<Arc<str>>) {
    const MAX_ID_CHARS: usize = 128;
    const MAX_IFNAME_CHARS: usize = 15;
    let mut lines = content.lines().map(str::trim).filter(|l| !l.is_empty());
    (
        lines.next().map(|l| truncate(l, MAX_ID_CHARS).into()),
        lines.next().map(|l| truncate(l, MAX_IFNAME_CHARS).into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_local(text: &str) -> HostLocalNetwork {
        match parse_config(text).unwrap() {
            NetworkConfig::HostLocal(n) => n,
            other => panic!("expected host-local, got {other:?}"),
        }
    }

    #[test]
    fn a_bridge_conflist_with_defaults_has_253_addresses_in_a_slash_24() {
        let n = host_local(
            r#"{"cniVersion":"0.4.0","name":"cbr0","plugins":[
                {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local",
                 "ranges":[[{"subnet":"10.244.1.0/24"}]]}},
                {"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        );
        assert_eq!(n.name, "cbr0");
        assert_eq!(n.plugin, "bridge");
        assert_eq!(n.data_dir, "/var/lib/cni/networks/cbr0");
        let r = &n.range_sets[0][0];
        assert_eq!(r.start.to_string(), "10.244.1.1");
        assert_eq!(r.end.to_string(), "10.244.1.254");
        assert_eq!(
            r.capacity(),
            253,
            ".2 to .254: the gateway .1 is never handed out"
        );
        assert!(r.contains("10.244.1.7".parse().unwrap()));
        assert!(!r.contains("10.244.2.7".parse().unwrap()));
        assert!(!r.contains("fd00::7".parse().unwrap()));
    }

    #[test]
    fn the_deprecated_single_range_with_explicit_bounds_and_data_dir() {
        let n = host_local(
            r#"{"name":"mynet","type":"bridge","ipam":{"type":"host-local",
                "subnet":"10.10.0.0/16","rangeStart":"10.10.1.20","rangeEnd":"10.10.3.50",
                "gateway":"10.10.0.254","dataDir":"/run/ipam-state/"}}"#,
        );
        assert_eq!(n.data_dir, "/run/ipam-state/mynet");
        // 10.10.1.20 .. 10.10.3.50: 236 + 256 + 51; the gateway lies outside.
        assert_eq!(n.range_sets[0][0].capacity(), 543);
    }

    #[test]
    fn dual_stack_gives_one_range_set_per_family() {
        let n = host_local(
            r#"{"name":"ds","plugins":[{"type":"ptp","ipam":{"type":"host-local","ranges":[
                [{"subnet":"10.1.0.0/30"}],
                [{"subnet":"fd00::/120","rangeStart":"fd00::10","rangeEnd":"fd00::1f"}]]}}]}"#,
        );
        assert_eq!(n.range_sets.len(), 2);
        assert_eq!(
            n.range_sets[0][0].capacity(),
            1,
            "a /30 has .1 (gateway) and .2"
        );
        assert_eq!(n.range_sets[1][0].capacity(), 16);
    }

    #[test]
    fn other_ipam_plugins_are_named_not_counted() {
        let c = parse_config(
            r#"{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[
            {"type":"calico","ipam":{"type":"calico-ipam"}},{"type":"bandwidth"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            NetworkConfig::Other {
                name: "k8s-pod-network".into(),
                plugin: "calico".into(),
                ipam: Some("calico-ipam".into())
            }
        );
        let flannel =
            parse_config(r#"{"name":"cbr0","plugins":[{"type":"flannel","delegate":{}}]}"#)
                .unwrap();
        assert!(matches!(flannel, NetworkConfig::Other { ipam: None, .. }));
    }

    #[test]
    fn malformed_configs_are_errors_that_say_why() {
        assert!(parse_config("{").unwrap_err().contains("not valid JSON"));
        assert!(parse_config(r#"{"type":"bridge"}"#)
            .unwrap_err()
            .contains("name"));
        let e = parse_config(
            r#"{"name":"x","type":"bridge","ipam":{"type":"host-local","subnet":"10.0.0.0"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("not a CIDR"), "{e}");
        let e = parse_config(
            r#"{"name":"x","type":"bridge","ipam":{"type":"host-local","subnet":"10.0.0.0/40"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("prefix longer"), "{e}");
    }

    #[test]
    fn reservation_fields_are_bounded_whatever_the_file_holds() {
        let long = format!("{}\n{}\n", "a".repeat(10_000), "e".repeat(40));
        let (id, iface) = parse_reservation(&long);
        assert_eq!(id.unwrap().len(), 128);
        assert_eq!(iface.unwrap().len(), 15);
        let (id, _) = parse_reservation("é容器ä…\n");
        assert_eq!(id.as_deref(), Some("é容器ä…"));
    }

    #[test]
    fn reservations_hold_a_container_id_and_maybe_an_interface() {
        assert_eq!(
            parse_reservation("4c5d6e7f\r\neth0\r\n"),
            (Some("4c5d6e7f".into()), Some("eth0".into()))
        );
        assert_eq!(
            parse_reservation("4c5d6e7f"),
            (Some("4c5d6e7f".into()), None)
        );
        assert_eq!(parse_reservation(""), (None, None));
        assert_eq!(reservation_ip("last_reserved_ip.0"), None);
        assert_eq!(reservation_ip("lock"), None);
        assert!(reservation_ip("10.244.1.5").is_some());
    }

    #[test]
    fn a_network_directory_reads_as_reservations_by_address() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("cbr0");
        std::fs::create_dir(&net).unwrap();
        std::fs::write(net.join("10.244.1.9"), "bbb\neth0\n").unwrap();
        std::fs::write(net.join("10.244.1.10"), "aaa").unwrap();
        std::fs::write(net.join("last_reserved_ip.0"), "10.244.1.10").unwrap();
        std::fs::write(net.join("lock"), "").unwrap();
        std::fs::create_dir(net.join("10.244.1.11")).unwrap();
        std::fs::write(dir.path().join("a-file"), "").unwrap();
        assert_eq!(
            list_networks(dir.path()).unwrap(),
            ["cbr0"],
            "files are no networks"
        );
        let r = read_reservations(&net).unwrap();
        let ips: Vec<String> = r.iter().map(|r| r.ip.to_string()).collect();
        assert_eq!(ips, ["10.244.1.9", "10.244.1.10", "10.244.1.11"]);
        assert_eq!(r[0].container_id.as_deref(), Some("bbb"));
        assert_eq!(r[0].interface.as_deref(), Some("eth0"));
        assert_eq!(r[2].container_id, None, "unreadable: held by nobody known");
        let e = read_reservations(&dir.path().join("gone")).unwrap_err();
        assert_eq!(e.path, dir.path().join("gone"));
        assert!(e.is_not_found());
    }

    #[test]
    fn config_files_are_listed_in_order_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "20-b.conflist",
            "10-a.conf",
            "30-c.json",
            "README",
            "99.conf.bak",
        ] {
            std::fs::write(dir.path().join(f), "{").unwrap();
        }
        let names: Vec<String> = config_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a.conf", "20-b.conflist", "30-c.json"]);
        let bad = dir.path().join("10-a.conf");
        let e = read_config(&bad).unwrap_err();
        assert_eq!(e.path, bad);
        assert!(e.source.to_string().starts_with("not valid JSON"), "{e}");
        std::fs::create_dir(dir.path().join("40-dir.conf")).unwrap();
        let e = read_config(&dir.path().join("40-dir.conf")).unwrap_err();
        assert_eq!(e.path, dir.path().join("40-dir.conf"));
        assert!(config_files(&dir.path().join("none"))
            .unwrap_err()
            .is_not_found());
    }
}
