//! Every network interface: physical or virtual, link state, speed, duplex, counters,
//! and for physical NICs the link modes over ethtool netlink.

use super::Collector;
use crate::host::HostRoot;
use crate::kernel::ethtool::{EthtoolSocket, LinkModes};
use crate::kernel::net_class::{self, Duplex, NicCounters};
use crate::kernel::rtnetlink;
use crate::sample::{CollectError, Sample, Unavailable};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NicClass {
    Physical,
    Virtual,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nic {
    pub name: String,
    pub class: NicClass,
    /// veth, bridge, vxlan, ... from rtnetlink, or sysfs when netlink is off; the
    /// driver name for a physical NIC.
    pub kind: Option<String>,
    pub admin_up: bool,
    pub operstate: String,
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

    fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }
}

pub struct NicCollector {
    root: HostRoot,
    netlink: bool,
    ethtool: Option<EthtoolSocket>,
}

impl NicCollector {
    pub fn new(root: HostRoot, netlink: bool) -> Self {
        Self {
            root,
            netlink,
            ethtool: None,
        }
    }
}

/// A virtual interface's kind from sysfs alone (netlink off): veths and some others
/// have no DEVTYPE, so they stay unnamed rather than guessed.
fn sysfs_kind(i: &net_class::SysInterface) -> Option<String> {
    if i.physical {
        return i.driver.clone();
    }
    if let Some(t) = &i.devtype {
        return Some(t.clone());
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

    fn collect(&mut self) -> Result<NicSample, CollectError> {
        let names = net_class::list(&self.root).map_err(|e| {
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
        })?;
        let mut unavailable = Vec::new();
        let mut kinds: HashMap<String, String> = HashMap::new();
        if self.netlink {
            match rtnetlink::dump_links() {
                Ok(links) => {
                    kinds = links
                        .into_iter()
                        .filter_map(|l| Some((l.name, l.kind?)))
                        .collect()
                }
                Err(e) => unavailable.push(Unavailable::new(
                    "rtnetlink link kinds",
                    format!("{e}: kinds of virtual links come from sysfs only"),
                )),
            }
            if self.ethtool.is_none() {
                match EthtoolSocket::open() {
                    Ok(s) => self.ethtool = Some(s),
                    Err(e) => unavailable.push(Unavailable::new(
                        "ethtool netlink",
                        format!("{e}: link modes and the best supported speed are unknown"),
                    )),
                }
            }
        }
        let mut interfaces = Vec::with_capacity(names.len());
        for name in names {
            let sys = net_class::read(&self.root, &name);
            let class = if sys.physical {
                NicClass::Physical
            } else {
                NicClass::Virtual
            };
            let (link_modes, link_modes_error) = match (&mut self.ethtool, class) {
                (Some(sock), NicClass::Physical) => match sock.link_modes(&name) {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                _ => (None, None),
            };
            let kind = match class {
                NicClass::Physical => sysfs_kind(&sys),
                NicClass::Virtual => kinds.remove(&name).or_else(|| sysfs_kind(&sys)),
            };
            interfaces.push(Nic {
                kind,
                class,
                admin_up: sys.admin_up,
                operstate: sys.operstate,
                carrier: sys.carrier,
                // Virtual links report made-up speeds (veth says 10000): only a
                // physical NIC's speed means anything.
                speed_mbps: sys.speed_mbps.filter(|_| class == NicClass::Physical),
                duplex: sys.duplex.filter(|_| class == NicClass::Physical),
                mtu: sys.mtu,
                counters: sys.counters,
                link_modes,
                link_modes_error,
                name,
            });
        }
        Ok(NicSample {
            interfaces,
            unavailable,
        })
    }
}
