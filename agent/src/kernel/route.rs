//! The interface of the default route, from `/proc/net/route` and
//! `/proc/net/ipv6_route`: the uplink whose MTU pod interfaces must fit under.

use super::read_string;
use crate::host::HostRoot;

/// The interface of the host's default route: IPv4 first, then IPv6, each from PID
/// 1's view (the host's namespace under hostPID), else from nodediag's own. None when
/// no table has a default route or none can be read.
pub fn default_interface(root: &HostRoot) -> Option<String> {
    let read = |parts: &[&str]| read_string(&root.proc(parts)).ok();
    read(&["1", "net", "route"])
        .or_else(|| read(&["net", "route"]))
        .and_then(|r| parse_default_v4(&r))
        .or_else(|| {
            read(&["1", "net", "ipv6_route"])
                .or_else(|| read(&["net", "ipv6_route"]))
                .and_then(|r| parse_default_v6(&r))
        })
}

/// The interface of the IPv4 default route with the lowest metric.
pub fn parse_default_v4(route: &str) -> Option<String> {
    let mut lines = route.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (iface, dest, mask, metric) = (
        col("Iface")?,
        col("Destination")?,
        col("Mask")?,
        col("Metric")?,
    );
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let zero = |i: usize| {
                f.get(i)
                    .is_some_and(|v| u32::from_str_radix(v, 16) == Ok(0))
            };
            (zero(dest) && zero(mask)).then(|| {
                let m: u64 = f
                    .get(metric)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                (m, f.get(iface).map(|s| s.to_string()))
            })
        })
        .min_by_key(|(m, _)| *m)
        .and_then(|(_, i)| i)
}

/// The interface of the IPv6 default route (`::/0`) with the lowest metric; the
/// loopback entries the kernel lists for unreachable defaults are skipped.
pub fn parse_default_v6(route: &str) -> Option<String> {
    route
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[1] != "00" || f[0].chars().any(|c| c != '0') || f[9] == "lo" {
                return None;
            }
            Some((u64::from_str_radix(f[5], 16).ok()?, f[9].to_string()))
        })
        .min_by_key(|(m, _)| *m)
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth1\t00000000\t010200C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";

    #[test]
    fn ipv4_default_route_with_the_lowest_metric() {
        assert_eq!(parse_default_v4(V4).as_deref(), Some("eth0"));
        let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_default_v4(no_default), None);
        assert_eq!(parse_default_v4(""), None);
        assert_eq!(parse_default_v4("garbage\n1 2 3\n"), None);
    }

    #[test]
    fn ipv6_default_route_skips_loopback() {
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     ens5\n";
        assert_eq!(parse_default_v6(v6).as_deref(), Some("ens5"));
        assert_eq!(parse_default_v6("short line\n"), None);
    }

    #[test]
    fn the_default_interface_prefers_pid_1_and_ipv4() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot {
            proc: dir.path().to_path_buf(),
            ..HostRoot::default()
        };
        assert_eq!(default_interface(&root), None, "nothing to read");
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     ens5\n";
        std::fs::create_dir_all(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/ipv6_route"), v6).unwrap();
        assert_eq!(default_interface(&root).as_deref(), Some("ens5"));
        std::fs::write(dir.path().join("net/route"), V4).unwrap();
        assert_eq!(default_interface(&root).as_deref(), Some("eth0"));
        std::fs::create_dir_all(dir.path().join("1/net")).unwrap();
        std::fs::write(dir.path().join("1/net/route"), V4.replace("eth0", "bond0")).unwrap();
        assert_eq!(default_interface(&root).as_deref(), Some("bond0"));
    }
}
