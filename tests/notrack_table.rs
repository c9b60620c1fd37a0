//! Real kernel: the agent's `inet nodediag` notrack table, installed over nfnetlink
//! in a fresh network namespace and checked with `nft -j` and conntrack(8). The last
//! test fills the namespace's conntrack table with TCP tracked and shows that only
//! the exempt port still takes new connections: the kernel-level core of "the agent
//! answers while the table is full".

mod common;

use common::conntrack::{have, ConntrackMax, Netns};
use common::veth::Pod;
use common::{in_netns, skip};
use nodediag::kernel::nft_notrack::{self, Hook, PortSide, Removal};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

fn tools_present() -> bool {
    for tool in ["nft", "conntrack"] {
        if !have(tool) {
            skip(&format!("{tool} not installed"));
            return false;
        }
    }
    true
}

/// `nft -j list table inet nodediag` as (chains, rules); None when there is no table.
fn nft_list(ns: &Netns) -> Option<(Vec<Value>, Vec<Value>)> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .args(["nft", "-j", "list", "table", "inet", "nodediag"])
        .output()
        .expect("run nft");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No such file or directory"), "nft: {err}");
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j output");
    let items = v["nftables"].as_array().expect("nftables array");
    let of =
        |kind: &str| -> Vec<Value> { items.iter().filter_map(|i| i.get(kind).cloned()).collect() };
    Some((of("chain"), of("rule")))
}

/// (chain, "dport"|"sport", port, to a local address only) of each rule nft shows,
/// checking its shape: `tcp dport|sport PORT [fib daddr type local] notrack`.
fn rule_summary(rules: &[Value]) -> Vec<(String, String, u64, bool)> {
    let mut out: Vec<(String, String, u64, bool)> = rules
        .iter()
        .map(|r| {
            let expr = r["expr"].as_array().expect("expr");
            assert!(expr.last().unwrap().get("notrack").is_some(), "{r}");
            let m = &expr[0]["match"];
            assert_eq!(m["op"], "==", "{r}");
            assert_eq!(m["left"]["payload"]["protocol"], "tcp", "{r}");
            let local_only = match expr.len() {
                2 => false,
                3 => {
                    let fib = &expr[1]["match"];
                    assert_eq!(fib["left"]["fib"]["result"], "type", "{r}");
                    assert_eq!(fib["left"]["fib"]["flags"][0], "daddr", "{r}");
                    assert_eq!(fib["right"], "local", "{r}");
                    true
                }
                _ => panic!("unexpected rule shape: {r}"),
            };
            (
                r["chain"].as_str().unwrap().to_string(),
                m["left"]["payload"]["field"].as_str().unwrap().to_string(),
                m["right"].as_u64().expect("port"),
                local_only,
            )
        })
        .collect();
    out.sort();
    out
}

fn on(ns: &Netns, ports: &'static [u16]) -> Result<(), String> {
    in_netns(&ns.0, move || {
        nft_notrack::install(ports).map_err(|e| format!("{e} ({})", e.hint()))
    })
}

