//! Every network interface: physical or virtual, link state, speed, duplex, counters,
//! and for physical NICs the link modes over ethtool netlink.

use super::host_links::HostLinks;
use super::Collector;
use crate::host::HostRoot;
use crate::kernel::ethtool::{EthtoolSocket, LinkModes};
use crate::kernel::net_class::{self, Duplex, NicCounters};
use crate::kernel::rtnetlink::{Link, LinkStats};
use crate::kernel::ReadError;
use crate::sample::{CollectError, Compacted, Sample, Unavailable};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NicClass {
    Physical,
    Virtual,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nic {
    pub name: Arc<str>,
    pub class: NicClass,
    /// veth, bridge, vxlan, ... from rtnetlink, or sysfs when netlink is off; the
    /// driver name for a physical NIC.
    pub kind: Option<Arc<str>>,
    pub admin_up: bool,
    pub operstate: Arc<str>,
    pub carrier: Option<bool>,
    pub speed_mbps: Option<u64>,
    pub duplex: Option<Duplex>,
    pub mtu: Option<u64>,
    pub counters: NicCounters,
    pub link_modes: Option<LinkModes>,
    /// Why link modes are missing for a physical NIC (driver does not answer, ...).
    pub link_modes_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NicSample {
    pub interfaces: Vec<Nic>,
    pub unavailable: Vec<Unavailable>,
}

impl Sample for NicSample {
    const COLLECTOR: &'static str = "nic";
    /// Older samples are read only by nic_errors, for how counters rose across the
    /// window.
    const THINNABLE: bool = true;

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// The physical NICs: nic_errors compares their counters over the window; every
    /// other reader (the other NIC rules, metrics, the report) takes the newest
    /// sample. A node's hundreds of veths are not kept.
    fn compact(&self) -> Compacted<Self> {
        Compacted::Part(NicSample {
            interfaces: self
                .interfaces
                .iter()
                .filter(|n| n.class == NicClass::Physical)
                .cloned()
                .collect(),
            unavailable: Vec::new(),
        })
    }
}

pub struct NicCollector {
    root: HostRoot,
    netlink: bool,
    ethtool: Option<EthtoolSocket>,
    /// This namespace's links, kept between collections (opened at the first).
    links: Option<HostLinks>,
}

impl NicCollector {
    pub fn new(root: HostRoot, netlink: bool) -> Self {
        Self {
            root,
            netlink,
            ethtool: None,
            links: None,
        }
    }

    /// Every link of the namespace nodediag runs in, with fresh counters. A failure
    /// drops the sockets, so the next collection starts over.
    fn dump_links(&mut self) -> Result<Vec<Link>, String> {
        let links = match &mut self.links {
            Some(l) => l,
            // nodediag's own namespace: the host's in a DaemonSet with hostNetwork.
            None => self.links.insert(
                HostLinks::open(Path::new(crate::kernel::netns::OWN), false)
                    .map_err(|e| e.to_string())?,
            ),
        };
        match links.links() {
            Ok((links, _)) => Ok(links),
            Err(e) => {
                self.links = None;
                Err(e.to_string())
            }
        }
    }
}

/// A virtual interface's kind from sysfs alone (netlink off): veths and some others
/// have no DEVTYPE, so they stay unnamed rather than guessed.
fn sysfs_kind(i: &net_class::SysInterface) -> Option<Arc<str>> {
    if i.physical {
        return i.driver.as_deref().map(Into::into);
    }
    if let Some(t) = &i.devtype {
        return Some(t.as_str().into());
    }
    if i.loopback {
        return Some("loopback".into());
    }
    if i.bridge {
        return Some("bridge".into());
    }
    i.tun.then(|| "tun".into())
}

impl Collector for NicCollector {
    type Sample = NicSample;

    /// With netlink, one RTM_GETLINK dump gives every interface's state and counters;
    /// sysfs and ethtool are read only for physical NICs (and for the rare virtual
    /// link rtnetlink gives no kind). Without it, or if the dump fails, every
    /// interface is read from sysfs.
    fn collect(&mut self) -> Result<NicSample, CollectError> {
        let mut unavailable = Vec::new();
        if self.netlink {
            check_sysfs(&self.root)?;
            self.open_ethtool(&mut unavailable);
            match self.dump_links() {
                Ok(links) => {
                    let interfaces = self.nics_of_links(links, &mut unavailable);
                    return Ok(NicSample {
                        interfaces,
                        unavailable,
                    });
                }
                Err(e) => unavailable.push(Unavailable::new(
                    "rtnetlink link kinds",
                    format!("{e}: interfaces are read from sysfs, kinds of virtual links too"),
                )),
            }
        }
        let interfaces = self.nics_from_sysfs(&mut unavailable)?;
        Ok(NicSample {
            interfaces,
            unavailable,
        })
    }
}

impl NicCollector {
    fn open_ethtool(&mut self, unavailable: &mut Vec<Unavailable>) {
        if self.ethtool.is_some() {
            return;
        }
        match EthtoolSocket::open() {
            Ok(s) => self.ethtool = Some(s),
            Err(e) => unavailable.push(Unavailable::new(
                "ethtool netlink",
                format!("{e}: link modes and the best supported speed are unknown"),
            )),
        }
    }

    fn link_modes(&mut self, name: &str) -> (Option<LinkModes>, Option<String>) {
        match &mut self.ethtool {
            Some(sock) => match sock.link_modes(name) {
                Ok(m) => (Some(m), None),
                Err(e) => (None, Some(e.to_string())),
            },
            None => (None, None),
        }
    }

    fn nics_of_links(
        &mut self,
        mut links: Vec<Link>,
        unavailable: &mut Vec<Unavailable>,
    ) -> Vec<Nic> {
        links.sort_by(|a, b| a.name.cmp(&b.name));
        let mut unreadable = Vec::new();
        let nics = links
            .into_iter()
            .map(|l| self.nic_of_link(l, &mut unreadable))
            .collect();
        unavailable.extend(unreadable.iter().map(Unavailable::unreadable));
        nics
    }

    fn nic_of_link(&mut self, l: Link, unreadable: &mut Vec<ReadError>) -> Nic {
        // A physical NIC sits on a device: the kernel says so since 5.16, sysfs always.
        // A veth never does, so a node's many veths cost no sysfs read at all.
        let physical = l.parent_device.is_some()
            || (l.kind.as_deref() != Some("veth") && net_class::has_device(&self.root, &l.name));
        let (class, kind, speed_mbps, duplex, (link_modes, link_modes_error)) = if physical {
            let attrs = net_class::read_physical(&self.root, &l.name, unreadable);
            let modes = self.link_modes(&l.name);
            let kind = attrs.driver.map(Into::into);
            (
                NicClass::Physical,
                kind,
                attrs.speed_mbps,
                attrs.duplex,
                modes,
            )
        } else {
            // The loopback device is the link without a kind every node has: its
            // hardware type names it, where sysfs took twenty files a round.
            let kind = l.kind.clone().or_else(|| {
                if l.link_type == net_class::ARPHRD_LOOPBACK {
                    Some("loopback".into())
                } else {
                    sysfs_kind(&net_class::read(&self.root, &l.name, unreadable))
                }
            });
            (NicClass::Virtual, kind, None, None, (None, None))
        };
        // No stats attribute: counters unknown, not 0.
        let stat = |f: fn(&LinkStats) -> u64| l.stats.as_ref().map(f);
        Nic {
            class,
            kind,
            admin_up: l.admin_up,
            operstate: l.operstate.unwrap_or_else(|| "unknown".into()),
            // sysfs answers for a link that is up only; keep its meaning.
            carrier: l.carrier.filter(|_| l.admin_up),
            speed_mbps,
            duplex,
            mtu: l.mtu.map(u64::from),
            counters: NicCounters {
                rx_packets: stat(|s| s.rx_packets),
                tx_packets: stat(|s| s.tx_packets),
                rx_errors: stat(|s| s.rx_errors),
                tx_errors: stat(|s| s.tx_errors),
                rx_dropped: stat(|s| s.rx_dropped),
                tx_dropped: stat(|s| s.tx_dropped),
            },
            link_modes,
            link_modes_error,
            name: l.name,
        }
    }

    fn nics_from_sysfs(
        &mut self,
        unavailable: &mut Vec<Unavailable>,
    ) -> Result<Vec<Nic>, CollectError> {
        let names = net_class::list(&self.root).map_err(class_dir_error)?;
        let mut interfaces = Vec::with_capacity(names.len());
        let mut unreadable = Vec::new();
        for name in names {
            let sys = net_class::read(&self.root, &name, &mut unreadable);
            let class = if sys.physical {
                NicClass::Physical
            } else {
                NicClass::Virtual
            };
            let (link_modes, link_modes_error) = match class {
                NicClass::Physical => self.link_modes(&name),
                NicClass::Virtual => (None, None),
            };
            interfaces.push(Nic {
                kind: sysfs_kind(&sys),
                class,
                admin_up: sys.admin_up,
                operstate: sys.operstate.into(),
                carrier: sys.carrier,
                // Virtual links report made-up speeds (veth says 10000): only a
                // physical NIC's speed means anything.
                speed_mbps: sys.speed_mbps.filter(|_| class == NicClass::Physical),
                duplex: sys.duplex.filter(|_| class == NicClass::Physical),
                mtu: sys.mtu,
                counters: sys.counters,
                link_modes,
                link_modes_error,
                name: name.into(),
            });
        }
        unavailable.extend(unreadable.iter().map(Unavailable::unreadable));
        Ok(interfaces)
    }
}

/// The interfaces' directory must exist even when netlink lists them: physical NICs
/// are told and read there.
fn check_sysfs(root: &HostRoot) -> Result<(), CollectError> {
    let dir = root.sys(&["class", "net"]);
    match std::fs::metadata(&dir) {
        Ok(_) => Ok(()),
        Err(source) => Err(class_dir_error(ReadError { path: dir, source })),
    }
}

fn class_dir_error(e: ReadError) -> CollectError {
    if e.is_not_found() {
        CollectError::Unavailable(Unavailable::new(
            "network interfaces",
            format!(
                "{} does not exist: is sysfs mounted there? (--path.sysfs)",
                e.path.display()
            ),
        ))
    } else {
        e.into()
    }
}
