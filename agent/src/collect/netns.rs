//! Network namespaces, the veth pairs that connect them to the host, and host-local
//! IPAM, each named by the pod it belongs to: `ip netns list`, `ip -d link`,
//! `nsenter ... ip addr` and `ls /var/lib/cni/networks/*` in one sample.
//!
//! The inventory joins three views: pins (runtime netns directories), processes
//! (`/proc/<pid>/ns/net`, whose cgroups name the pod), and rtnetlink (the host's
//! veths with IFLA_LINK_NETNSID, resolved through the host's nsid table, and each
//! namespace's own interfaces, read from a thread that enters it).

use super::Collector;
use crate::collect::pods::{Attribution, PodIndex};
use crate::host::HostRoot;
use crate::kernel::cni::{self, NetworkConfig};
use crate::kernel::netns::{self, Inspection, PinEntry};
use crate::kernel::rtnetlink::{Addr, Link, LinkStats};
use crate::kernel::{net_class, route};
use crate::sample::{CollectError, Sample, Unavailable};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Pins of the runtimes nodediag knows: iproute2 and CNI (containerd, CRI-O), docker.
const DEFAULT_PIN_DIRS: [&str; 3] = ["/run/netns", "/var/run/netns", "/var/run/docker/netns"];
const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Kinds of overlay device and the bytes of encapsulation each adds to a packet.
pub const TUNNEL_OVERHEAD: [(&str, u32); 4] = [
    ("vxlan", 50),
    ("geneve", 50),
    ("wireguard", 60),
    ("ipip", 20),
];
const MAX_PIDS_LISTED: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgeSource {
    /// The pin's nsfs inode: when the runtime pinned the namespace.
    Pin,
    /// The start of the oldest process inside.
    Process,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetnsInterface {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mtu: Option<u32>,
    pub operstate: Option<String>,
    /// `10.244.1.5/24` style.
    pub addresses: Vec<String>,
    /// For a veth: its peer's ifindex (in the host for a pod's eth0).
    pub peer_ifindex: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetnsInfo {
    pub inode: u64,
    /// The host's own namespace (the one PID 1 is in).
    pub host: bool,
    /// Pin paths as seen on the host (`/run/netns/cni-...`).
    pub pins: Vec<String>,
    /// The id the host gives this namespace (what a host veth's link-netnsid says).
    pub nsid: Option<i32>,
    pub processes: u32,
    /// A few of the processes inside (lowest pids), to nsenter with.
    pub pids: Vec<u32>,
    #[serde(serialize_with = "crate::time::serialize_opt")]
    pub created: Option<SystemTime>,
    pub age_seconds: Option<u64>,
    pub age_from: Option<AgeSource>,
    /// The pod of the processes inside.
    pub pod: Option<Attribution>,
    /// With no process left: the pod nodediag last saw inside.
    pub former_pod: Option<Attribution>,
    pub interfaces: Vec<NetnsInterface>,
    /// Why the interfaces could not be read (netlink off, namespace gone meanwhile).
    pub interfaces_error: Option<String>,
    /// Host-side veths whose peer is in here.
    pub host_veths: Vec<String>,
}

impl NetnsInfo {
    /// Pinned by a runtime with no process left inside: the CNI DEL never came.
    pub fn is_empty_pin(&self) -> bool {
        !self.host && self.processes == 0 && !self.pins.is_empty()
    }

    pub fn state(&self) -> &'static str {
        if self.host {
            "host"
        } else if self.processes > 0 {
            "live"
        } else {
            "empty"
        }
    }

    pub fn name(&self) -> String {
        self.pins
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .unwrap_or_else(|| format!("net:[{}]", self.inode))
    }
}

/// Where the peer of a host-side veth lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Both ends on the host.
    Host,
    /// In a namespace with processes.
    Live,
    /// In a pinned namespace with no process.
    Empty,
    /// In a namespace no pin and no process holds that nodediag can see.
    Unknown,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Host => "host",
            PeerState::Live => "live",
            PeerState::Empty => "empty",
            PeerState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VethPair {
    pub name: String,
    pub index: u32,
    pub mtu: Option<u32>,
    pub admin_up: bool,
    pub operstate: Option<String>,
    /// The bridge (or other master) it is enslaved to.
    pub master: Option<String>,
    pub stats: Option<LinkStats>,
    pub peer_ifindex: Option<u32>,
    pub peer_netnsid: Option<i32>,
    pub peer_netns: Option<u64>,
    pub peer_state: PeerState,
    pub peer_name: Option<String>,
    pub peer_mtu: Option<u32>,
    pub peer_addresses: Vec<String>,
    pub peer_pins: Vec<String>,
    pub pod: Option<Attribution>,
    /// The pod was seen earlier; its processes are gone now.
    pub pod_gone: bool,
    /// When nodediag first saw this veth (the kernel keeps no creation time).
    #[serde(serialize_with = "crate::time::serialize")]
    pub first_seen: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uplink {
    pub name: String,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlay {
    pub name: String,
    pub kind: String,
    pub mtu: Option<u32>,
    pub overhead_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reservation {
    pub ip: String,
    pub container_id: Option<String>,
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpamRangeSet {
    /// `subnet start-end` of each range.
    pub ranges: Vec<String>,
    pub capacity: u64,
    pub allocated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpamNetwork {
    pub name: String,
    pub plugin: Option<String>,
    pub config_file: Option<String>,
    pub data_dir: String,
    pub range_sets: Vec<IpamRangeSet>,
    /// Reservation files (addresses handed out).
    pub allocated: u64,
    /// Addresses the tightest range set can hand out; None without a config.
    pub capacity: Option<u64>,
    /// Whether live sandboxes could be told (process cgroups were readable).
    pub stale_known: bool,
    /// Reservations whose container has no process on the node.
    pub stale: Vec<Reservation>,
}

impl IpamNetwork {
    /// The fullest range set's use, 0..1.
    pub fn usage_ratio(&self) -> Option<f64> {
        self.range_sets
            .iter()
            .filter(|r| r.capacity > 0)
            .map(|r| r.allocated as f64 / r.capacity as f64)
            .reduce(f64::max)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetnsSample {
    pub host_netns: Option<u64>,
    /// Whether veth peers could be resolved (rtnetlink on): without it a peer is
    /// unknown, not lost.
    pub peers_known: bool,
    pub namespaces: Vec<NetnsInfo>,
    pub veths: Vec<VethPair>,
    pub ipam: Vec<IpamNetwork>,
    pub uplink: Option<Uplink>,
    pub overlays: Vec<Overlay>,
    /// Files left in a netns directory after their namespace went away.
    pub stale_pins: Vec<String>,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for NetnsSample {
    const COLLECTOR: &'static str = "netns";

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }
}

impl NetnsSample {
    pub fn namespace(&self, inode: u64) -> Option<&NetnsInfo> {
        self.namespaces.iter().find(|n| n.inode == inode)
    }
}

/// A directory to read, and how to name its files to an SRE on the node.
#[derive(Debug, Clone)]
struct HostDir {
    read: PathBuf,
    shown: PathBuf,
}

pub struct NetnsCollector {
    root: HostRoot,
    netlink: bool,
    pin_dirs: Vec<HostDir>,
    cni_conf_dirs: Vec<HostDir>,
    first_seen: HashMap<(u32, String), SystemTime>,
    former_pods: HashMap<u64, Attribution>,
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

impl NetnsCollector {
    pub fn new(
        root: HostRoot,
        netlink: bool,
        netns_dirs: &[PathBuf],
        cni_conf_dirs: &[PathBuf],
    ) -> Self {
        Self {
            pin_dirs: host_dirs(&root, netns_dirs, &DEFAULT_PIN_DIRS),
            cni_conf_dirs: host_dirs(&root, cni_conf_dirs, &[DEFAULT_CNI_CONF_DIR]),
            root,
            netlink,
            first_seen: HashMap::new(),
            former_pods: HashMap::new(),
        }
    }
}

/// What the process scan found about one namespace.
#[derive(Debug, Default)]
struct ProcView {
    pids: Vec<u32>,
    oldest_start: Option<SystemTime>,
    pod: Option<Attribution>,
}

struct ProcScan {
    host: Option<u64>,
    host_from_pid1: bool,
    by_ns: HashMap<u64, ProcView>,
    /// Container ids of every process in a pod cgroup: the live sandboxes.
    live_containers: HashSet<String>,
    cgroups_readable: bool,
    unreadable: u32,
}

struct PinScan {
    by_ns: BTreeMap<u64, (Vec<(String, PathBuf)>, SystemTime)>,
    stale: Vec<String>,
    any_dir: bool,
}

impl NetnsCollector {
    fn scan_pins(&self) -> PinScan {
        let mut scan = PinScan {
            by_ns: BTreeMap::new(),
            stale: Vec::new(),
            any_dir: false,
        };
        // /var/run is usually a link to /run: read each directory once.
        let mut seen_dirs = HashSet::new();
        for dir in &self.pin_dirs {
            let Ok(meta) = std::fs::metadata(&dir.read) else {
                continue;
            };
            scan.any_dir = true;
            if !seen_dirs.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let Ok(entries) = netns::read_pins(&dir.read) else {
                continue;
            };
            for entry in entries {
                match entry {
                    PinEntry::Namespace {
                        path,
                        inode,
                        pinned_at,
                    } => {
                        let shown = shown_path(dir, &path);
                        let e = scan.by_ns.entry(inode).or_insert((Vec::new(), pinned_at));
                        e.0.push((shown, path));
                        e.1 = e.1.min(pinned_at);
                    }
                    PinEntry::Stale { path } => scan.stale.push(shown_path(dir, &path)),
                }
            }
        }
        scan
    }

    fn scan_processes(&self, index: &PodIndex) -> Result<ProcScan, CollectError> {
        let pids = netns::list_pids(&self.root)
            .map_err(|e| CollectError::Failed(format!("{}: {e}", self.root.proc(&[]).display())))?;
        let (host, host_from_pid1) = match netns::netns_of(&self.root, "1") {
            Ok(i) => (Some(i), true),
            Err(_) => (netns::netns_of(&self.root, "self").ok(), false),
        };
        let boot = crate::kernel::read_string(&self.root.proc(&["stat"]))
            .ok()
            .and_then(|s| netns::parse_boot_time(&s));
        let ticks = netns::clock_ticks_per_second();
        let mut scan = ProcScan {
            host,
            host_from_pid1,
            by_ns: HashMap::new(),
            live_containers: HashSet::new(),
            cgroups_readable: false,
            unreadable: 0,
        };
        for pid in pids {
            let p = pid.to_string();
            let Ok(inode) = netns::netns_of(&self.root, &p) else {
                scan.unreadable += 1;
                continue;
            };
            let cgroup = std::fs::read_to_string(self.root.proc(&[&p, "cgroup"])).ok();
            scan.cgroups_readable |= cgroup.is_some();
            let attribution = cgroup
                .as_deref()
                .and_then(netns::pod_cgroup)
                .and_then(|path| index.attribute(path));
            if let Some(id) = attribution.as_ref().and_then(|a| a.container_id.clone()) {
                scan.live_containers.insert(id);
            }
            let view = scan.by_ns.entry(inode).or_default();
            view.pids.push(pid);
            // The host namespace holds most processes: its age and pod mean nothing.
            if Some(inode) == scan.host {
                continue;
            }
            let started = boot.and_then(|b| {
                let stat = std::fs::read_to_string(self.root.proc(&[&p, "stat"])).ok()?;
                let t = netns::parse_start_ticks(&stat)?;
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(b) + ticks_to(t, ticks))
            });
            if let Some(s) = started {
                view.oldest_start = Some(view.oldest_start.map_or(s, |o| o.min(s)));
            }
            let better = match (&view.pod, &attribution) {
                (None, Some(_)) => true,
                (Some(old), Some(new)) => old.pod.is_none() && new.pod.is_some(),
                _ => false,
            };
            if better {
                view.pod = attribution;
            }
        }
        Ok(scan)
    }
}

fn ticks_to(ticks: u64, per_second: u64) -> Duration {
    Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
}

fn shown_path(dir: &HostDir, path: &Path) -> String {
    match path.file_name() {
        Some(f) => dir.shown.join(f).display().to_string(),
        None => path.display().to_string(),
    }
}

fn cidr(a: &Addr) -> String {
    format!("{}/{}", a.address, a.prefix_len)
}

fn interfaces_of(links: &[Link], addrs: &[Addr]) -> Vec<NetnsInterface> {
    links
        .iter()
        .map(|l| NetnsInterface {
            index: l.index,
            name: l.name.clone(),
            kind: l.kind.clone(),
            mtu: l.mtu,
            operstate: l.operstate.clone(),
            addresses: addrs
                .iter()
                .filter(|a| a.index == l.index)
                .map(cidr)
                .collect(),
            // IFLA_LINK of a vlan or macvlan is its lower device, not a peer.
            peer_ifindex: l
                .link
                .filter(|p| *p != l.index && *p != 0 && l.kind.as_deref() == Some("veth")),
        })
        .collect()
}

/// The host's links from sysfs when netlink is off. sysfs has no link kind for a
/// veth: a virtual link without DEVTYPE whose iflink names another interface is taken
/// as one (its peer's namespace stays unknown).
fn host_links_from_sysfs(root: &HostRoot) -> Vec<Link> {
    let Ok(names) = net_class::list(root) else {
        return Vec::new();
    };
    names
        .iter()
        .map(|name| {
            let s = net_class::read(root, name);
            let index = s.ifindex.unwrap_or(0) as u32;
            let iflink = s.iflink.map(|i| i as u32);
            let veth_like = !s.physical
                && s.devtype.is_none()
                && !s.bridge
                && !s.loopback
                && !s.tun
                && iflink.is_some_and(|i| i != index && i != 0);
            let kind = s
                .devtype
                .clone()
                .or_else(|| s.bridge.then(|| "bridge".into()))
                .or_else(|| veth_like.then(|| "veth".into()));
            Link {
                index,
                name: s.name.clone(),
                kind,
                mtu: s.mtu.map(|m| m as u32),
                link: iflink,
                link_netnsid: None,
                master: None,
                admin_up: sysfs_admin_up(root, name),
                operstate: Some(s.operstate.clone()),
                stats: Some(LinkStats {
                    rx_packets: s.counters.rx_packets,
                    tx_packets: s.counters.tx_packets,
                    rx_errors: s.counters.rx_errors,
                    tx_errors: s.counters.tx_errors,
                    rx_dropped: s.counters.rx_dropped,
                    tx_dropped: s.counters.tx_dropped,
                    ..LinkStats::default()
                }),
            }
        })
        .collect()
}

/// IFF_UP from `/sys/class/net/<name>/flags`, which the kernel prints in hex (`0x1003`).
fn sysfs_admin_up(root: &HostRoot, name: &str) -> bool {
    crate::kernel::read_optional(&root.sys(&["class", "net", name, "flags"]))
        .and_then(|f| parse_sysfs_flags(&f))
        .is_some_and(|f| f & 0x1 != 0)
}

fn parse_sysfs_flags(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Collector for NetnsCollector {
    type Sample = NetnsSample;

    fn collect(&mut self) -> Result<NetnsSample, CollectError> {
        let now = SystemTime::now();
        let mut unavailable = Vec::new();
        let (index, missing) = PodIndex::read(&self.root);
        unavailable.extend(missing);
        let pins = self.scan_pins();
        if !pins.any_dir {
            unavailable.push(Unavailable::new(
                "netns pin directories",
                format!(
                    "none of {} exists: only namespaces held by processes are listed (--path.netns)",
                    self.pin_dirs
                        .iter()
                        .map(|d| d.read.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let procs = self.scan_processes(&index)?;
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

        // Every namespace once, by inode: pinned ones and those only processes hold.
        let mut inodes: Vec<u64> = pins.by_ns.keys().copied().collect();
        inodes.extend(procs.by_ns.keys().copied());
        inodes.sort_unstable();
        inodes.dedup();
        let mut namespaces: Vec<NetnsInfo> = inodes
            .iter()
            .map(|&inode| {
                let pinned = pins.by_ns.get(&inode);
                let proc_view = procs.by_ns.get(&inode);
                let host = Some(inode) == procs.host;
                let mut pids = proc_view.map(|p| p.pids.clone()).unwrap_or_default();
                pids.sort_unstable();
                let processes = pids.len() as u32;
                pids.truncate(MAX_PIDS_LISTED);
                let (created, age_from) = match (pinned, proc_view.and_then(|p| p.oldest_start)) {
                    (Some((_, at)), _) => (Some(*at), Some(AgeSource::Pin)),
                    (None, Some(s)) => (Some(s), Some(AgeSource::Process)),
                    _ => (None, None),
                };
                let pod = proc_view.and_then(|p| p.pod.clone());
                NetnsInfo {
                    inode,
                    host,
                    pins: pinned
                        .map(|(p, _)| p.iter().map(|(s, _)| s.clone()).collect())
                        .unwrap_or_default(),
                    nsid: None,
                    processes,
                    pids,
                    created: created.filter(|_| !host),
                    age_seconds: created
                        .filter(|_| !host)
                        .map(|c| now.duration_since(c).unwrap_or_default().as_secs()),
                    age_from: age_from.filter(|_| !host),
                    former_pod: None,
                    pod,
                    interfaces: Vec::new(),
                    interfaces_error: None,
                    host_veths: Vec::new(),
                }
            })
            .collect();

        // Remember each namespace's pod, so a leaked one still names it.
        self.former_pods
            .retain(|inode, _| inodes.binary_search(inode).is_ok());
        for ns in &mut namespaces {
            match &ns.pod {
                Some(p) => {
                    self.former_pods.insert(ns.inode, p.clone());
                }
                None => ns.former_pod = self.former_pods.get(&ns.inode).cloned(),
            }
        }

        let (host_links, host_addrs) =
            self.look_inside(&pins, &procs, &mut namespaces, &mut unavailable);
        if let Some(host) = namespaces.iter_mut().find(|n| n.host) {
            host.interfaces = interfaces_of(&host_links, &host_addrs);
        }

        let veths = self.join_veths(&host_links, &mut namespaces, now);
        let uplink = self.uplink(&host_links);
        let overlays = host_links
            .iter()
            .filter(|l| l.admin_up)
            .filter_map(|l| {
                let kind = l.kind.as_deref()?;
                let (_, overhead) = TUNNEL_OVERHEAD.iter().find(|(k, _)| *k == kind)?;
                Some(Overlay {
                    name: l.name.clone(),
                    kind: kind.to_string(),
                    mtu: l.mtu,
                    overhead_bytes: *overhead,
                })
            })
            .collect();
        if uplink.is_none() {
            unavailable.push(Unavailable::new(
                "uplink",
                "no default route in /proc/net/route or /proc/net/ipv6_route: pod MTUs are not checked",
            ));
        }
        let ipam = self.ipam(&procs, &mut unavailable);

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

impl NetnsCollector {
    /// The host's links and addresses, and each namespace's nsid and interfaces, over
    /// rtnetlink (from sysfs, host only, when netlink is off).
    fn look_inside(
        &self,
        pins: &PinScan,
        procs: &ProcScan,
        namespaces: &mut [NetnsInfo],
        unavailable: &mut Vec<Unavailable>,
    ) -> (Vec<Link>, Vec<Addr>) {
        let mut host_addrs = Vec::new();
        let host_links = if self.netlink {
            let host_path = if procs.host_from_pid1 {
                self.root.proc(&["1", "ns", "net"])
            } else {
                self.root.proc(&["self", "ns", "net"])
            };
            let targets: Vec<(usize, PathBuf)> = namespaces
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.host)
                .filter_map(|(i, n)| {
                    let path = pins
                        .by_ns
                        .get(&n.inode)
                        .and_then(|(p, _)| p.first().map(|(_, read)| read.clone()))
                        .or_else(|| {
                            let pid = procs.by_ns.get(&n.inode)?.pids.first()?.to_string();
                            Some(self.root.proc(&[&pid, "ns", "net"]))
                        })?;
                    Some((i, path))
                })
                .collect();
            match netns::inspect(host_path, targets.iter().map(|(_, p)| p.clone()).collect()) {
                Ok(Inspection {
                    host_links,
                    host_addrs: addrs,
                    targets: views,
                }) => {
                    host_addrs = addrs;
                    for ((i, _), view) in targets.iter().zip(views) {
                        let ns = &mut namespaces[*i];
                        ns.nsid = view.nsid;
                        match view.view {
                            Ok(v) => ns.interfaces = interfaces_of(&v.links, &v.addrs),
                            Err(e) => ns.interfaces_error = Some(e),
                        }
                    }
                    host_links
                }
                Err(e) => {
                    unavailable.push(Unavailable::new(
                        "namespace interfaces and veth peers",
                        format!(
                            "{e}: nodediag needs CAP_SYS_ADMIN and hostPID to enter namespaces"
                        ),
                    ));
                    Vec::new()
                }
            }
        } else {
            unavailable.push(Unavailable::new(
                "namespace interfaces and veth peers",
                "netlink is off (--no-netlink): host links come from sysfs, and veth peers and interfaces inside namespaces are unknown",
            ));
            host_links_from_sysfs(&self.root)
        };
        (host_links, host_addrs)
    }

    fn join_veths(
        &mut self,
        host_links: &[Link],
        namespaces: &mut [NetnsInfo],
        now: SystemTime,
    ) -> Vec<VethPair> {
        let names: HashMap<u32, &str> = host_links
            .iter()
            .map(|l| (l.index, l.name.as_str()))
            .collect();
        let by_nsid: HashMap<i32, usize> = namespaces
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((n.nsid?, i)))
            .collect();
        let mut seen = HashMap::new();
        let mut veths = Vec::new();
        for l in host_links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("veth"))
        {
            let key = (l.index, l.name.clone());
            let first_seen = *self.first_seen.get(&key).unwrap_or(&now);
            seen.insert(key, first_seen);
            let peer_ns = l.link_netnsid.and_then(|id| by_nsid.get(&id).copied());
            let (peer_state, peer_netns) = match (l.link_netnsid, peer_ns) {
                (None, _) if self.netlink => (PeerState::Host, None),
                (None, _) => (PeerState::Unknown, None),
                (Some(_), Some(i)) if namespaces[i].processes > 0 => {
                    (PeerState::Live, Some(namespaces[i].inode))
                }
                (Some(_), Some(i)) if namespaces[i].is_empty_pin() => {
                    (PeerState::Empty, Some(namespaces[i].inode))
                }
                (Some(_), _) => (PeerState::Unknown, None),
            };
            let peer = peer_ns.map(|i| &namespaces[i]);
            let peer_if =
                peer.and_then(|ns| ns.interfaces.iter().find(|i| Some(i.index) == l.link));
            let (pod, pod_gone) = match peer {
                Some(ns) if ns.pod.is_some() => (ns.pod.clone(), false),
                Some(ns) => (ns.former_pod.clone(), ns.former_pod.is_some()),
                None => (None, false),
            };
            veths.push(VethPair {
                name: l.name.clone(),
                index: l.index,
                mtu: l.mtu,
                admin_up: l.admin_up,
                operstate: l.operstate.clone(),
                master: l.master.and_then(|m| names.get(&m).map(|n| n.to_string())),
                stats: l.stats,
                peer_ifindex: l.link.filter(|p| *p != 0),
                peer_netnsid: l.link_netnsid,
                peer_netns,
                peer_state,
                peer_name: peer_if.map(|i| i.name.clone()),
                peer_mtu: peer_if.and_then(|i| i.mtu),
                peer_addresses: peer_if.map(|i| i.addresses.clone()).unwrap_or_default(),
                peer_pins: peer.map(|ns| ns.pins.clone()).unwrap_or_default(),
                pod,
                pod_gone,
                first_seen,
            });
            if let Some(i) = peer_ns {
                namespaces[i].host_veths.push(l.name.clone());
            }
        }
        self.first_seen = seen;
        veths
    }

    fn uplink(&self, host_links: &[Link]) -> Option<Uplink> {
        let read = |parts: &[&str]| crate::kernel::read_string(&self.root.proc(parts)).ok();
        let name = read(&["1", "net", "route"])
            .or_else(|| read(&["net", "route"]))
            .and_then(|r| route::parse_default_v4(&r))
            .or_else(|| {
                read(&["1", "net", "ipv6_route"])
                    .or_else(|| read(&["net", "ipv6_route"]))
                    .and_then(|r| route::parse_default_v6(&r))
            })?;
        let mtu = host_links
            .iter()
            .find(|l| l.name == name)
            .and_then(|l| l.mtu);
        Some(Uplink { name, mtu })
    }

    fn ipam(&self, procs: &ProcScan, unavailable: &mut Vec<Unavailable>) -> Vec<IpamNetwork> {
        let mut networks: Vec<IpamNetwork> = Vec::new();
        let mut any_conf_dir = false;
        for dir in &self.cni_conf_dirs {
            let Ok(entries) = std::fs::read_dir(&dir.read) else {
                continue;
            };
            any_conf_dir = true;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
                })
                .collect();
            files.sort();
            for file in files {
                let shown = shown_path(dir, &file);
                let parsed = std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| cni::parse_config(&t));
                match parsed {
                    Ok(NetworkConfig::HostLocal(n)) => {
                        if networks.iter().any(|x| x.name == n.name) {
                            continue;
                        }
                        networks.push(self.ipam_network(
                            n.name.clone(),
                            Some(n.plugin.clone()),
                            Some(shown),
                            n.data_dir.clone(),
                            &n.range_sets,
                            procs,
                        ));
                    }
                    Ok(NetworkConfig::Other { .. }) => {}
                    Err(e) => unavailable.push(Unavailable::new(
                        format!("CNI configuration {shown}"),
                        format!("{e}: its IPAM is not checked"),
                    )),
                }
            }
        }
        if !any_conf_dir {
            unavailable.push(Unavailable::new(
                "CNI configuration",
                format!(
                    "none of {} exists: IPAM capacity is unknown (--path.cni-conf)",
                    self.cni_conf_dirs
                        .iter()
                        .map(|d| d.read.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        // Reservation directories no configuration names (a generated config such as
        // flannel's delegate): counted, capacity unknown.
        if let Ok(entries) = std::fs::read_dir(self.root.host_path(cni::DEFAULT_DATA_DIR)) {
            let mut extra: Vec<String> = entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    e.file_type()
                        .ok()?
                        .is_dir()
                        .then(|| e.file_name().to_string_lossy().into_owned())
                })
                .filter(|name| !networks.iter().any(|n| &n.name == name))
                .collect();
            extra.sort();
            for name in extra {
                let dir = format!("{}/{name}", cni::DEFAULT_DATA_DIR);
                networks.push(self.ipam_network(name, None, None, dir, &[], procs));
            }
        }
        networks
    }

    fn ipam_network(
        &self,
        name: String,
        plugin: Option<String>,
        config_file: Option<String>,
        data_dir: String,
        range_sets: &[Vec<cni::IpRange>],
        procs: &ProcScan,
    ) -> IpamNetwork {
        let mut reservations = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.root.host_path(&data_dir)) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let Some(ip) = cni::reservation_ip(&file) else {
                    continue;
                };
                let (container_id, interface) = std::fs::read_to_string(e.path())
                    .map(|c| cni::parse_reservation(&c))
                    .unwrap_or((None, None));
                reservations.push((ip, container_id, interface));
            }
        }
        reservations.sort();
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
                    .filter(|(ip, _, _)| set.iter().any(|r| r.contains(*ip)))
                    .count() as u64,
            })
            .collect();
        let stale_known = procs.cgroups_readable;
        let stale = reservations
            .iter()
            .filter(|_| stale_known)
            .filter(|(_, id, _)| {
                id.as_ref()
                    .is_none_or(|id| !procs.live_containers.contains(id))
            })
            .map(|(ip, id, ifname)| Reservation {
                ip: ip.to_string(),
                container_id: id.clone(),
                interface: ifname.clone(),
            })
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_flags_are_hex() {
        assert_eq!(parse_sysfs_flags("0x1003\n"), Some(0x1003));
        assert_eq!(parse_sysfs_flags("0x1002"), Some(0x1002));
        assert_eq!(parse_sysfs_flags("4099"), Some(4099));
        assert_eq!(parse_sysfs_flags("0xzz"), None);
    }

    #[test]
    fn interfaces_carry_their_addresses_and_veth_peers() {
        let links = vec![
            Link {
                index: 1,
                name: "lo".into(),
                link: Some(1),
                ..Link::default()
            },
            Link {
                index: 3,
                name: "eth0.100".into(),
                kind: Some("vlan".into()),
                link: Some(2),
                ..Link::default()
            },
            Link {
                index: 2,
                name: "eth0".into(),
                kind: Some("veth".into()),
                mtu: Some(1450),
                link: Some(17),
                link_netnsid: Some(0),
                ..Link::default()
            },
        ];
        let addrs = vec![Addr {
            index: 2,
            address: "10.244.1.5".parse().unwrap(),
            prefix_len: 24,
        }];
        let got = interfaces_of(&links, &addrs);
        assert_eq!(got[0].peer_ifindex, None, "a link to itself is no peer");
        assert!(got[0].addresses.is_empty());
        assert_eq!(
            got[1].peer_ifindex, None,
            "a vlan's lower device is no peer"
        );
        assert_eq!(got[2].addresses, vec!["10.244.1.5/24".to_string()]);
        assert_eq!(got[2].peer_ifindex, Some(17));
    }

    #[test]
    fn pin_directories_reached_twice_through_a_link_are_read_once() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("run/netns")).unwrap();
        std::fs::write(rootfs.path().join("run/netns/cni-1234"), "").unwrap();
        std::fs::create_dir_all(rootfs.path().join("var")).unwrap();
        std::os::unix::fs::symlink("../run", rootfs.path().join("var/run")).unwrap();
        let root = HostRoot {
            rootfs: rootfs.path().to_path_buf(),
            ..HostRoot::default()
        };
        let c = NetnsCollector::new(root, false, &[], &[]);
        let scan = c.scan_pins();
        assert!(scan.any_dir);
        assert!(scan.by_ns.is_empty(), "a plain file pins no namespace");
        assert_eq!(
            scan.stale,
            vec!["/run/netns/cni-1234".to_string()],
            "shown as a host path, once"
        );
    }

    #[test]
    fn clock_ticks_become_durations() {
        assert_eq!(ticks_to(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to(0, 100), Duration::ZERO);
    }
}