#[test]
fn install_shows_in_nft_replaces_without_duplicates_and_remove_leaves_nothing() {
    if !tools_present() {
        return;
    }
    let Some(ns) = Netns::new("notrack-nft") else {
        return;
    };
    // Someone else's table (kube-proxy's, the CNI's) must come through untouched.
    ns.exec(&["nft", "add", "table", "inet", "ndnt_other"]);
    ns.exec(&[
        "nft",
        "add chain inet ndnt_other out { type filter hook output priority 0 ; }",
    ]);
    ns.exec(&["nft", "add rule inet ndnt_other out tcp dport 9 counter"]);
    let other_before = ns.exec(&["nft", "-j", "list", "table", "inet", "ndnt_other"]);

    assert!(
        nft_list(&ns).is_none(),
        "a fresh namespace has no nodediag table"
    );
    on(&ns, &[10360]).unwrap();
    let (chains, rules) = nft_list(&ns).expect("table installed");
    let mut hooks: Vec<(String, String, i64, String)> = chains
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["hook"].as_str().unwrap().into(),
                c["prio"].as_i64().unwrap(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    hooks.sort();
    assert_eq!(
        hooks,
        vec![
            (
                "notrack_output".into(),
                "output".into(),
                -300,
                "filter".into()
            ),
            (
                "notrack_prerouting".into(),
                "prerouting".into(),
                -300,
                "filter".into()
            ),
        ]
    );
    let expected = |ports: &[u64]| {
        let mut v = Vec::new();
        for p in ports {
            for (chain, side, local_only) in [
                ("notrack_prerouting", "dport", true),
                ("notrack_output", "dport", true),
                ("notrack_output", "sport", false),
            ] {
                v.push((chain.to_string(), side.to_string(), *p, local_only));
            }
        }
        v.sort();
        v
    };
    assert_eq!(rule_summary(&rules), expected(&[10360]));

    // A restart installs again: still one set of rules, not two.
    on(&ns, &[10360]).unwrap();
    let (chains, rules) = nft_list(&ns).unwrap();
    assert_eq!(chains.len(), 2);
    assert_eq!(rule_summary(&rules), expected(&[10360]));

    // Several ports, read back through the module's own status.
    on(&ns, &[10360, 8080]).unwrap();
    assert_eq!(
        rule_summary(&nft_list(&ns).unwrap().1),
        expected(&[8080, 10360])
    );
    let status = in_netns(&ns.0, || nft_notrack::status().unwrap()).expect("installed");
    assert_eq!(status.exempt_ports(), vec![8080, 10360]);
    assert_eq!(status.rules.len(), 6);
    assert_eq!(status.other_rules, 0);
    assert!(status
        .chains
        .iter()
        .any(|c| c.hook == Some(Hook::Prerouting) && c.priority == Some(-300)));
    assert!(status
        .rules
        .iter()
        .any(|r| r.side == PortSide::Sport && r.port == 8080 && r.handle.is_some()));

    in_netns(&ns.0, nft_notrack::remove).unwrap();
    assert!(nft_list(&ns).is_none(), "remove leaves no table");
    assert!(in_netns(&ns.0, || nft_notrack::status().unwrap()).is_none());
    in_netns(&ns.0, nft_notrack::remove).expect("removing twice is fine");
    let other_after = ns.exec(&["nft", "-j", "list", "table", "inet", "ndnt_other"]);
    assert_eq!(other_before, other_after, "another table was touched");
}

/// The handle `nft` shows for the `inet nodediag` table.
fn nft_table_handle(ns: &Netns) -> u64 {
    let out = ns.exec(&["nft", "-j", "list", "table", "inet", "nodediag"]);
    let v: Value = serde_json::from_str(&out).expect("nft -j output");
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .find_map(|i| i["table"]["handle"].as_u64())
        .expect("a table handle")
}

#[test]
fn an_agent_exiting_leaves_the_table_another_has_installed_since() {
    if !tools_present() {
        return;
    }
    let Some(ns) = Netns::new("notrack-two") else {
        return;
    };
    let installed = |port: &'static [u16]| {
        on(&ns, port).unwrap();
        let status = in_netns(&ns.0, || nft_notrack::status().unwrap()).expect("installed");
        let handle = status.handle.expect("the table's handle read back");
        assert_eq!(handle, nft_table_handle(&ns), "nft shows another handle");
        handle
    };
    let first = installed(&[10360]);
    let second = installed(&[10361]);
    assert_ne!(first, second, "installing again makes a new table");

    let removal = in_netns(&ns.0, move || nft_notrack::remove_installed(first)).unwrap();
    assert_eq!(removal, Removal::NotOurs);
    let status = in_netns(&ns.0, || nft_notrack::status().unwrap()).expect("still there");
    assert_eq!(
        status.exempt_ports(),
        vec![10361],
        "the second agent's table"
    );

    let removal = in_netns(&ns.0, move || nft_notrack::remove_installed(second)).unwrap();
    assert_eq!(removal, Removal::Removed);
    assert!(nft_list(&ns).is_none(), "its own table is removed");
    let removal = in_netns(&ns.0, move || nft_notrack::remove_installed(second)).unwrap();
    assert_eq!(removal, Removal::NotOurs, "nothing left to remove");
}

/// Tracks every new flow of the namespace (it tracks nothing until a rule needs
/// conntrack), in a table of the test's own.
fn track_everything(ns: &Netns) {
    ns.exec(&["nft", "add", "table", "inet", "ndnt_track"]);
    ns.exec(&[
        "nft",
        "add chain inet ndnt_track out { type filter hook output priority 0 ; }",
    ]);
    ns.exec(&["nft", "add rule inet ndnt_track out ct state new accept"]);
}

