//! Link modes over ethtool netlink (`ETHTOOL_MSG_LINKMODES_GET`, kernel 5.6+): what a
//! NIC supports, what it advertises, what the partner advertises, and autonegotiation.
//! Bitsets are requested in verbose form so each mode comes with its kernel name
//! ("10000baseT/Full"), from which the speed is read; no mode table to keep in sync.

use super::netlink::{self, NetlinkSocket, NETLINK_GENERIC, NLA_F_NESTED};
use serde::Serialize;
use std::io;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const ETHTOOL_GENL_VERSION: u8 = 1;
const ETHTOOL_MSG_LINKMODES_GET: u8 = 4;
const ETHTOOL_A_LINKMODES_HEADER: u16 = 1;
const ETHTOOL_A_LINKMODES_AUTONEG: u16 = 2;
const ETHTOOL_A_LINKMODES_OURS: u16 = 3;
const ETHTOOL_A_LINKMODES_PEER: u16 = 4;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BIT_VALUE: u16 = 3;
const GENLMSG_LEN: usize = 4;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkModes {
    pub autoneg: Option<bool>,
    pub supported: Vec<String>,
    pub advertised: Vec<String>,
    pub partner_advertised: Vec<String>,
}

impl LinkModes {
    /// The fastest full-duplex speed both ends can do, given what we advertise (a
    /// mode we do not advertise was deliberately left out) and, when known, what the
    /// partner advertises.
    pub fn best_full_duplex_mbps(&self) -> Option<u64> {
        let ours = if self.advertised.is_empty() {
            &self.supported
        } else {
            &self.advertised
        };
        ours.iter()
            .filter(|m| self.partner_advertised.is_empty() || self.partner_advertised.contains(m))
            .filter_map(|m| mode_speed_mbps(m).filter(|_| m.ends_with("/Full")))
            .max()
    }
}

/// "25000baseSR/Full" -> 25000. Non-speed bits ("Autoneg", "TP", "Pause") give None.
pub fn mode_speed_mbps(mode: &str) -> Option<u64> {
    let digits = mode.split("base").next()?;
    if digits.len() == mode.len() {
        return None;
    }
    digits.parse().ok()
}

/// A generic netlink socket bound to the ethtool family, reused across interfaces.
pub struct EthtoolSocket {
    sock: NetlinkSocket,
    family: u16,
}

impl EthtoolSocket {
    pub fn open() -> io::Result<Self> {
        let mut sock = NetlinkSocket::open(NETLINK_GENERIC)?;
        let mut req = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
        netlink::push_attr(&mut req, CTRL_ATTR_FAMILY_NAME, b"ethtool\0");
        let replies = sock.request(GENL_ID_CTRL, 0, &req).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "kernel has no ethtool netlink family (needs 5.6+)",
                )
            } else {
                e
            }
        })?;
        let family = replies
            .iter()
            .flat_map(|m| netlink::attrs(m.payload.get(GENLMSG_LEN..).unwrap_or_default()))
            .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, v)| netlink::u16_ne(v))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ethtool family id"))?;
        Ok(Self { sock, family })
    }

    pub fn link_modes(&mut self, ifname: &str) -> io::Result<LinkModes> {
        let mut header = Vec::new();
        let mut name = ifname.as_bytes().to_vec();
        name.push(0);
        netlink::push_attr(&mut header, ETHTOOL_A_HEADER_DEV_NAME, &name);
        let mut req = vec![ETHTOOL_MSG_LINKMODES_GET, ETHTOOL_GENL_VERSION, 0, 0];
        netlink::push_attr(&mut req, ETHTOOL_A_LINKMODES_HEADER | NLA_F_NESTED, &header);
        let replies = self.sock.request(self.family, 0, &req)?;
        let reply = replies
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty ethtool reply"))?;
        Ok(parse_link_modes(
            reply.payload.get(GENLMSG_LEN..).unwrap_or_default(),
        ))
    }
}

