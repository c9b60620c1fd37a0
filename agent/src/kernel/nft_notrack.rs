//! The agent's own nftables table, `inet nodediag`, which exempts TCP to and from its
//! listen ports from connection tracking, so the agent still answers while the
//! conntrack table is full and the kernel drops every other new flow.
//!
//! Only that table is ever touched: kube-proxy's and the CNI's tables are left alone.
//! Two base chains of type filter sit at raw priority (-300, before conntrack at
//! -200), with three rules per port:
//!
//! - prerouting: `tcp dport PORT fib daddr type local notrack`, a remote client's
//!   packets (a pod's too) to the node itself;
//! - output: the same, a loopback client's packets (output is where conntrack would
//!   first see them);
//! - output: `tcp sport PORT notrack`, the agent's answers, which conntrack would
//!   otherwise pick up mid-stream (`nf_conntrack_tcp_loose`) as new entries.
//!
//! `fib daddr type local` keeps the exemption to traffic for this host: without it,
//! pod traffic the node forwards or NATs to the same port elsewhere (another host's
//! service on that port, a ClusterIP on it) would lose its conntrack entry and with it
//! its NAT. The price: a connection to the agent cannot be NATed on this node either
//! (a ClusterIP or NodePort Service in front of it), since its answers are untracked;
//! reach it at the node's address, as the headless Service and the ServiceMonitor do.
//!
//! Spoken over nfnetlink directly (see `nfnetlink`), so the agent needs no `nft`
//! binary or libnftnl at run time. Runs in the calling thread's network namespace.

use super::netlink::{self, NetlinkSocket, NETLINK_NETFILTER, NLM_F_CREATE, NLM_F_DUMP};
use super::nfnetlink::{self, BatchError, BatchMessage, NFGENMSG_LEN};
use serde::Serialize;
use std::io;

pub const TABLE: &str = "nodediag";
/// NF_IP_PRI_RAW: before conntrack (-200) looks at the packet.
pub const RAW_PRIORITY: i32 = -300;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NLM_F_APPEND: u16 = 0x800;
const NFPROTO_INET: u8 = 1;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_HANDLE: u16 = 4;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_REG_1: u32 = 1;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const NF_ACCEPT: u32 = 1;
const IPPROTO_TCP: u8 = 6;
/// nft's user-data TLV type for a table comment (libnftnl NFTNL_UDATA_TABLE_COMMENT).
const UDATA_TABLE_COMMENT: u8 = 0;
const COMMENT: &str = "nodediag: its HTTP port stays reachable while the conntrack table is full";

/// The netfilter hooks the table's chains sit on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Prerouting,
    Output,
}

impl Hook {
    const ALL: [Hook; 2] = [Hook::Prerouting, Hook::Output];

    fn number(self) -> u32 {
        match self {
            Hook::Prerouting => 0, // NF_INET_PRE_ROUTING
            Hook::Output => 3,     // NF_INET_LOCAL_OUT
        }
    }

    fn from_number(n: u32) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.number() == n)
    }

    pub fn chain_name(self) -> &'static str {
        match self {
            Hook::Prerouting => "notrack_prerouting",
            Hook::Output => "notrack_output",
        }
    }
}

/// Which port of the TCP header a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortSide {
    /// `tcp dport`: packets to the agent.
    Dport,
    /// `tcp sport`: the agent's answers.
    Sport,
}

/// The rules installed for each port: (hook, port side, only to a local address).
const RULES: [(Hook, PortSide, bool); 3] = [
    (Hook::Prerouting, PortSide::Dport, true),
    (Hook::Output, PortSide::Dport, true),
    (Hook::Output, PortSide::Sport, false),
];

impl PortSide {
    fn offset(self) -> u32 {
        match self {
            PortSide::Sport => 0,
            PortSide::Dport => 2,
        }
    }
}

/// A base chain of the table as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    pub name: String,
    pub hook: Option<Hook>,
    pub priority: Option<i32>,
    pub chain_type: Option<String>,
}

/// One `tcp dport|sport PORT [fib daddr type local] notrack` rule read back from the
/// kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotrackRule {
    pub chain: String,
    pub side: PortSide,
    pub port: u16,
    /// With `fib daddr type local`: only packets addressed to this host.
    pub to_local_only: bool,
    pub handle: Option<u64>,
}

