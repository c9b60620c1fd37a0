//! Network namespaces, the veth pairs that connect them to the host, and host-local
//! IPAM, each named by the pod it belongs to: `ip netns list`, `ip -d link`,
//! `nsenter ... ip addr` and `ls /var/lib/cni/networks/*` in one sample.
//!
//! The inventory joins three views: pins (runtime netns directories), processes
//! (`/proc/<pid>/ns/net`, whose cgroups name the pod), and rtnetlink (the host's
//! veths with IFLA_LINK_NETNSID, resolved through the host's nsid table, and each
//! namespace's own interfaces, read from a thread that enters it). [`scan`] finds the
//! namespaces, [`links`] joins the links, [`ipam`] counts the reservations.

mod ipam;
mod links;
mod sample;
pub(crate) mod scan;
pub(crate) mod shared_walk;

pub use scan::NETNS_REREAD;

pub use sample::{
    AgeSource, IpamNetwork, IpamRangeSet, NetnsInfo, NetnsInterface, NetnsSample, Overlay,
    PeerState, Reservation, Uplink, VethPair,
};

use super::Collector;
use crate::collect::pods::Attribution;
use crate::host::HostRoot;
use crate::sample::{CollectError, Unavailable};
use foldhash::{HashMap, HashMapExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Pins of the runtimes nodediag knows: iproute2 and CNI (containerd, CRI-O), docker.
const DEFAULT_PIN_DIRS: [&str; 3] = ["/run/netns", "/var/run/netns", "/var/run/docker/netns"];
const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
const MAX_PIDS_LISTED: usize = 5;

/// The bytes of encapsulation a link kind adds to a packet, None for a kind that is
/// no tunnel. The figures are the MTU rule's; the registry hands them to the
/// collector so the sample shows them.
pub type TunnelOverhead = fn(kind: &str) -> Option<u32>;

/// A directory to read, and how to name its files to an SRE on the node.
#[derive(Debug, Clone)]
struct HostDir {
    read: PathBuf,
    shown: PathBuf,
}

fn host_dirs(root: &HostRoot, given: &[PathBuf], defaults: &[&str]) -> Vec<HostDir> {
    if given.is_empty() {
        defaults
            .iter()
            .map(|d| HostDir {
                read: root.host_path(d),
                shown: PathBuf::from(d),
            })
            .collect()
    } else {
        given
            .iter()
            .map(|d| HostDir {
                read: d.clone(),
                shown: d.clone(),
            })
            .collect()
    }
}

fn shown_path(dir: &HostDir, path: &Path) -> String {
    match path.file_name() {
        Some(f) => dir.shown.join(f).display().to_string(),
        None => path.display().to_string(),
    }
}

pub struct NetnsCollector {
    root: HostRoot,
    netlink: bool,
    pin_dirs: Vec<HostDir>,
    cni_conf_dirs: Vec<HostDir>,
    tunnel_overhead: TunnelOverhead,
    first_seen: HashMap<(u32, Arc<str>), SystemTime>,
    former_pods: HashMap<u64, Attribution>,
    links: Option<links::LinkCache>,
    reservations: ipam::ReservationsMemo,
    pins: scan::PinsMemo,
}

impl NetnsCollector {
    pub fn new(
        root: HostRoot,
        netlink: bool,
        netns_dirs: &[PathBuf],
        cni_conf_dirs: &[PathBuf],
        tunnel_overhead: TunnelOverhead,
    ) -> Self {
        Self {
            pin_dirs: host_dirs(&root, netns_dirs, &DEFAULT_PIN_DIRS),
            cni_conf_dirs: host_dirs(&root, cni_conf_dirs, &[DEFAULT_CNI_CONF_DIR]),
            root,
            netlink,
            tunnel_overhead,
            first_seen: HashMap::new(),
            former_pods: HashMap::new(),
            links: None,
            reservations: ipam::ReservationsMemo::default(),
            pins: scan::PinsMemo::default(),
        }
    }

    /// Remembers each namespace's pod, so a leaked one still names it.
    fn remember_pods(&mut self, namespaces: &mut [NetnsInfo]) {
        self.former_pods
            .retain(|inode, _| namespaces.binary_search_by_key(inode, |n| n.inode).is_ok());
        for ns in namespaces {
            match &ns.pod {
                Some(p) => {
                    self.former_pods.insert(ns.inode, p.clone());
                }
                None => ns.former_pod = self.former_pods.get(&ns.inode).cloned(),
            }
        }
    }
}

fn listed(dirs: &[HostDir]) -> String {
    dirs.iter()
        .map(|d| d.read.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Collector for NetnsCollector {
    type Sample = NetnsSample;

    fn collect(&mut self) -> Result<NetnsSample, CollectError> {
        let now = SystemTime::now();
        let mut unavailable = Vec::new();
        let walk = shared_walk::processes(&self.root)?;
        unavailable.extend(walk.index_missing.iter().cloned());
        let procs = &walk.procs;
        let pins = scan::pins(&self.root, &self.pin_dirs, &mut self.pins);
        if !pins.any_dir {
            unavailable.push(Unavailable::new(
                "netns pin directories",
                format!(
                    "none of {} exists: only namespaces held by processes are listed (--path.netns)",
                    listed(&self.pin_dirs)
                ),
            ));
        }
        if procs.unreadable > 0 {
            tracing::debug!(
                unreadable = procs.unreadable,
                "processes whose namespace could not be read"
            );
        }
        if !procs.host_from_pid1 {
            tracing::debug!(
                "PID 1's namespace is unreadable: nodediag's own is taken as the host's"
            );
        }

        let mut namespaces = scan::namespaces(&pins, procs, now);
        self.remember_pods(&mut namespaces);

        let (host_links, host_addrs) = links::look_inside(
            &self.root,
            self.netlink,
            &pins,
            procs,
            &mut namespaces,
            &mut unavailable,
            &mut self.links,
        );
        if let Some(host) = namespaces.iter_mut().find(|n| n.host) {
            host.interfaces = links::host_interfaces(&mut self.links, &host_links, &host_addrs);
        }

        let veths = links::join_veths(
            &mut self.first_seen,
            self.netlink,
            &host_links,
            &mut namespaces,
            now,
        );
        let uplink = links::uplink(&self.root, &host_links);
        let overlays = links::overlays(&host_links, self.tunnel_overhead);
        if uplink.is_none() {
            unavailable.push(Unavailable::new(
                "uplink",
                "no default route in /proc/net/route or /proc/net/ipv6_route: pod MTUs are not checked",
            ));
        }
        let ipam = ipam::networks(
            &self.root,
            &self.cni_conf_dirs,
            procs,
            &mut self.reservations,
            &mut unavailable,
        );

        Ok(NetnsSample {
            host_netns: procs.host,
            peers_known: self.netlink,
            namespaces,
            veths,
            ipam,
            uplink,
            overlays,
            stale_pins: pins.stale,
            unavailable,
        })
    }
}
