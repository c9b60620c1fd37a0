//! Real kernel: a "node" network namespace that tracks connections and two "pods"
//! joined to it by veth pairs send it UDP and TCP flows; the ctnetlink dump, run
//! from a thread inside the node namespace, must return those entries, and the
//! aggregation must put each flow on the pod that sent it. A dump with a small
//! budget must say it was cut, and leave nothing broken behind.

mod common;

use common::conntrack::{have, ConntrackMax, Netns};
use common::veth::Pod;
use common::{in_netns, skip, CrossProcessLock};
use nodediag::collect::conntrack_top::{Owners, TopBuilder};
use nodediag::kernel::conntrack_dump::{
    self, ConntrackEntry, DumpBudget, DumpCut, DumpFamily, DumpSummary,
};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Makes the namespace track every new flow (it tracks nothing until a rule needs
/// conntrack), in a table of the test's own.
fn track_everything(ns: &Netns) {
    ns.exec(&["nft", "add", "table", "inet", "ndct_track"]);
    ns.exec(&[
        "nft",
        "add chain inet ndct_track in { type filter hook input priority 0 ; }",
    ]);
    ns.exec(&["nft", "add rule inet ndct_track in ct state new accept"]);
}

/// One UDP datagram from each of `flows` sockets (so `flows` source ports) to `to`.
fn udp_flows(pod: &Pod, to: SocketAddr, flows: usize) {
    in_netns(&pod.ns.0, move || {
        let any: SocketAddr = match to {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
            SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
        };
        // Kept open until all are sent, so no source port is reused.
        let sockets: Vec<UdpSocket> = (0..flows)
            .map(|_| {
                let s = UdpSocket::bind(any).expect("bind");
                s.send_to(b"query", to).expect("send");
                s
            })
            .collect();
        drop(sockets);
    });
}

/// `n` complete TCP exchanges from the pod to a listener of the node.
fn tcp_exchanges(pod: &Pod, to: SocketAddr, n: usize) {
    in_netns(&pod.ns.0, move || {
        for _ in 0..n {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("read");
            assert_eq!(answer, "ok");
        }
    });
}

fn serve(listener: TcpListener, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for s in listener.incoming().take(n) {
            let _ = s.expect("accept").write_all(b"ok");
        }
    })
}

fn dump_in(
    ns: &Netns,
    family: DumpFamily,
    budget: DumpBudget,
) -> (Vec<ConntrackEntry>, DumpSummary) {
    in_netns(&ns.0, move || {
        let mut entries = Vec::new();
        let summary = conntrack_dump::dump(family, budget, |e| entries.push(*e)).expect("dump");
        (entries, summary)
    })
}

fn unlimited() -> DumpBudget {
    DumpBudget::new(u64::MAX, Duration::from_secs(30))
}

struct Lab {
    node: Netns,
    a: Pod,
    b: Pod,
    /// nf_conntrack_max is global: while another test has it lowered (to 64), this
    /// namespace could not hold the entries these tests make.
    _max_unchanged: CrossProcessLock,
}

fn lab(tag: &str) -> Option<Lab> {
    if !have("nft") {
        skip("nft not installed");
        return None;
    }
    let lock = ConntrackMax::unchanged();
    let node = Netns::new(&format!("ctd{tag}-node"))?;
    track_everything(&node);
    let a = Pod::attach(&node, &format!("ctd{tag}-a"), 0)?;
    let b = Pod::attach(&node, &format!("ctd{tag}-b"), 1)?;
    Some(Lab {
        node,
        a,
        b,
        _max_unchanged: lock,
    })
}