/// What the `inet nodediag` table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableStatus {
    /// The kernel's handle of the table: a table installed again (by another agent,
    /// or this one restarted) gets a new one.
    pub handle: Option<u64>,
    pub chains: Vec<ChainStatus>,
    pub rules: Vec<NotrackRule>,
    /// Rules in the table that are not of our one shape (someone edited the table).
    pub other_rules: usize,
}

impl TableStatus {
    /// The ports with every rule in place, in chains at raw priority: fully exempt.
    pub fn exempt_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.rules.iter().map(|r| r.port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports.retain(|&port| {
            RULES.iter().all(|&(hook, side, to_local_only)| {
                let chain_ok = self.chains.iter().any(|c| {
                    c.name == hook.chain_name()
                        && c.hook == Some(hook)
                        && c.priority == Some(RAW_PRIORITY)
                });
                chain_ok
                    && self.rules.iter().any(|r| {
                        r.chain == hook.chain_name()
                            && r.side == side
                            && r.port == port
                            && r.to_local_only == to_local_only
                    })
            })
        });
        ports
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotrackError {
    #[error("changing nftables needs CAP_NET_ADMIN: {0}")]
    PermissionDenied(#[source] io::Error),
    #[error("{what} is not available: {source}")]
    Unavailable {
        what: &'static str,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Other {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl NotrackError {
    /// What an operator can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            NotrackError::PermissionDenied(_) => {
                "run with CAP_NET_ADMIN in the host network namespace (securityContext capabilities add NET_ADMIN)"
            }
            NotrackError::Unavailable { hint, .. } => hint,
            NotrackError::Other { .. } => "",
        }
    }
}

const NO_NFNETLINK: &str = "load nfnetlink and nf_tables: modprobe nf_tables";
const NO_EXPRESSION: &str =
    "load the modules of the notrack and fib expressions: modprobe nft_ct nft_fib_inet";

/// Replaces the table with one exempting `ports`, in one transaction: the kernel
/// first ensures the table exists, deletes it with everything in it, then creates it
/// afresh, so a restart after a crash never piles up duplicate rules, and no packet
/// ever sees a half-built table.
pub fn install(ports: &[u16]) -> Result<(), NotrackError> {
    let mut sock = open()?;
    let batch = install_batch(ports);
    nfnetlink::transact(&mut sock, NFNL_SUBSYS_NFTABLES, &batch)
        .map_err(|e| batch_error(e, &batch, "installing the notrack table"))
}

/// Deletes the table if it is there; a missing table is not an error.
pub fn remove() -> Result<(), NotrackError> {
    let mut sock = open()?;
    let batch = remove_batch();
    nfnetlink::transact(&mut sock, NFNL_SUBSYS_NFTABLES, &batch)
        .map_err(|e| batch_error(e, &batch, "removing the notrack table"))
}

/// What became of the table an agent installed, at its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The table under that name is another one (another agent installed it since,
    /// with its own port), or there is none: left as it is.
    NotOurs,
}

/// Deletes the table known by `handle` (`TableStatus::handle` after `install`), and
/// only that one: an agent that started beside this one replaced the table with its
/// own, which this agent's exit must not take away.
pub fn remove_installed(handle: u64) -> Result<Removal, NotrackError> {
    let mut sock = open()?;
    let mut p = header();
    netlink::push_attr(&mut p, NFTA_TABLE_HANDLE, &handle.to_be_bytes());
    let batch = [BatchMessage {
        kind: msg_type(NFT_MSG_DELTABLE),
        flags: 0,
        payload: p,
    }];
    match nfnetlink::transact(&mut sock, NFNL_SUBSYS_NFTABLES, &batch) {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if e.index.is_some() && e.source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(Removal::NotOurs)
        }
        Err(e) => Err(batch_error(e, &batch, "removing the notrack table")),
    }
}

