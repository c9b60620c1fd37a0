//! Fills the conntrack table of the calling network namespace with COUNT entries
//! shaped like a node whose pods hammer DNS, for benches/conntrack_dump.sh. Entries
//! are created over ctnetlink (IPCTNL_MSG_CT_NEW), 512 per datagram, which takes
//! seconds for 262,144 entries where `conntrack -I` (one process per entry) takes
//! many minutes and sending real packets needs a flow per source port.
//!
//! usage: conntrack_fill COUNT [PODS] [scan]
//!
//! Entry i comes from pod i % PODS (10.244.x.y, default 200 pods) and a source port
//! of its own; 80% are unreplied UDP to 10.96.0.10:53, 15% assured TCP to one of 50
//! services on port 443, 5% UDP to destinations seen once. With `scan`, every entry
//! goes to a destination of its own (a port scan): the most distinct keys the
//! ranking can be asked to count. Each entry lives 600 s.

use nodediag::kernel::conntrack_dump::{
    encode_entry, ConntrackEntry, TcpState, Tuple, IPS_ASSURED, IPS_SEEN_REPLY,
};
use nodediag::kernel::netlink::{
    self, NetlinkSocket, NETLINK_NETFILTER, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Instant;

const IPCTNL_MSG_CT_NEW: u16 = 1 << 8;
const NLM_F_EXCL: u16 = 0x200;
const PER_DATAGRAM: u64 = 512;
/// IPS_CONFIRMED: the kernel answers EBUSY to a status that would clear it.
const CONFIRMED: u32 = 0x8;

fn entry(i: u64, pods: u64, scan: bool) -> ConntrackEntry {
    let pod = i % pods;
    let src = IpAddr::V4(Ipv4Addr::new(
        10,
        244,
        (pod >> 8) as u8,
        (pod & 0xff) as u8 + 1,
    ));
    let sport = 1024 + (i / pods) as u16;
    let (dst, proto, dport, status, tcp_state) = match if scan { 19 } else { i % 20 } {
        0..=15 => (Ipv4Addr::new(10, 96, 0, 10), 17, 53, CONFIRMED, None),
        16..=18 => {
            let svc = (i / 20 % 50) as u8;
            (
                Ipv4Addr::new(10, 96, 1, svc),
                6,
                443,
                IPS_SEEN_REPLY | IPS_ASSURED | CONFIRMED,
                Some(TcpState::Established),
            )
        }
        _ => {
            let n = if scan { i } else { i / 20 };
            (
                Ipv4Addr::new(10, 100, (n >> 8) as u8, n as u8),
                17,
                5000 + (n % 1000) as u16,
                CONFIRMED,
                None,
            )
        }
    };
    let original = Tuple {
        src,
        dst: IpAddr::V4(dst),
        proto,
        src_port: Some(sport),
        dst_port: Some(dport),
        icmp: None,
    };
    ConntrackEntry {
        original,
        reply: Some(Tuple {
            src: original.dst,
            dst: original.src,
            proto,
            src_port: Some(dport),
            dst_port: Some(sport),
            icmp: None,
        }),
        status,
        tcp_state,
        timeout_secs: Some(600),
        mark: None,
        zone: None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(Ok(count)) = args.get(1).map(|s| s.parse::<u64>()) else {
        eprintln!("usage: conntrack_fill COUNT [PODS] [scan]");
        return ExitCode::from(2);
    };
    let pods: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
        .max(1);
    let scan = args.get(3).is_some_and(|s| s == "scan");
    let mut sock = match NetlinkSocket::open(NETLINK_NETFILTER) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("conntrack_fill: netlink: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let (mut created, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut rx = vec![0u8; netlink::RECV_BUFFER];
    let mut i = 0;
    while i < count {
        let end = (i + PER_DATAGRAM).min(count);
        let mut buf = Vec::new();
        let mut last_seq = 0;
        for n in i..end {
            last_seq = sock.next_seq();
            // Only the last message asks for an ACK: its arrival means the kernel
            // has answered every message before it (errors come back regardless).
            let ack = if n + 1 == end { NLM_F_ACK } else { 0 };
            let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | ack;
            netlink::push_message(
                &mut buf,
                IPCTNL_MSG_CT_NEW,
                flags,
                last_seq,
                &encode_entry(&entry(n, pods, scan)),
            );
        }
        if let Err(e) = sock.send(&buf) {
            eprintln!("conntrack_fill: send: {e}");
            return ExitCode::FAILURE;
        }
        let mut errors = 0;
        'answers: loop {
            let n = match sock.recv(&mut rx) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("conntrack_fill: recv: {e}");
                    return ExitCode::FAILURE;
                }
            };
            for m in netlink::messages(&rx[..n]) {
                let Ok(m) = m else { break };
                if m.kind != NLMSG_ERROR {
                    continue;
                }
                let errno = netlink::error_code(m.payload).unwrap_or(0);
                if errno != 0 {
                    errors += 1;
                    first_error.get_or_insert(std::io::Error::from_raw_os_error(errno));
                }
                if m.seq == last_seq {
                    break 'answers;
                }
            }
        }
        created += end - i - errors;
        failed += errors;
        i = end;
    }
    let line = serde_json::json!({
        "created": created,
        "failed": failed,
        "seconds": started.elapsed().as_secs_f64(),
        "first_error": first_error.map(|e| e.to_string()),
    });
    println!("{line}");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