/// A listener that answers "ok" to each connection, in the namespace it was bound in.
fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"ok");
        }
    });
}

fn listen(ns: &Netns, addr: &'static str) -> (TcpListener, u16) {
    let l = in_netns(&ns.0, move || TcpListener::bind(addr).expect("bind"));
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// Connects from inside the namespace and reads the answer.
fn fetch(ns: &Netns, addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    in_netns(&ns.0, move || {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

fn tcp_entries_to(ns: &Netns, port: u16) -> usize {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "conntrack", "-L", "-p", "tcp"])
        .output()
        .expect("conntrack -L");
    let needle = format!("dport={port} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

#[test]
fn connections_to_an_exempt_port_leave_no_conntrack_entry() {
    if !tools_present() {
        return;
    }
    let Some(node) = Netns::new("notrack-lo") else {
        return;
    };
    let Some(pod) = Pod::attach(&node, "notrack-lo-pod", 0) else {
        return;
    };
    track_everything(&node);
    // Dual-stack listeners: IPv4 arrives v4-mapped; the inet table covers both.
    let (exempt, port) = listen(&node, "[::]:0");
    let (tracked, tracked_port) = listen(&node, "[::]:0");
    serve(exempt);
    serve(tracked);
    let ports: &'static [u16] = Box::leak(vec![port].into_boxed_slice());
    on(&node, ports).unwrap();

    let t = Duration::from_secs(2);
    let lo4: SocketAddr = ([127, 0, 0, 1], port).into();
    let lo6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let remote4 = SocketAddr::new(pod.gateway_v4.into(), port);
    let remote6 = SocketAddr::new(pod.gateway_v6.into(), port);
    for to in [lo4, lo6] {
        assert_eq!(fetch(&node, to, t).unwrap(), "ok", "{to}");
    }
    // From another namespace through a veth: the SYN enters the node's prerouting.
    for to in [remote4, remote6] {
        assert_eq!(fetch(&pod.ns, to, t).unwrap(), "ok", "{to}");
    }
    assert_eq!(
        fetch(&node, ([127, 0, 0, 1], tracked_port).into(), t).unwrap(),
        "ok"
    );
    let tracked_remote = SocketAddr::new(pod.gateway_v4.into(), tracked_port);
    assert_eq!(fetch(&pod.ns, tracked_remote, t).unwrap(), "ok");
    assert_eq!(
        tcp_entries_to(&node, tracked_port),
        2,
        "TCP is tracked in this namespace (loopback and remote), so the test can tell"
    );
    assert_eq!(
        tcp_entries_to(&node, port),
        0,
        "the exempt port's connections (loopback and remote, IPv4 and IPv6) left no entry"
    );
}

/// The calling thread's namespace's early drops: `net/stat/nf_conntrack`'s
/// `early_drop` column (hex), summed over its per-CPU lines.
fn early_drops_here() -> u64 {
    // /proc/net follows the process's namespace; thread-self, the calling thread's.
    let stat = std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack").unwrap();
    let mut lines = stat.lines();
    let column = lines
        .next()
        .and_then(|h| h.split_whitespace().position(|c| c == "early_drop"))
        .expect("an early_drop column");
    lines
        .filter_map(|l| l.split_whitespace().nth(column))
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .sum()
}

#[test]
fn with_the_table_full_only_the_exempt_port_takes_new_connections() {
    if !tools_present() {
        return;
    }
    let Some(node) = Netns::new("notrack-full") else {
        return;
    };
    let Some(pod) = Pod::attach(&node, "notrack-full-pod", 0) else {
        return;
    };
    track_everything(&node);
    let (exempt, exempt_port) = listen(&node, "0.0.0.0:0");
    let (tracked, tracked_port) = listen(&node, "0.0.0.0:0");
    serve(exempt);
    serve(tracked);
    let ports: &'static [u16] = Box::leak(vec![exempt_port].into_boxed_slice());
    on(&node, ports).unwrap();

    let _max = ConntrackMax::set(64);
    // 100 UDP flows to closed ports: the first 64 fill the table (unreplied UDP stays
    // 30 s), the rest are dropped.
    node.send_udp_flows(100);
    let count = || {
        in_netns(&node.0, || {
            std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").unwrap()
        })
    };
    assert_eq!(count().trim(), "64", "the namespace's table is full");

    let t = Duration::from_secs(2);
    let gateway = pod.gateway_v4;
    for _ in 0..3 {
        let lo = fetch(&node, ([127, 0, 0, 1], exempt_port).into(), t);
        assert_eq!(lo.expect("exempt port over loopback"), "ok");
        let remote = fetch(&pod.ns, SocketAddr::new(gateway.into(), exempt_port), t);
        assert_eq!(remote.expect("exempt port from the pod"), "ok");
    }
    // A full table still admits a new connection when the kernel evicts an unreplied
    // entry to make room (early_drop: it looks in the 8 buckets the new tuple hashes
    // near, so about one try in 500 here finds one of the 64 UDP entries).
    let early_drops = || in_netns(&node.0, early_drops_here);
    let evicted_before = early_drops();
    let lo = fetch(&node, ([127, 0, 0, 1], tracked_port).into(), t);
    let remote = fetch(&pod.ns, SocketAddr::new(gateway.into(), tracked_port), t);
    let evicted = early_drops() - evicted_before;
    assert!(
        (lo.is_err() && remote.is_err()) || evicted > 0,
        "a tracked port must not take a new connection while the table is full, but by \
         an early drop: {lo:?} {remote:?}, {evicted} early drops"
    );
    assert_eq!(count().trim(), "64", "still full throughout");
    eprintln!("tracked port while full: loopback {lo:?}, from the pod {remote:?}");
}

#[test]
fn without_cap_net_admin_install_and_status_say_so_with_the_hint() {
    if !tools_present() {
        return;
    }
    let Some(ns) = Netns::new("notrack-nocap") else {
        return;
    };
    let (install, status) = in_netns(&ns.0, || {
        common::caps::drop_from_this_thread(common::caps::CAP_NET_ADMIN);
        (nft_notrack::install(&[10360]), nft_notrack::status())
    });
    let err = install.expect_err("install needs CAP_NET_ADMIN");
    assert!(
        matches!(err, nft_notrack::NotrackError::PermissionDenied(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
    assert!(err.hint().contains("add NET_ADMIN"), "{}", err.hint());
    assert!(matches!(
        status,
        Err(nft_notrack::NotrackError::PermissionDenied(_))
    ));
    assert!(nft_list(&ns).is_none(), "nothing was installed");
}

/// A pod's connection that the node forwards (and here masquerades) to a server on
/// the exempt port elsewhere must stay tracked: the exemption is for traffic to the
/// node itself. Without `fib daddr type local` the SYN would go untracked, skip the
/// masquerade and reach the server from the pod's own address, and the server's
/// answers would skip the reverse translation.
#[test]
fn traffic_the_node_forwards_to_the_same_port_elsewhere_keeps_its_nat() {
    if !tools_present() {
        return;
    }
    let Some(node) = Netns::new("notrack-fwd") else {
        return;
    };
    let (Some(client), Some(server)) = (
        Pod::attach(&node, "notrack-fwd-c", 0),
        Pod::attach(&node, "notrack-fwd-s", 1),
    ) else {
        return;
    };
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    for pod in [&client, &server] {
        let gw = pod.gateway_v4.to_string();
        pod.ns.exec(&["ip", "route", "add", "default", "via", &gw]);
    }
    node.exec(&["nft", "add", "table", "ip", "ndnt_nat"]);
    node.exec(&[
        "nft",
        "add chain ip ndnt_nat post { type nat hook postrouting priority 100 ; }",
    ]);
    node.exec(&["nft", "add rule ip ndnt_nat post oifname vpod1 masquerade"]);

    let listener = in_netns(&server.ns.0, || TcpListener::bind("0.0.0.0:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let ports: &'static [u16] = Box::leak(vec![port].into_boxed_slice());
    on(&node, ports).unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("accept");
        s.write_all(b"ok").unwrap();
        peer
    });
    let to = SocketAddr::new(server.v4.into(), port);
    assert_eq!(fetch(&client.ns, to, Duration::from_secs(2)).unwrap(), "ok");
    let peer = peer.join().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::from(server.gateway_v4),
        "masqueraded to the node's address on the server's side, so tracked"
    );
    assert_eq!(tcp_entries_to(&node, port), 1);
}