pub fn parse_link_modes(attrs: &[u8]) -> LinkModes {
    let mut modes = LinkModes::default();
    for (kind, value) in netlink::attrs(attrs) {
        match kind {
            ETHTOOL_A_LINKMODES_AUTONEG => modes.autoneg = value.first().map(|&v| v == 1),
            ETHTOOL_A_LINKMODES_OURS => {
                for (name, set) in bitset_bits(value) {
                    if set {
                        modes.advertised.push(name.clone());
                    }
                    modes.supported.push(name);
                }
            }
            ETHTOOL_A_LINKMODES_PEER => {
                modes.partner_advertised = bitset_bits(value)
                    .into_iter()
                    .filter(|(_, set)| *set)
                    .map(|(n, _)| n)
                    .collect();
            }
            _ => {}
        }
    }
    modes
}

/// A verbose bitset with a mask lists each bit of the mask by name, flagged when it is
/// also set in the value: for OURS, mask = supported and value = advertised.
fn bitset_bits(bitset: &[u8]) -> Vec<(String, bool)> {
    netlink::attrs(bitset)
        .filter(|(k, _)| *k == ETHTOOL_A_BITSET_BITS)
        .flat_map(|(_, bits)| netlink::attrs(bits))
        .filter(|(k, _)| *k == ETHTOOL_A_BITSET_BITS_BIT)
        .filter_map(|(_, bit)| {
            let mut name = None;
            let mut set = false;
            for (k, v) in netlink::attrs(bit) {
                match k {
                    ETHTOOL_A_BITSET_BIT_NAME => name = Some(netlink::string(v)),
                    ETHTOOL_A_BITSET_BIT_VALUE => set = true,
                    _ => {}
                }
            }
            name.map(|n| (n, set))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::push_attr;

    fn bitset(bits: &[(&str, bool)]) -> Vec<u8> {
        let mut list = Vec::new();
        for (i, (name, set)) in bits.iter().enumerate() {
            let mut bit = Vec::new();
            push_attr(&mut bit, 1, &(i as u32).to_ne_bytes());
            push_attr(
                &mut bit,
                ETHTOOL_A_BITSET_BIT_NAME,
                format!("{name}\0").as_bytes(),
            );
            if *set {
                push_attr(&mut bit, ETHTOOL_A_BITSET_BIT_VALUE, &[]);
            }
            push_attr(&mut list, ETHTOOL_A_BITSET_BITS_BIT | NLA_F_NESTED, &bit);
        }
        let mut out = Vec::new();
        push_attr(&mut out, ETHTOOL_A_BITSET_BITS | NLA_F_NESTED, &list);
        out
    }

    #[test]
    fn supported_advertised_and_partner_modes_are_read_by_name() {
        let mut msg = Vec::new();
        push_attr(&mut msg, ETHTOOL_A_LINKMODES_AUTONEG, &[1]);
        push_attr(
            &mut msg,
            ETHTOOL_A_LINKMODES_OURS | NLA_F_NESTED,
            &bitset(&[
                ("1000baseT/Full", true),
                ("10000baseT/Full", true),
                ("100baseT/Half", true),
                ("Autoneg", true),
            ]),
        );
        push_attr(
            &mut msg,
            ETHTOOL_A_LINKMODES_PEER | NLA_F_NESTED,
            &bitset(&[("1000baseT/Full", true), ("10000baseT/Full", true)]),
        );
        let modes = parse_link_modes(&msg);
        assert_eq!(modes.autoneg, Some(true));
        assert_eq!(modes.supported.len(), 4);
        assert_eq!(modes.partner_advertised.len(), 2);
        assert_eq!(modes.best_full_duplex_mbps(), Some(10000));
    }

    #[test]
    fn a_partner_limited_to_1g_caps_the_best_speed() {
        let modes = LinkModes {
            autoneg: Some(true),
            supported: vec!["1000baseT/Full".into(), "10000baseT/Full".into()],
            advertised: vec!["1000baseT/Full".into(), "10000baseT/Full".into()],
            partner_advertised: vec!["1000baseT/Full".into()],
        };
        assert_eq!(modes.best_full_duplex_mbps(), Some(1000));
    }

    #[test]
    fn mode_names_give_speeds() {
        assert_eq!(mode_speed_mbps("25000baseSR/Full"), Some(25000));
        assert_eq!(mode_speed_mbps("10baseT/Half"), Some(10));
        assert_eq!(mode_speed_mbps("Autoneg"), None);
        assert_eq!(mode_speed_mbps("Backplane"), None);
    }
}
