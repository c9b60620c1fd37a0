//! What the netns collector hands the store: every network namespace with its pod,
//! every host-side veth with where its peer is, host-local IPAM use, and the uplink
//! and overlays the MTU rule compares.

use crate::collect::pods::{Attribution, Name};
use crate::kernel::rtnetlink::LinkStats;
use crate::sample::{Compacted, Sample, Unavailable};
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

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
    pub name: Arc<str>,
    pub kind: Option<Arc<str>>,
    pub mtu: Option<u32>,
    pub operstate: Option<Arc<str>>,
    /// `10.244.1.5/24` style.
    pub addresses: Arc<[String]>,
    /// For a veth: its peer's ifindex (in the host for a pod's eth0).
    pub peer_ifindex: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetnsInfo {
    pub inode: u64,
    /// The host's own namespace (the one PID 1 is in).
    pub host: bool,
    /// Pin paths as seen on the host (`/run/netns/cni-...`).
    /// Shared with the veth pairs whose peer is in the namespace.
    pub pins: Arc<[String]>,
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
    /// Shared with the collector, which keeps a namespace's interfaces until a
    /// change inside it is announced.
    pub interfaces: Arc<[NetnsInterface]>,
    /// Why the interfaces could not be read (netlink off, namespace gone meanwhile).
    pub interfaces_error: Option<String>,
    /// Host-side veths whose peer is in here.
    pub host_veths: Vec<Arc<str>>,
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
    /// Host or live: something running holds the other end.
    pub fn is_live(self) -> bool {
        matches!(self, PeerState::Host | PeerState::Live)
    }

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
    pub name: Arc<str>,
    pub index: u32,
    pub mtu: Option<u32>,
    pub admin_up: bool,
    pub operstate: Option<Arc<str>>,
    /// The bridge (or other master) it is enslaved to.
    pub master: Option<Arc<str>>,
    pub stats: Option<LinkStats>,
    pub peer_ifindex: Option<u32>,
    pub peer_netnsid: Option<i32>,
    pub peer_netns: Option<u64>,
    pub peer_state: PeerState,
    pub peer_name: Option<Arc<str>>,
    pub peer_mtu: Option<u32>,
    pub peer_addresses: Arc<[String]>,
    pub peer_pins: Arc<[String]>,
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

/// A tunnel device that is up: its kind adds encapsulation to every packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlay {
    pub name: String,
    pub kind: String,
    pub mtu: Option<u32>,
    /// The bytes the MTU rule counts for this kind, shown here so the API says it.
    pub overhead_bytes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reservation {
    pub ip: IpAddr,
    pub container_id: Option<Name>,
    pub interface: Option<Name>,
    /// The pod whose sandbox (the reservation's container) runs on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Attribution>,
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
    /// Reservations whose container runs, with its pod (bounded by the range).
    pub owned: Vec<Reservation>,
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

    /// The netns rules, metrics, report and API all read the newest sample only
    /// (what leaked and since when is in the sample itself).
    fn compact(&self) -> Compacted<Self> {
        Compacted::Nothing
    }
}

impl NetnsSample {
    pub fn namespace(&self, inode: u64) -> Option<&NetnsInfo> {
        self.namespaces.iter().find(|n| n.inode == inode)
    }
}