/// Reads the table back; None when there is no `inet nodediag` table.
pub fn status() -> Result<Option<TableStatus>, NotrackError> {
    let mut sock = open()?;
    let read_err = |what: &str, e: io::Error| match e.raw_os_error() {
        Some(libc::EPERM) => NotrackError::PermissionDenied(e),
        Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EINVAL) => {
            NotrackError::Unavailable {
                what: "nf_tables",
                hint: NO_NFNETLINK,
                source: e,
            }
        }
        _ => NotrackError::Other {
            context: format!("reading the {what} of table inet {TABLE}"),
            source: e,
        },
    };
    let mut table = header();
    netlink::push_attr(&mut table, NFTA_TABLE_NAME, &cstr(TABLE));
    let tables = match sock.request(msg_type(NFT_MSG_GETTABLE), 0, &table) {
        Ok(tables) => tables,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(read_err("table", e)),
    };
    let mut status = TableStatus {
        handle: tables.first().and_then(|m| table_handle(&m.payload)),
        ..TableStatus::default()
    };
    let chains = sock
        .request(msg_type(NFT_MSG_GETCHAIN), NLM_F_DUMP, &header())
        .map_err(|e| read_err("chains", e))?;
    status.chains = chains
        .iter()
        .filter_map(|m| parse_chain(&m.payload))
        .collect();
    let mut filter = header();
    netlink::push_attr(&mut filter, NFTA_RULE_TABLE, &cstr(TABLE));
    let rules = sock
        .request(msg_type(NFT_MSG_GETRULE), NLM_F_DUMP, &filter)
        .map_err(|e| read_err("rules", e))?;
    for m in &rules {
        match parse_rule(&m.payload) {
            Some(ParsedRule::Ours(r)) => status.rules.push(r),
            Some(ParsedRule::Other) => status.other_rules += 1,
            None => {}
        }
    }
    Ok(Some(status))
}

fn open() -> Result<NetlinkSocket, NotrackError> {
    NetlinkSocket::open(NETLINK_NETFILTER).map_err(|e| match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT) => NotrackError::Unavailable {
            what: "nfnetlink",
            hint: NO_NFNETLINK,
            source: e,
        },
        Some(libc::EPERM | libc::EACCES) => NotrackError::PermissionDenied(e),
        _ => NotrackError::Other {
            context: "opening a netfilter netlink socket".into(),
            source: e,
        },
    })
}

fn batch_error(e: BatchError, batch: &[BatchMessage], doing: &str) -> NotrackError {
    let errno = e.source.raw_os_error();
    if errno == Some(libc::EPERM) {
        return NotrackError::PermissionDenied(e.source);
    }
    let kind = e.index.and_then(|i| batch.get(i)).map(|m| m.kind & 0xff);
    match (kind, errno) {
        // The batch as a whole: the kernel has no nf_tables subsystem to give it to.
        (None, Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::ENOENT)) => {
            NotrackError::Unavailable {
                what: "nf_tables",
                hint: NO_NFNETLINK,
                source: e.source,
            }
        }
        // A rule naming an expression this kernel lacks (notrack lives in nft_ct,
        // fib in nft_fib_inet).
        (Some(NFT_MSG_NEWRULE), Some(libc::ENOENT | libc::EOPNOTSUPP)) => {
            NotrackError::Unavailable {
                what: "the nftables notrack or fib expression",
                hint: NO_EXPRESSION,
                source: e.source,
            }
        }
        (Some(NFT_MSG_NEWCHAIN), Some(libc::ENOENT | libc::EOPNOTSUPP)) => {
            NotrackError::Unavailable {
                what: "an inet filter chain",
                hint: NO_NFNETLINK,
                source: e.source,
            }
        }
        _ => NotrackError::Other {
            context: format!("{doing} (table inet {TABLE}), {e}"),
            source: e.source,
        },
    }
}

