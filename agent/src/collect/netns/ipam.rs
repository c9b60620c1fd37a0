//! host-local IPAM accounting: each network the CNI configurations name, its range
//! sets' capacity, the addresses reserved in each, and the reservations whose
//! container no process on the node runs any more.

use super::scan::ProcScan;
use super::{listed, shown_path, HostDir, IpamNetwork, IpamRangeSet, Reservation};
use crate::host::HostRoot;
use crate::kernel::cni::{self, NetworkConfig};
use crate::kernel::dir_memo::DirMemo;
use crate::sample::Unavailable;
use std::collections::HashMap;

/// Every host-local network: those the configurations in `conf_dirs` name, then the
/// reservation directories no configuration names (a generated config such as
/// flannel's delegate), counted with their capacity unknown.
/// Each network's reservations as last read, by data directory: a reservation file
/// is written once when an address is handed out and removed when it is released,
/// so an unchanged directory holds the same reservations (at 500 pods, reading
/// every file every round was a fifth of the collector's CPU).
#[derive(Debug, Default)]
pub(super) struct ReservationsMemo(HashMap<String, DirMemo<Vec<cni::Reservation>>>);

pub(super) fn networks(
    root: &HostRoot,
    conf_dirs: &[HostDir],
    procs: &ProcScan,
    memo: &mut ReservationsMemo,
    unavailable: &mut Vec<Unavailable>,
) -> Vec<IpamNetwork> {
    let mut seen = ReservationsMemo::default();
    let mut reservations = |data_dir: &str| {
        let dir = root.host_path(data_dir);
        let mut m = memo.0.remove(data_dir).unwrap_or_default();
        // No directory yet: nothing reserved.
        let r = m
            .read(&dir, || cni::read_reservations(&dir))
            .unwrap_or_default();
        seen.0.insert(data_dir.to_string(), m);
        r
    };
    let mut networks: Vec<IpamNetwork> = Vec::new();
    let mut any_conf_dir = false;
    for dir in conf_dirs {
        let Ok(files) = cni::config_files(&dir.read) else {
            continue;
        };
        any_conf_dir = true;
        for file in files {
            let shown = shown_path(dir, &file);
            match cni::read_config(&file) {
                Ok(NetworkConfig::HostLocal(n)) => {
                    if networks.iter().any(|x| x.name == n.name) {
                        continue;
                    }
                    let reserved = reservations(&n.data_dir);
                    networks.push(network(
                        reserved,
                        n.name.clone(),
                        Some(n.plugin.clone()),
                        Some(shown),
                        n.data_dir.clone(),
                        &n.range_sets,
                        procs,
                    ));
                }
                Ok(NetworkConfig::Other { .. }) => {}
                // `what` names the file already.
                Err(e) => unavailable.push(Unavailable::new(
                    format!("CNI configuration {shown}"),
                    format!("{}: its IPAM is not checked", e.source),
                )),
            }
        }
    }
    if !any_conf_dir {
        unavailable.push(Unavailable::new(
            "CNI configuration",
            format!(
                "none of {} exists: IPAM capacity is unknown (--path.cni-conf)",
                listed(conf_dirs)
            ),
        ));
    }
    if let Ok(names) = cni::list_networks(&root.host_path(cni::DEFAULT_DATA_DIR)) {
        let extra: Vec<String> = names
            .into_iter()
            .filter(|name| !networks.iter().any(|n| &n.name == name))
            .collect();
        for name in extra {
            let dir = format!("{}/{name}", cni::DEFAULT_DATA_DIR);
            networks.push(network(
                reservations(&dir),
                name,
                None,
                None,
                dir,
                &[],
                procs,
            ));
        }
    }
    *memo = seen;
    networks
}

fn network(
    reservations: Vec<cni::Reservation>,
    name: String,
    plugin: Option<String>,
    config_file: Option<String>,
    data_dir: String,
    range_sets: &[Vec<cni::IpRange>],
    procs: &ProcScan,
) -> IpamNetwork {
    let sets: Vec<IpamRangeSet> = range_sets
        .iter()
        .map(|set| IpamRangeSet {
            ranges: set
                .iter()
                .map(|r| format!("{} {}-{}", r.subnet, r.start, r.end))
                .collect(),
            capacity: set
                .iter()
                .map(|r| r.capacity())
                .sum::<u128>()
                .min(u64::MAX as u128) as u64,
            allocated: reservations
                .iter()
                .filter(|r| set.iter().any(|range| range.contains(r.ip)))
                .count() as u64,
        })
        .collect();
    let stale_known = procs.cgroups_readable;
    let stale = reservations
        .iter()
        .filter(|_| stale_known)
        .filter(|r| {
            r.container_id
                .as_ref()
                .is_none_or(|id| !procs.live_containers.contains_key(&**id))
        })
        .map(|r| reservation(r, procs))
        .collect();
    // Each address with the pod whose sandbox holds it: who a conntrack entry's
    // source address belongs to when the pod's own interfaces cannot be read.
    let owned = reservations
        .iter()
        .map(|r| reservation(r, procs))
        .filter(|r| r.pod.is_some())
        .collect();
    IpamNetwork {
        name,
        plugin,
        config_file,
        data_dir,
        capacity: sets.iter().map(|s| s.capacity).min(),
        range_sets: sets,
        allocated: reservations.len() as u64,
        stale_known,
        stale,
        owned,
    }
}

fn reservation(r: &cni::Reservation, procs: &ProcScan) -> Reservation {
    Reservation {
        ip: r.ip,
        container_id: r.container_id.clone(),
        interface: r.interface.clone(),
        pod: r
            .container_id
            .as_ref()
            .and_then(|id| procs.live_containers.get(&**id))
            .cloned(),
    }
}
