//! The conntrack table itself, dumped over ctnetlink (`IPCTNL_MSG_CT_GET` with
//! NLM_F_DUMP), one entry at a time: each entry is parsed and handed to a callback,
//! never kept, so a table of 262,144 entries costs one 64 KiB receive buffer. A
//! budget (entries, deadline) stops the dump cleanly: the socket, still holding the
//! rest of the dump, is dropped, which ends the dump in the kernel.
//!
//! Needs CAP_NET_ADMIN; reads the network namespace of the calling thread.

use super::netlink::{self, NetlinkSocket, NETLINK_NETFILTER, NLM_F_DUMP};
use super::nfnetlink::{self, NFGENMSG_LEN};
use serde::Serialize;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// `enum ip_conntrack_status` bits (uapi nf_conntrack_common.h).
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
pub const IPS_ASSURED: u32 = 1 << 2;

/// Which address families to dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFamily {
    Ipv4,
    Ipv6,
    /// AF_UNSPEC: the kernel dumps every family in one pass.
    All,
}

impl DumpFamily {
    fn af(self) -> u8 {
        match self {
            DumpFamily::Ipv4 => libc::AF_INET as u8,
            DumpFamily::Ipv6 => libc::AF_INET6 as u8,
            DumpFamily::All => libc::AF_UNSPEC as u8,
        }
    }
}

/// ICMP and ICMPv6 identify a flow by echo id, type and code instead of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IcmpKey {
    pub id: u16,
    pub kind: u8,
    pub code: u8,
}

/// One direction of a connection as conntrack keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP, ...
    pub proto: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp: Option<IcmpKey>,
}

/// TCP connection tracking states (`enum tcp_conntrack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
    Unknown,
}

impl TcpState {
    fn from_u8(v: u8) -> TcpState {
        match v {
            0 => TcpState::None,
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            _ => TcpState::Unknown,
        }
    }
}

/// One conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConntrackEntry {
    pub original: Tuple,
    pub reply: Option<Tuple>,
    /// `IPS_*` bits.
    pub status: u32,
    pub tcp_state: Option<TcpState>,
    /// Seconds until the entry expires.
    pub timeout_secs: Option<u32>,
    pub mark: Option<u32>,
    pub zone: Option<u16>,
}

impl ConntrackEntry {
    /// The other side answered at least once.
    pub fn seen_reply(&self) -> bool {
        self.status & IPS_SEEN_REPLY != 0
    }

    /// Conntrack will not evict it early when the table is full (early_drop spares it).
    pub fn assured(&self) -> bool {
        self.status & IPS_ASSURED != 0
    }
}

#[cfg(test)]
impl ConntrackEntry {
    /// An unanswered UDP query from `src` to a cluster DNS address: the entry the
    /// ranking tests above this layer fill tables with.
    pub fn dns_query_from(src: &str) -> ConntrackEntry {
        ConntrackEntry {
            original: Tuple {
                src: src.parse().unwrap(),
                dst: "10.96.0.10".parse().unwrap(),
                proto: 17,
                src_port: Some(40000),
                dst_port: Some(53),
                icmp: None,
            },
            reply: None,
            status: 0,
            tcp_state: None,
            timeout_secs: None,
            mark: None,
            zone: None,
        }
    }
}

/// How much a dump may cost before it is stopped.
#[derive(Debug, Clone, Copy)]
pub struct DumpBudget {
    pub max_entries: u64,
    pub deadline: Instant,
}

impl DumpBudget {
    pub fn new(max_entries: u64, max_duration: Duration) -> DumpBudget {
        DumpBudget {
            max_entries,
            deadline: Instant::now() + max_duration,
        }
    }
}

/// Why a dump stopped before the end of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpCut {
    MaxEntries,
    Deadline,
}

/// What a dump did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DumpSummary {
    /// Entries handed to the callback.
    pub entries: u64,
    /// Messages that were not conntrack entries the parser understood.
    pub skipped: u64,
    /// None when the whole table was read.
    pub cut: Option<DumpCut>,
    pub elapsed: Duration,
}

/// Checking the clock every entry would cost more than parsing some of them.
const DEADLINE_CHECK_EVERY: u64 = 64;