#[test]
fn flows_from_pods_are_dumped_and_ranked_on_the_pod_that_sent_them() {
    let Some(lab) = lab("top") else { return };
    let (a, b) = (&lab.a, &lab.b);
    // Pod a: 30 "DNS queries" (closed port: unreplied), 4 over IPv6, 3 TCP exchanges.
    udp_flows(a, SocketAddr::new(a.gateway_v4.into(), 53), 30);
    udp_flows(a, SocketAddr::new(a.gateway_v6.into(), 53), 4);
    let listener = in_netns(&lab.node.0, || TcpListener::bind("0.0.0.0:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = serve(listener, 3);
    tcp_exchanges(a, SocketAddr::new(a.gateway_v4.into(), port), 3);
    server.join().unwrap();
    // Pod b: 10 flows to another port.
    udp_flows(b, SocketAddr::new(b.gateway_v4.into(), 5353), 10);

    let (entries, summary) = dump_in(&lab.node, DumpFamily::All, unlimited());
    assert_eq!(summary.cut, None, "{summary:?}");
    assert_eq!(summary.entries as usize, entries.len());
    assert_eq!(summary.skipped, 0);
    let count = in_netns(&lab.node.0, || {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").unwrap()
    });
    assert_eq!(
        count.trim().parse::<usize>().unwrap(),
        entries.len(),
        "the dump saw the whole table"
    );
    assert_eq!(entries.len(), 30 + 4 + 3 + 10, "{entries:#?}");

    let from = |ip: IpAddr| entries.iter().filter(move |e| e.original.src == ip);
    let dns: Vec<_> = from(a.v4.into())
        .filter(|e| e.original.proto == 17)
        .collect();
    assert_eq!(dns.len(), 30);
    for e in &dns {
        assert_eq!(e.original.dst, IpAddr::from(a.gateway_v4));
        assert_eq!(e.original.dst_port, Some(53));
        assert!(e.original.src_port.is_some());
        assert!(!e.seen_reply(), "a closed port never answers: {e:?}");
        let reply = e.reply.expect("reply tuple");
        assert_eq!(reply.src, IpAddr::from(a.gateway_v4));
        assert_eq!(reply.dst_port, e.original.src_port);
    }
    let tcp: Vec<_> = from(a.v4.into())
        .filter(|e| e.original.proto == 6)
        .collect();
    assert_eq!(tcp.len(), 3);
    for e in &tcp {
        assert_eq!(e.original.dst_port, Some(port));
        assert!(e.seen_reply() && e.assured(), "a full exchange: {e:?}");
        assert!(e.tcp_state.is_some());
    }
    assert_eq!(from(a.v6.into()).count(), 4);
    assert_eq!(from(b.v4.into()).count(), 10);

    // The aggregation over a fresh streaming dump, never holding the entries.
    let owners: Owners = a
        .addrs()
        .into_iter()
        .map(|ip| (ip, "team-a/dns-hammer".to_string()))
        .chain(
            b.addrs()
                .into_iter()
                .map(|ip| (ip, "team-b/resolver".to_string())),
        )
        .collect();
    let mut builder = TopBuilder::new();
    in_netns(&lab.node.0, move || {
        conntrack_dump::dump(DumpFamily::All, unlimited(), |e| builder.add(e))
            .map(|_| builder.finish(&owners, 5))
    })
    .map(|top| {
        let o: Vec<(&str, u64)> = top
            .owners
            .rows
            .iter()
            .map(|r| (r.key.as_str(), r.entries))
            .collect();
        assert_eq!(o, vec![("team-a/dns-hammer", 37), ("team-b/resolver", 10)]);
        assert_eq!(top.sources.rows[0].key, a.v4.to_string());
        assert_eq!(
            top.sources.rows[0].owner.as_deref(),
            Some("team-a/dns-hammer")
        );
        let d = &top.destinations.rows[0];
        assert_eq!(d.key, format!("{}:53/udp", a.gateway_v4));
        assert_eq!(d.entries, 30);
        assert_eq!(
            top.destinations.rows[1].key,
            format!("{}:5353/udp", b.gateway_v4)
        );
        assert_eq!(top.states.unreplied.entries, 44);
        assert_eq!(top.states.assured.entries, 3);
        assert_eq!(top.protocols.rows[0].key, "udp");
        assert_eq!(top.protocols.rows[0].entries, 44);
    })
    .expect("dump for the aggregation");

    // One family only.
    let (v6, _) = dump_in(&lab.node, DumpFamily::Ipv6, unlimited());
    assert_eq!(v6.len(), 4);
    assert!(v6.iter().all(|e| e.original.src == IpAddr::from(a.v6)));
    let (v4, _) = dump_in(&lab.node, DumpFamily::Ipv4, unlimited());
    assert_eq!(v4.len(), 43);
}

#[test]
fn a_dump_over_budget_says_it_was_cut_and_the_next_one_is_whole() {
    let Some(lab) = lab("cut") else { return };
    udp_flows(&lab.a, SocketAddr::new(lab.a.gateway_v4.into(), 53), 200);

    let (entries, summary) = dump_in(
        &lab.node,
        DumpFamily::All,
        DumpBudget::new(5, Duration::from_secs(30)),
    );
    assert_eq!(summary.cut, Some(DumpCut::MaxEntries));
    assert_eq!(summary.entries, 5);
    assert_eq!(entries.len(), 5, "nothing handed over past the budget");

    let past = DumpBudget {
        max_entries: u64::MAX,
        deadline: Instant::now(),
    };
    let (entries, summary) = dump_in(&lab.node, DumpFamily::All, past);
    assert_eq!(summary.cut, Some(DumpCut::Deadline));
    assert_eq!(
        entries.len(),
        1,
        "a deadline already past stops after the first entry"
    );

    // Nothing left half-done: a dump right after reads the whole table again.
    let (entries, summary) = dump_in(&lab.node, DumpFamily::All, unlimited());
    assert_eq!(summary.cut, None);
    assert_eq!(entries.len(), 200);
}

#[test]
fn an_empty_table_dumps_nothing() {
    let Some(ns) = Netns::new("ctd-empty") else {
        return;
    };
    let (entries, summary) = dump_in(&ns, DumpFamily::All, unlimited());
    assert!(entries.is_empty());
    assert_eq!(summary.cut, None);
}

#[test]
fn without_cap_net_admin_the_dump_is_permission_denied() {
    let Some(ns) = Netns::new("ctd-nocap") else {
        return;
    };
    let got = in_netns(&ns.0, || {
        common::caps::drop_from_this_thread(common::caps::CAP_NET_ADMIN);
        conntrack_dump::dump(DumpFamily::All, unlimited(), |_| {})
    });
    let err = got.expect_err("ctnetlink needs CAP_NET_ADMIN");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
}