fn msg_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn header() -> Vec<u8> {
    nfnetlink::nfgenmsg(NFPROTO_INET, 0).to_vec()
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn table_message(kind: u16, flags: u16, comment: bool) -> BatchMessage {
    let mut p = header();
    netlink::push_attr(&mut p, NFTA_TABLE_NAME, &cstr(TABLE));
    if comment {
        let text = cstr(COMMENT);
        let mut udata = vec![UDATA_TABLE_COMMENT, text.len() as u8];
        udata.extend_from_slice(&text);
        netlink::push_attr(&mut p, NFTA_TABLE_USERDATA, &udata);
    }
    BatchMessage {
        kind: msg_type(kind),
        flags,
        payload: p,
    }
}

/// Ensure-then-delete: NEWTABLE without EXCL is a no-op on an existing table, so the
/// DELTABLE after it never fails with ENOENT, on any kernel (DESTROYTABLE, which
/// does not fail either, needs 6.3).
fn remove_batch() -> Vec<BatchMessage> {
    vec![
        table_message(NFT_MSG_NEWTABLE, NLM_F_CREATE, false),
        table_message(NFT_MSG_DELTABLE, 0, false),
    ]
}

/// The whole transaction of `install`.
fn install_batch(ports: &[u16]) -> Vec<BatchMessage> {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    let mut batch = remove_batch();
    batch.push(table_message(NFT_MSG_NEWTABLE, NLM_F_CREATE, true));
    for hook in Hook::ALL {
        let mut p = header();
        netlink::push_attr(&mut p, NFTA_CHAIN_TABLE, &cstr(TABLE));
        netlink::push_attr(&mut p, NFTA_CHAIN_NAME, &cstr(hook.chain_name()));
        netlink::push_nested(&mut p, NFTA_CHAIN_HOOK, |h| {
            netlink::push_attr(h, NFTA_HOOK_HOOKNUM, &hook.number().to_be_bytes());
            netlink::push_attr(h, NFTA_HOOK_PRIORITY, &RAW_PRIORITY.to_be_bytes());
        });
        netlink::push_attr(&mut p, NFTA_CHAIN_POLICY, &NF_ACCEPT.to_be_bytes());
        netlink::push_attr(&mut p, NFTA_CHAIN_TYPE, &cstr("filter"));
        batch.push(BatchMessage {
            kind: msg_type(NFT_MSG_NEWCHAIN),
            flags: NLM_F_CREATE,
            payload: p,
        });
    }
    for (hook, side, to_local_only) in RULES {
        for &port in &ports {
            batch.push(rule_message(hook.chain_name(), side, port, to_local_only));
        }
    }
    batch
}

/// `tcp dport|sport PORT [fib daddr type local] notrack`, as nft encodes it for an
/// inet table: meta l4proto into reg 1, compare with 6, the port's two bytes of the
/// transport header into reg 1, compare, [the route type of the destination address
/// into reg 1, compare with RTN_LOCAL,] notrack. The cheap port match comes first, so
/// only packets of the port pay for the route look-up.
fn rule_message(chain: &str, side: PortSide, port: u16, to_local_only: bool) -> BatchMessage {
    let mut p = header();
    netlink::push_attr(&mut p, NFTA_RULE_TABLE, &cstr(TABLE));
    netlink::push_attr(&mut p, NFTA_RULE_CHAIN, &cstr(chain));
    netlink::push_nested(&mut p, NFTA_RULE_EXPRESSIONS, |list| {
        expr(list, "meta", |d| {
            netlink::push_attr(d, NFTA_META_DREG, &NFT_REG_1.to_be_bytes());
            netlink::push_attr(d, NFTA_META_KEY, &NFT_META_L4PROTO.to_be_bytes());
        });
        expr(list, "cmp", |d| cmp_eq(d, &[IPPROTO_TCP]));
        expr(list, "payload", |d| {
            netlink::push_attr(d, NFTA_PAYLOAD_DREG, &NFT_REG_1.to_be_bytes());
            let base = NFT_PAYLOAD_TRANSPORT_HEADER.to_be_bytes();
            netlink::push_attr(d, NFTA_PAYLOAD_BASE, &base);
            netlink::push_attr(d, NFTA_PAYLOAD_OFFSET, &side.offset().to_be_bytes());
            netlink::push_attr(d, NFTA_PAYLOAD_LEN, &2u32.to_be_bytes());
        });
        expr(list, "cmp", |d| cmp_eq(d, &port.to_be_bytes()));
        if to_local_only {
            expr(list, "fib", |d| {
                netlink::push_attr(d, NFTA_FIB_DREG, &NFT_REG_1.to_be_bytes());
                let result = NFT_FIB_RESULT_ADDRTYPE.to_be_bytes();
                netlink::push_attr(d, NFTA_FIB_RESULT, &result);
                netlink::push_attr(d, NFTA_FIB_FLAGS, &NFTA_FIB_F_DADDR.to_be_bytes());
            });
            // A register holds the route type in host byte order.
            expr(list, "cmp", |d| cmp_eq(d, &RTN_LOCAL.to_ne_bytes()));
        }
        expr(list, "notrack", |_| {});
    });
    BatchMessage {
        kind: msg_type(NFT_MSG_NEWRULE),
        flags: NLM_F_CREATE | NLM_F_APPEND,
        payload: p,
    }
}

fn expr(list: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    netlink::push_nested(list, NFTA_LIST_ELEM, |e| {
        netlink::push_attr(e, NFTA_EXPR_NAME, &cstr(name));
        let mut d = Vec::new();
        data(&mut d);
        if !d.is_empty() {
            netlink::push_nested(e, NFTA_EXPR_DATA, |nested| nested.extend_from_slice(&d));
        }
    });
}

fn cmp_eq(d: &mut Vec<u8>, value: &[u8]) {
    netlink::push_attr(d, NFTA_CMP_SREG, &NFT_REG_1.to_be_bytes());
    netlink::push_attr(d, NFTA_CMP_OP, &NFT_CMP_EQ.to_be_bytes());
    netlink::push_nested(d, NFTA_CMP_DATA, |v| {
        netlink::push_attr(v, NFTA_DATA_VALUE, value)
    });
}

fn parse_chain(payload: &[u8]) -> Option<ChainStatus> {
    let mut table = None;
    let mut chain = ChainStatus {
        name: String::new(),
        hook: None,
        priority: None,
        chain_type: None,
    };
    for (kind, v) in netlink::attrs(payload.get(NFGENMSG_LEN..)?) {
        match kind {
            NFTA_CHAIN_TABLE => table = Some(netlink::string(v)),
            NFTA_CHAIN_NAME => chain.name = netlink::string(v),
            NFTA_CHAIN_TYPE => chain.chain_type = Some(netlink::string(v)),
            NFTA_CHAIN_HOOK => {
                for (k, hv) in netlink::attrs(v) {
                    match k {
                        NFTA_HOOK_HOOKNUM => {
                            chain.hook = netlink::u32_be(hv).and_then(Hook::from_number)
                        }
                        NFTA_HOOK_PRIORITY => {
                            chain.priority = netlink::u32_be(hv).map(|p| p as i32)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (table.as_deref() == Some(TABLE)).then_some(chain)
}

enum ParsedRule {
    Ours(NotrackRule),
    Other,
}

/// One expression of a rule: its name and the attributes of its data.
struct Expr<'a> {
    name: String,
    data: Vec<(u16, &'a [u8])>,
}

impl Expr<'_> {
    fn u32(&self, kind: u16) -> Option<u32> {
        self.data
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, v)| netlink::u32_be(v))
    }

    fn cmp_eq_value(&self) -> Option<&[u8]> {
        if self.name != "cmp" || self.u32(NFTA_CMP_SREG)? != NFT_REG_1 {
            return None;
        }
        if self.u32(NFTA_CMP_OP)? != NFT_CMP_EQ {
            return None;
        }
        let (_, data) = self.data.iter().find(|(k, _)| *k == NFTA_CMP_DATA)?;
        netlink::attrs(data)
            .find(|(k, _)| *k == NFTA_DATA_VALUE)
            .map(|(_, v)| v)
    }
}

fn table_handle(payload: &[u8]) -> Option<u64> {
    netlink::attrs(payload.get(NFGENMSG_LEN..)?)
        .find(|(k, _)| *k == NFTA_TABLE_HANDLE)
        .and_then(|(_, v)| Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?)))
}

fn parse_rule(payload: &[u8]) -> Option<ParsedRule> {
    let mut table = None;
    let mut chain = String::new();
    let mut handle = None;
    let mut exprs = Vec::new();
    for (kind, v) in netlink::attrs(payload.get(NFGENMSG_LEN..)?) {
        match kind {
            NFTA_RULE_TABLE => table = Some(netlink::string(v)),
            NFTA_RULE_CHAIN => chain = netlink::string(v),
            NFTA_RULE_HANDLE => {
                handle = v
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
            }
            NFTA_RULE_EXPRESSIONS => {
                for (_, elem) in netlink::attrs(v) {
                    let mut e = Expr {
                        name: String::new(),
                        data: Vec::new(),
                    };
                    for (k, ev) in netlink::attrs(elem) {
                        match k {
                            NFTA_EXPR_NAME => e.name = netlink::string(ev),
                            NFTA_EXPR_DATA => e.data = netlink::attrs(ev).collect(),
                            _ => {}
                        }
                    }
                    exprs.push(e);
                }
            }
            _ => {}
        }
    }
    if table.as_deref() != Some(TABLE) {
        return None;
    }
    Some(match match_notrack(&exprs) {
        Some((side, port, to_local_only)) => ParsedRule::Ours(NotrackRule {
            chain,
            side,
            port,
            to_local_only,
            handle,
        }),
        None => ParsedRule::Other,
    })
}

fn match_notrack(exprs: &[Expr]) -> Option<(PortSide, u16, bool)> {
    let (meta, proto, payload, port, rest) = match exprs {
        [meta, proto, payload, port, rest @ ..] => (meta, proto, payload, port, rest),
        _ => return None,
    };
    let is_l4proto = meta.name == "meta"
        && meta.u32(NFTA_META_KEY)? == NFT_META_L4PROTO
        && meta.u32(NFTA_META_DREG)? == NFT_REG_1;
    if !is_l4proto || proto.cmp_eq_value()? != [IPPROTO_TCP] {
        return None;
    }
    if payload.name != "payload"
        || payload.u32(NFTA_PAYLOAD_BASE)? != NFT_PAYLOAD_TRANSPORT_HEADER
        || payload.u32(NFTA_PAYLOAD_LEN)? != 2
        || payload.u32(NFTA_PAYLOAD_DREG)? != NFT_REG_1
    {
        return None;
    }
    let side = match payload.u32(NFTA_PAYLOAD_OFFSET)? {
        0 => PortSide::Sport,
        2 => PortSide::Dport,
        _ => return None,
    };
    let port = u16::from_be_bytes(port.cmp_eq_value()?.try_into().ok()?);
    let (to_local_only, notrack) = match rest {
        [notrack] => (false, notrack),
        [fib, local, notrack] => {
            let is_local = fib.name == "fib"
                && fib.u32(NFTA_FIB_DREG)? == NFT_REG_1
                && fib.u32(NFTA_FIB_RESULT)? == NFT_FIB_RESULT_ADDRTYPE
                && fib.u32(NFTA_FIB_FLAGS)? == NFTA_FIB_F_DADDR
                && local.cmp_eq_value()? == RTN_LOCAL.to_ne_bytes();
            (is_local.then_some(true)?, notrack)
        }
        _ => return None,
    };
    (notrack.name == "notrack").then_some((side, port, to_local_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &BatchMessage) -> Vec<(u16, Vec<u8>)> {
        netlink::attrs(&m.payload[NFGENMSG_LEN..])
            .map(|(k, v)| (k, v.to_vec()))
            .collect()
    }

    #[test]
    fn install_replaces_the_table_in_one_batch() {
        let batch = install_batch(&[10360, 10360]);
        let kinds: Vec<u16> = batch.iter().map(|m| m.kind & 0xff).collect();
        assert_eq!(
            kinds,
            vec![
                NFT_MSG_NEWTABLE,
                NFT_MSG_DELTABLE,
                NFT_MSG_NEWTABLE,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_NEWRULE,
                NFT_MSG_NEWRULE,
                NFT_MSG_NEWRULE,
            ],
            "a duplicated port gives one set of three rules"
        );
        assert!(batch.iter().all(|m| m.kind >> 8 == NFNL_SUBSYS_NFTABLES));
        assert!(batch.iter().all(|m| m.payload[0] == NFPROTO_INET));
        assert_eq!(
            batch[0].flags & 0x200,
            0,
            "no NLM_F_EXCL: an existing table is fine"
        );
        for m in &batch[..3] {
            assert_eq!(names(m)[0], (NFTA_TABLE_NAME, b"nodediag\0".to_vec()));
        }
        let comment = names(&batch[2]);
        assert_eq!(comment[1].0, NFTA_TABLE_USERDATA);
        assert_eq!(comment[1].1[0], UDATA_TABLE_COMMENT);
        assert_eq!(comment[1].1[1] as usize, comment[1].1.len() - 2);
    }

    #[test]
    fn chains_hook_prerouting_and_output_at_raw_priority() {
        let batch = install_batch(&[80]);
        let chains: Vec<ChainStatus> = batch[3..5]
            .iter()
            .map(|m| parse_chain(&m.payload).expect("our table"))
            .collect();
        assert_eq!(chains[0].name, "notrack_prerouting");
        assert_eq!(chains[0].hook, Some(Hook::Prerouting));
        assert_eq!(chains[1].hook, Some(Hook::Output));
        assert!(chains.iter().all(|c| c.priority == Some(-300)));
        assert!(chains
            .iter()
            .all(|c| c.chain_type.as_deref() == Some("filter")));
        let policy = names(&batch[3]);
        assert!(policy.contains(&(NFTA_CHAIN_POLICY, 1u32.to_be_bytes().to_vec())));
    }

    #[test]
    fn rules_encode_as_nft_does_and_parse_back() {
        let batch = install_batch(&[10360, 8080]);
        let rules: Vec<NotrackRule> = batch[5..]
            .iter()
            .map(|m| match parse_rule(&m.payload) {
                Some(ParsedRule::Ours(r)) => r,
                _ => panic!("a rule we built must parse back as ours"),
            })
            .collect();
        let got: Vec<(&str, PortSide, u16, bool)> = rules
            .iter()
            .map(|r| (r.chain.as_str(), r.side, r.port, r.to_local_only))
            .collect();
        assert_eq!(
            got,
            vec![
                ("notrack_prerouting", PortSide::Dport, 8080, true),
                ("notrack_prerouting", PortSide::Dport, 10360, true),
                ("notrack_output", PortSide::Dport, 8080, true),
                ("notrack_output", PortSide::Dport, 10360, true),
                ("notrack_output", PortSide::Sport, 8080, false),
                ("notrack_output", PortSide::Sport, 10360, false),
            ]
        );
        // `nft --debug=netlink` shows the port as `cmp eq reg 1 0x00007828` for 10360:
        // two bytes in network order.
        let p = &batch[6].payload;
        assert!(p.windows(2).any(|w| w == [0x28, 0x78]));
        assert!(p.windows(4).any(|w| w == b"fib\0"));
        assert!(!batch[10].payload.windows(4).any(|w| w == b"fib\0"));
        assert_eq!(batch[5].flags & NLM_F_APPEND, NLM_F_APPEND);
    }

    #[test]
    fn a_rule_of_another_shape_or_table_is_not_ours() {
        let mut m = rule_message("notrack_output", PortSide::Dport, 1, true);
        let shape = |exprs: &dyn Fn(&mut Vec<u8>)| {
            let mut p = header();
            netlink::push_attr(&mut p, NFTA_RULE_TABLE, &cstr(TABLE));
            netlink::push_nested(&mut p, NFTA_RULE_EXPRESSIONS, |list| exprs(list));
            parse_rule(&p)
        };
        assert!(matches!(
            shape(&|l| expr(l, "counter", |_| {})),
            Some(ParsedRule::Other)
        ));
        // Our match followed by something else than notrack or fib: not ours.
        let port_match = |l: &mut Vec<u8>| {
            expr(l, "meta", |d| {
                netlink::push_attr(d, NFTA_META_DREG, &NFT_REG_1.to_be_bytes());
                netlink::push_attr(d, NFTA_META_KEY, &NFT_META_L4PROTO.to_be_bytes());
            });
            expr(l, "cmp", |d| cmp_eq(d, &[IPPROTO_TCP]));
            expr(l, "payload", |d| {
                netlink::push_attr(d, NFTA_PAYLOAD_DREG, &NFT_REG_1.to_be_bytes());
                let base = NFT_PAYLOAD_TRANSPORT_HEADER.to_be_bytes();
                netlink::push_attr(d, NFTA_PAYLOAD_BASE, &base);
                netlink::push_attr(d, NFTA_PAYLOAD_OFFSET, &2u32.to_be_bytes());
                netlink::push_attr(d, NFTA_PAYLOAD_LEN, &2u32.to_be_bytes());
            });
            expr(l, "cmp", |d| cmp_eq(d, &80u16.to_be_bytes()));
        };
        assert!(matches!(
            shape(&|l| {
                port_match(l);
                expr(l, "notrack", |_| {});
            }),
            Some(ParsedRule::Ours(_))
        ));
        assert!(matches!(
            shape(&|l| {
                port_match(l);
                expr(l, "counter", |_| {});
            }),
            Some(ParsedRule::Other)
        ));
        // A fib match for another route type (unicast: not to this host) is not ours.
        assert!(matches!(
            shape(&|l| {
                port_match(l);
                expr(l, "fib", |d| {
                    netlink::push_attr(d, NFTA_FIB_DREG, &NFT_REG_1.to_be_bytes());
                    let result = NFT_FIB_RESULT_ADDRTYPE.to_be_bytes();
                    netlink::push_attr(d, NFTA_FIB_RESULT, &result);
                    netlink::push_attr(d, NFTA_FIB_FLAGS, &NFTA_FIB_F_DADDR.to_be_bytes());
                });
                expr(l, "cmp", |d| cmp_eq(d, &1u32.to_ne_bytes()));
                expr(l, "notrack", |_| {});
            }),
            Some(ParsedRule::Other)
        ));
        // Same rule in someone else's table: not counted at all.
        let other = cstr("kube-proxy");
        let pos = m
            .payload
            .windows(9)
            .position(|w| w == b"nodediag\0")
            .unwrap();
        m.payload
            .splice(pos..pos + 9, other.iter().copied().take(9));
        assert!(parse_rule(&m.payload).is_none());
        assert!(parse_rule(&[1, 0]).is_none(), "shorter than nfgenmsg");
    }

    #[test]
    fn exempt_ports_need_every_rule_in_raw_priority_chains() {
        let chains = Hook::ALL
            .iter()
            .map(|h| ChainStatus {
                name: h.chain_name().into(),
                hook: Some(*h),
                priority: Some(RAW_PRIORITY),
                chain_type: Some("filter".into()),
            })
            .collect();
        let rule = |(hook, side, to_local_only): (Hook, PortSide, bool), port| NotrackRule {
            chain: hook.chain_name().into(),
            side,
            port,
            to_local_only,
            handle: None,
        };
        let mut status = TableStatus {
            handle: None,
            chains,
            rules: RULES.iter().map(|r| rule(*r, 10360)).collect(),
            other_rules: 0,
        };
        // Port 9 lacks the sport rule; port 7 has it without the local-only match.
        status.rules.push(rule(RULES[0], 9));
        status.rules.push(rule(RULES[1], 9));
        status.rules.push(rule(RULES[0], 7));
        status
            .rules
            .push(rule((Hook::Output, PortSide::Dport, false), 7));
        status.rules.push(rule(RULES[2], 7));
        assert_eq!(status.exempt_ports(), vec![10360]);
        status.chains[0].priority = Some(0);
        assert_eq!(
            status.exempt_ports(),
            Vec::<u16>::new(),
            "after conntrack is too late"
        );
    }

    #[test]
    fn errors_name_what_is_missing() {
        let batch = install_batch(&[1]);
        let err = |index, errno| BatchError {
            index,
            source: io::Error::from_raw_os_error(errno),
        };
        let e = batch_error(err(Some(5), libc::ENOENT), &batch, "installing");
        assert!(
            e.hint().contains("nft_ct nft_fib_inet"),
            "{e}: {}",
            e.hint()
        );
        let e = batch_error(err(None, libc::EOPNOTSUPP), &batch, "installing");
        assert!(e.hint().contains("modprobe nf_tables"), "{e}");
        let e = batch_error(err(Some(0), libc::EPERM), &batch, "installing");
        assert!(matches!(e, NotrackError::PermissionDenied(_)));
        assert!(e.to_string().contains("CAP_NET_ADMIN"));
        let e = batch_error(err(Some(3), libc::EBUSY), &batch, "installing");
        assert!(e.to_string().contains("message 3"), "{e}");
    }
}
