//! Real kernel: conntrack entries and a full table in a fresh network namespace, and a
//! real veth pair, seen by the agent running inside that namespace.

mod common;

use common::conntrack::{have, ConntrackMax, Netns};
use common::{skip, wait_for, Agent};
use std::time::Duration;

/// Findings of this signal only: a fresh namespace has forwarding off, and a busy
/// test machine may be under CPU pressure, both real findings of other collectors.
fn conntrack_findings(agent: &Agent) -> Vec<(String, String)> {
    agent
        .findings()
        .into_iter()
        .filter(|(id, _)| id.starts_with("conntrack_"))
        .collect()
}

fn conntrack_sample(agent: &Agent) -> serde_json::Value {
    agent.get_json("/api/v1/collectors/conntrack")["sample"].clone()
}

#[test]
fn entries_created_in_a_fresh_namespace_move_the_count() {
    if !have("conntrack") {
        skip("conntrack(8) not installed");
        return;
    }
    let Some(ns) = Netns::new("ct") else { return };
    let agent = Agent::start_in_netns(&ns.0, &["--interval", "300ms"]);
    agent.wait_ready();
    let before = conntrack_sample(&agent);
    assert_eq!(before["entries"], 0, "a fresh namespace starts empty");
    assert_eq!(before["stats_source"], "netlink", "root reads ctnetlink");
    for port in 1..=5 {
        let sport = (40000 + port).to_string();
        ns.exec(&[
            "conntrack",
            "-I",
            "-p",
            "udp",
            "-s",
            "192.0.2.1",
            "-d",
            "192.0.2.2",
            "--sport",
            &sport,
            "--dport",
            "53",
            "--timeout",
            "120",
        ]);
    }
    let sample = wait_for("5 conntrack entries", Duration::from_secs(15), || {
        let s = conntrack_sample(&agent);
        (s["entries"] == 5).then_some(s)
    });
    assert!(sample["stats"]["insert"].as_u64().unwrap() >= 5);
}

#[test]
fn a_full_table_is_flagged_with_drops_within_two_intervals() {
    if !have("nft") {
        skip("nft not installed");
        return;
    }
    let Some(ns) = Netns::new("full") else { return };
    ns.track_udp_only();
    let _max = ConntrackMax::set(64);
    let agent = Agent::start_in_netns(&ns.0, &["--interval", "500ms"]);
    agent.wait_ready();
    assert!(
        conntrack_findings(&agent).is_empty(),
        "{:?}",
        agent.findings()
    );

    // 100 UDP flows to closed loopback ports inside the namespace: the first 64 fill
    // the table, the rest are dropped by conntrack.
    ns.send_udp_flows(100);
    let found = wait_for(
        "conntrack_table_full and conntrack_drops",
        Duration::from_secs(1) + Duration::from_secs(10),
        || {
            let f = agent.findings();
            let has = |id: &str| f.iter().any(|(i, s)| i == id && s == "host");
            (has("conntrack_table_full") && has("conntrack_drops")).then_some(f)
        },
    );
    assert!(
        !found.iter().any(|(i, _)| i == "conntrack_table_high"),
        "full replaces high"
    );
    let v = agent.get_json("/api/v1/findings?finding=conntrack_drops");
    assert!(
        v["findings"][0]["evidence"]["dropped_in_window"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (_, metrics) = agent.get("/metrics");
    assert!(metrics.contains(
        "nodediag_finding_active{finding=\"conntrack_drops\",severity=\"critical\",subject=\"host\"} 1"
    ));
}

#[test]
fn a_veth_pair_is_classified_virtual() {
    let Some(ns) = Netns::new("veth") else { return };
    ns.exec(&[
        "ip", "link", "add", "ndv0", "type", "veth", "peer", "name", "ndv1",
    ]);
    ns.exec(&["ip", "link", "set", "ndv0", "up"]);
    ns.exec(&["ip", "link", "set", "ndv1", "up"]);
    let agent = Agent::start_in_netns(&ns.0, &["--interval", "300ms"]);
    agent.wait_ready();
    let nic = agent.get_json("/api/v1/collectors/nic");
    let ifaces = nic["sample"]["interfaces"].as_array().unwrap();
    for name in ["ndv0", "ndv1"] {
        let i = ifaces.iter().find(|i| i["name"] == name).expect(name);
        assert_eq!(i["class"], "virtual", "{i}");
        assert_eq!(i["kind"], "veth", "{i}");
        assert!(
            i["speed_mbps"].is_null(),
            "a veth's speed means nothing: {i}"
        );
    }
    let nic: Vec<_> = agent
        .findings()
        .into_iter()
        .filter(|(id, _)| id.starts_with("nic_"))
        .collect();
    assert!(nic.is_empty(), "{nic:?}");
}