/// Dumps the table of the calling thread's network namespace, calling `each` for
/// every entry until the end of the table or the budget, whichever comes first.
pub fn dump(
    family: DumpFamily,
    budget: DumpBudget,
    mut each: impl FnMut(&ConntrackEntry),
) -> io::Result<DumpSummary> {
    let started = Instant::now();
    let mut summary = DumpSummary {
        entries: 0,
        skipped: 0,
        cut: None,
        elapsed: Duration::ZERO,
    };
    if budget.max_entries == 0 {
        summary.cut = Some(DumpCut::MaxEntries);
        return Ok(summary);
    }
    let mut sock = NetlinkSocket::open(NETLINK_NETFILTER)?;
    let request = nfnetlink::nfgenmsg(family.af(), 0);
    // Whether it stopped early is recorded in `summary.cut` by the callback.
    let _ = sock.request_each(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_DUMP,
        &request,
        |kind, payload| {
            // Entries come as IPCTNL_MSG_CT_NEW messages.
            let entry = (kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW)
                .then(|| parse_entry(payload))
                .flatten();
            match entry {
                Some(e) => {
                    each(&e);
                    summary.entries += 1;
                }
                None => summary.skipped += 1,
            }
            if summary.entries >= budget.max_entries {
                summary.cut = Some(DumpCut::MaxEntries);
                return ControlFlow::Break(());
            }
            // The first message, then every so many: a deadline already past
            // stops the dump after one entry, not after a batch of them.
            let seen = summary.entries + summary.skipped;
            if seen % DEADLINE_CHECK_EVERY == 1 && Instant::now() >= budget.deadline {
                summary.cut = Some(DumpCut::Deadline);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    )?;
    // The socket, with whatever the kernel still had to send, is dropped here.
    drop(sock);
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Parses one IPCTNL_MSG_CT_NEW payload (nfgenmsg, then attributes). None when it
/// has no original tuple with both addresses.
pub fn parse_entry(payload: &[u8]) -> Option<ConntrackEntry> {
    let mut original = None;
    let mut entry = ConntrackEntry {
        original: Tuple {
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            proto: 0,
            src_port: None,
            dst_port: None,
            icmp: None,
        },
        reply: None,
        status: 0,
        tcp_state: None,
        timeout_secs: None,
        mark: None,
        zone: None,
    };
    for (kind, v) in netlink::attrs(payload.get(NFGENMSG_LEN..)?) {
        match kind {
            CTA_TUPLE_ORIG => original = parse_tuple(v),
            CTA_TUPLE_REPLY => entry.reply = parse_tuple(v),
            CTA_STATUS => entry.status = netlink::u32_be(v).unwrap_or(0),
            CTA_TIMEOUT => entry.timeout_secs = netlink::u32_be(v),
            CTA_MARK => entry.mark = netlink::u32_be(v),
            CTA_ZONE => entry.zone = u16_be(v),
            CTA_PROTOINFO => entry.tcp_state = parse_tcp_state(v),
            _ => {}
        }
    }
    entry.original = original?;
    Some(entry)
}

fn u16_be(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst) = (None, None);
    let mut t = Tuple {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        proto: 0,
        src_port: None,
        dst_port: None,
        icmp: None,
    };
    for (kind, v) in netlink::attrs(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, a) in netlink::attrs(v) {
                    match k {
                        CTA_IP_V4_SRC => src = v4(a),
                        CTA_IP_V4_DST => dst = v4(a),
                        CTA_IP_V6_SRC => src = v6(a),
                        CTA_IP_V6_DST => dst = v6(a),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                let mut icmp = IcmpKey {
                    id: 0,
                    kind: 0,
                    code: 0,
                };
                let mut is_icmp = false;
                for (k, p) in netlink::attrs(v) {
                    match k {
                        CTA_PROTO_NUM => t.proto = *p.first()?,
                        CTA_PROTO_SRC_PORT => t.src_port = u16_be(p),
                        CTA_PROTO_DST_PORT => t.dst_port = u16_be(p),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                            icmp.id = u16_be(p)?;
                            is_icmp = true;
                        }
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            icmp.kind = *p.first()?;
                            is_icmp = true;
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            icmp.code = *p.first()?;
                            is_icmp = true;
                        }
                        _ => {}
                    }
                }
                t.icmp = is_icmp.then_some(icmp);
            }
            _ => {}
        }
    }
    t.src = src?;
    t.dst = dst?;
    Some(t)
}

