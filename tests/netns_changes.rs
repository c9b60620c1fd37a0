//! The netns and NIC collectors keep what they read of links between collections and
//! read again what the kernel announces as changed. On the real kernel: after the
//! agent has read a pod namespace and its veth, changes inside the namespace (an
//! address, an MTU, a new interface), on the host side (the veth's MTU) and a
//! namespace replaced by another must all show within a few intervals.

mod common;

use common::conntrack::is_root;
use common::{sh, skip, wait_for, Agent};
use nodediag::collect::netns::NetnsCollector;
use nodediag::collect::Collector;
use nodediag::host::HostRoot;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Namespaces, veths and processes made here; removed on drop.
struct Lab {
    netns: Vec<String>,
    veths: Vec<String>,
    sleepers: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for v in &self.veths {
            let _ = Command::new("ip")
                .args(["link", "delete", v])
                .stderr(Stdio::null())
                .status();
        }
        for n in &self.netns {
            let _ = Command::new("ip")
                .args(["netns", "delete", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Lab {
    /// A pinned namespace with a veth to the host, an address and a process inside.
    fn pod(&mut self, tag: &str, addr: &str) -> (String, String) {
        let pid = std::process::id();
        let (netns, veth) = (format!("ndchg-{pid}-{tag}"), format!("ndc{pid}{tag}"));
        sh("ip", &["netns", "add", &netns]);
        self.netns.push(netns.clone());
        sh(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        );
        self.veths.push(veth.clone());
        sh("ip", &["link", "set", &veth, "up"]);
        sh("ip", &["-n", &netns, "addr", "add", addr, "dev", "eth0"]);
        sh("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("a process in the namespace");
        self.sleepers.push(child);
        (netns, veth)
    }
}

fn veth(agent: &Agent, name: &str) -> Option<Value> {
    let v = agent.get_json(&format!("/api/v1/veths?interface={name}"));
    v["veths"].as_array()?.first().cloned()
}

fn interfaces(agent: &Agent, veth: &str) -> Option<Vec<Value>> {
    let v = agent.get_json(&format!("/api/v1/netns?interface={veth}"));
    v["namespaces"].as_array()?.first()?["interfaces"]
        .as_array()
        .cloned()
}

fn metric(agent: &Agent, series: &str) -> Option<String> {
    let (_, body) = agent.get("/metrics");
    body.lines()
        .find_map(|l| Some(l.strip_prefix(series)?.trim().to_string()))
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn announced_changes_are_read_again() {
    if !is_root() {
        skip("needs root for network namespaces");
        return;
    }
    let mut lab = Lab {
        netns: Vec::new(),
        veths: Vec::new(),
        sleepers: Vec::new(),
    };
    let (netns, host_veth) = lab.pod("a", "10.214.1.2/24");
    let agent = Agent::start(&[
        "--path.netns",
        "/run/netns",
        "--interval",
        "500ms",
        "--no-collector.conntrack",
        "--no-collector.kmsg",
        "--no-collector.disk",
        "--no-collector.cgroup",
        "--no-collector.pressure",
    ]);
    agent.wait_ready();
    wait_for("the pod's address", WAIT, || {
        veth(&agent, &host_veth).filter(|v| v["peer_addresses"][0] == "10.214.1.2/24")
    });
    let mtu_series = format!("nodediag_nic_mtu_bytes{{interface=\"{host_veth}\"}}");
    wait_for("the veth's MTU metric", WAIT, || {
        metric(&agent, &mtu_series).filter(|m| m == "1500")
    });

    // Inside the namespace: an address, an MTU and an interface.
    sh(
        "ip",
        &["-n", &netns, "addr", "add", "10.214.9.9/24", "dev", "eth0"],
    );
    sh("ip", &["-n", &netns, "link", "set", "eth0", "mtu", "1400"]);
    sh(
        "ip",
        &[
            "-n", &netns, "link", "add", "extra0", "type", "veth", "peer", "name", "extra1",
        ],
    );
    let v = wait_for("the changes inside the namespace", WAIT, || {
        veth(&agent, &host_veth).filter(|v| {
            v["peer_mtu"] == 1400
                && v["peer_addresses"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "10.214.9.9/24"))
        })
    });
    assert_eq!(v["peer_name"], "eth0");
    wait_for("the new interface", WAIT, || {
        interfaces(&agent, &host_veth).filter(|i| {
            i.iter()
                .any(|x| x["name"] == "extra0" && x["kind"] == "veth")
        })
    });

    // On the host side: the veth's MTU, in both collectors.
    sh("ip", &["link", "set", &host_veth, "mtu", "1300"]);
    wait_for("the veth's new MTU", WAIT, || {
        veth(&agent, &host_veth).filter(|v| v["mtu"] == 1300)
    });
    wait_for("the veth's new MTU metric", WAIT, || {
        metric(&agent, &mtu_series).filter(|m| m == "1300")
    });

    // The namespace goes and another takes its place, under a new veth.
    let mut first = lab.sleepers.remove(0);
    first.kill().unwrap();
    first.wait().unwrap();
    sh("ip", &["netns", "delete", &netns]);
    let (_, second) = lab.pod("b", "10.214.2.2/24");
    let v = wait_for("the new pod", WAIT, || {
        veth(&agent, &second).filter(|v| v["peer_addresses"][0] == "10.214.2.2/24")
    });
    assert_eq!(v["peer_state"], "live", "{v:#}");
    wait_for("the first veth to go", WAIT, || {
        veth(&agent, &host_veth).is_none().then_some(())
    });
}

/// Without it, changes inside other namespaces are not announced to the host.
const CAP_NET_BROADCAST: u32 = 11;

#[test]
fn without_cap_net_broadcast_every_namespace_is_read_every_time() {
    if !is_root() {
        skip("needs root for network namespaces");
        return;
    }
    let mut lab = Lab {
        netns: Vec::new(),
        veths: Vec::new(),
        sleepers: Vec::new(),
    };
    let (netns, host_veth) = lab.pod("nb", "10.214.3.2/24");
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let (changed_tx, changed_rx) = std::sync::mpsc::channel::<()>();
    let collector = std::thread::spawn(move || {
        common::caps::drop_from_this_thread(CAP_NET_BROADCAST);
        let mut c = NetnsCollector::new(
            HostRoot::default(),
            true,
            &["/run/netns".into()],
            &[],
            nodediag::diagnose::netns::tunnel_overhead,
        );
        let mut peer_mtu = || {
            let s = c.collect().unwrap();
            s.veths
                .iter()
                .find(|v| *v.name == *host_veth)
                .and_then(|v| v.peer_mtu)
        };
        first_tx.send(peer_mtu()).unwrap();
        changed_rx.recv().unwrap();
        peer_mtu()
    });
    assert_eq!(first_rx.recv().unwrap(), Some(1500));
    sh("ip", &["-n", &netns, "link", "set", "eth0", "mtu", "1450"]);
    changed_tx.send(()).unwrap();
    assert_eq!(
        collector.join().unwrap(),
        Some(1450),
        "unannounced, the change must still be read"
    );
}