fn v4(b: &[u8]) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(
        <[u8; 4]>::try_from(b.get(..4)?).ok()?,
    )))
}

fn v6(b: &[u8]) -> Option<IpAddr> {
    Some(IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(b.get(..16)?).ok()?,
    )))
}

fn parse_tcp_state(protoinfo: &[u8]) -> Option<TcpState> {
    let (_, tcp) = netlink::attrs(protoinfo).find(|(k, _)| *k == CTA_PROTOINFO_TCP)?;
    let (_, state) = netlink::attrs(tcp).find(|(k, _)| *k == CTA_PROTOINFO_TCP_STATE)?;
    Some(TcpState::from_u8(*state.first()?))
}

/// Builds the payload of an IPCTNL_MSG_CT_NEW message as the kernel sends it in a
/// dump, which is also what it takes to create an entry: for the parser's tests and
/// the bench's table filler (examples/conntrack_fill.rs).
#[doc(hidden)]
pub fn encode_entry(e: &ConntrackEntry) -> Vec<u8> {
    let family = match e.original.src {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    };
    let mut p = nfnetlink::nfgenmsg(family, 0).to_vec();
    let tuple = |p: &mut Vec<u8>, kind: u16, t: &Tuple| {
        netlink::push_nested(p, kind, |b| {
            netlink::push_nested(b, CTA_TUPLE_IP, |ip| match (t.src, t.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    netlink::push_attr(ip, CTA_IP_V4_SRC, &s.octets());
                    netlink::push_attr(ip, CTA_IP_V4_DST, &d.octets());
                }
                (s, d) => {
                    let six = |a: IpAddr| match a {
                        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                        IpAddr::V6(a) => a.octets(),
                    };
                    netlink::push_attr(ip, CTA_IP_V6_SRC, &six(s));
                    netlink::push_attr(ip, CTA_IP_V6_DST, &six(d));
                }
            });
            netlink::push_nested(b, CTA_TUPLE_PROTO, |pr| {
                netlink::push_attr(pr, CTA_PROTO_NUM, &[t.proto]);
                if let Some(port) = t.src_port {
                    netlink::push_attr(pr, CTA_PROTO_SRC_PORT, &port.to_be_bytes());
                }
                if let Some(port) = t.dst_port {
                    netlink::push_attr(pr, CTA_PROTO_DST_PORT, &port.to_be_bytes());
                }
                if let Some(i) = t.icmp {
                    netlink::push_attr(pr, CTA_PROTO_ICMP_ID, &i.id.to_be_bytes());
                    netlink::push_attr(pr, CTA_PROTO_ICMP_TYPE, &[i.kind]);
                    netlink::push_attr(pr, CTA_PROTO_ICMP_CODE, &[i.code]);
                }
            });
        });
    };
    tuple(&mut p, CTA_TUPLE_ORIG, &e.original);
    if let Some(r) = &e.reply {
        tuple(&mut p, CTA_TUPLE_REPLY, r);
    }
    netlink::push_attr(&mut p, CTA_STATUS, &e.status.to_be_bytes());
    if let Some(t) = e.timeout_secs {
        netlink::push_attr(&mut p, CTA_TIMEOUT, &t.to_be_bytes());
    }
    if let Some(m) = e.mark {
        netlink::push_attr(&mut p, CTA_MARK, &m.to_be_bytes());
    }
    if let Some(z) = e.zone {
        netlink::push_attr(&mut p, CTA_ZONE, &z.to_be_bytes());
    }
    if let Some(s) = e.tcp_state {
        netlink::push_nested(&mut p, CTA_PROTOINFO, |pi| {
            netlink::push_nested(pi, CTA_PROTOINFO_TCP, |tcp| {
                netlink::push_attr(tcp, CTA_PROTOINFO_TCP_STATE, &[s as u8]);
            });
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_dns() -> ConntrackEntry {
        ConntrackEntry {
            original: Tuple {
                src: "10.244.1.7".parse().unwrap(),
                dst: "10.96.0.10".parse().unwrap(),
                proto: 17,
                src_port: Some(40000),
                dst_port: Some(53),
                icmp: None,
            },
            reply: Some(Tuple {
                src: "10.244.2.3".parse().unwrap(),
                dst: "10.244.1.7".parse().unwrap(),
                proto: 17,
                src_port: Some(53),
                dst_port: Some(40000),
                icmp: None,
            }),
            status: 0x8 | 0x20, // confirmed, DNAT, no reply yet
            tcp_state: None,
            timeout_secs: Some(29),
            mark: Some(0x4000),
            zone: None,
        }
    }

    #[test]
    fn an_ipv4_udp_entry_round_trips() {
        let e = udp_dns();
        let got = parse_entry(&encode_entry(&e)).unwrap();
        assert_eq!(got, e);
        assert!(!got.seen_reply());
        assert!(!got.assured());
    }

    #[test]
    fn an_ipv6_tcp_entry_keeps_its_state_and_zone() {
        let e = ConntrackEntry {
            original: Tuple {
                src: "fd00::7".parse().unwrap(),
                dst: "fd00::1".parse().unwrap(),
                proto: 6,
                src_port: Some(51234),
                dst_port: Some(443),
                icmp: None,
            },
            reply: None,
            status: IPS_SEEN_REPLY | IPS_ASSURED | 0x8,
            tcp_state: Some(TcpState::TimeWait),
            timeout_secs: None,
            mark: None,
            zone: Some(7),
        };
        let got = parse_entry(&encode_entry(&e)).unwrap();
        assert_eq!(got, e);
        assert!(got.seen_reply() && got.assured());
    }

    #[test]
    fn icmp_has_id_type_and_code_instead_of_ports() {
        let mut e = udp_dns();
        e.original.proto = 1;
        e.original.src_port = None;
        e.original.dst_port = None;
        e.original.icmp = Some(IcmpKey {
            id: 0x1234,
            kind: 8,
            code: 0,
        });
        e.reply = None;
        let got = parse_entry(&encode_entry(&e)).unwrap();
        assert_eq!(got.original.icmp, e.original.icmp);
        assert_eq!(got.original.dst_port, None);
    }

    #[test]
    fn entries_without_an_original_tuple_or_addresses_are_skipped() {
        assert!(parse_entry(&[2, 0, 0, 0]).is_none());
        assert!(parse_entry(&[2]).is_none());
        let mut p = nfnetlink::nfgenmsg(2, 0).to_vec();
        netlink::push_nested(&mut p, CTA_TUPLE_ORIG, |b| {
            netlink::push_nested(b, CTA_TUPLE_PROTO, |pr| {
                netlink::push_attr(pr, CTA_PROTO_NUM, &[17]);
            });
        });
        assert!(parse_entry(&p).is_none(), "no addresses");
        // Truncated addresses and a truncated status are not panics.
        let mut p = nfnetlink::nfgenmsg(2, 0).to_vec();
        netlink::push_nested(&mut p, CTA_TUPLE_ORIG, |b| {
            netlink::push_nested(b, CTA_TUPLE_IP, |ip| {
                netlink::push_attr(ip, CTA_IP_V4_SRC, &[10, 0]);
                netlink::push_attr(ip, CTA_IP_V6_DST, &[0; 8]);
            });
        });
        netlink::push_attr(&mut p, CTA_STATUS, &[1]);
        assert!(parse_entry(&p).is_none());
    }

    #[test]
    fn unknown_tcp_states_are_kept_as_unknown() {
        assert_eq!(TcpState::from_u8(3), TcpState::Established);
        assert_eq!(TcpState::from_u8(42), TcpState::Unknown);
    }

    #[test]
    fn a_zero_entry_budget_is_cut_before_any_syscall() {
        let s = dump(
            DumpFamily::All,
            DumpBudget::new(0, Duration::from_secs(1)),
            |_| panic!("no entry may be read"),
        )
        .unwrap();
        assert_eq!(s.cut, Some(DumpCut::MaxEntries));
        assert_eq!(s.entries, 0);
    }
}
