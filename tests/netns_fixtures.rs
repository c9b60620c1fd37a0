//! The netns collector against fixture trees: host-local IPAM and CNI configs (a
//! range nearly full with stale reservations, a full one, a broken config), an MTU
//! too large for a vxlan overlay, and a node where every optional source is absent.

mod common;

use common::{fixture, Agent};
use serde_json::Value;
use std::time::Duration;

fn start(tree: &str, rootfs: &std::path::Path) -> Agent {
    let dir = fixture(&format!("netns/{tree}"));
    let agent = Agent::start(&[
        "--no-netlink",
        "--path.procfs",
        dir.join("proc").to_str().unwrap(),
        "--path.sysfs",
        dir.join("sys").to_str().unwrap(),
        "--path.rootfs",
        rootfs.to_str().unwrap(),
        "--interval",
        "1s",
        "--no-collector.conntrack",
        "--no-collector.nic",
        // These trees hold no meminfo: a pressure collector failing on every sample
        // would keep /readyz at 503.
        "--no-collector.pressure",
    ]);
    agent.wait_ready();
    agent
}

fn finding<'a>(findings: &'a Value, id: &str, subject: &str) -> &'a Value {
    findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id && f["subject"] == subject)
        .unwrap_or_else(|| panic!("no {id} for {subject} in {findings:#}"))
}

#[test]
fn ipam_usage_stale_reservations_and_mtu_mismatch_from_fixture_trees() {
    let rootfs = fixture("netns/cni/rootfs");
    let agent = start("cni", &rootfs);
    let findings = agent.get_json("/api/v1/findings");

    let cbr0 = finding(&findings, "cni_ipam_exhausted", "cbr0");
    assert_eq!(cbr0["severity"], "warning");
    assert_eq!(cbr0["evidence"]["allocated"], 12);
    assert_eq!(cbr0["evidence"]["capacity"], 13);
    assert_eq!(
        cbr0["evidence"]["stale_reservations"], 11,
        "every reservation but the live sandbox's is stale"
    );
    assert_eq!(
        cbr0["evidence"]["config_file"],
        "/etc/cni/net.d/10-bridge.conflist"
    );
    let tiny = finding(&findings, "cni_ipam_exhausted", "tiny");
    assert_eq!(tiny["severity"], "critical");
    assert_eq!(tiny["evidence"]["data_dir"], "/var/lib/cni/tiny-state/tiny");

    let mtu = finding(&findings, "mtu_mismatch", "eth0");
    assert_eq!(mtu["evidence"]["uplink_mtu"], 1500);
    assert_eq!(mtu["evidence"]["max_mtu"], 1450, "1500 minus vxlan's 50");
    assert_eq!(mtu["evidence"]["interfaces_over"], 1);
    assert!(mtu["evidence"]["examples"][0]
        .as_str()
        .unwrap()
        .starts_with("veth1a2b3c4d mtu 1500"));
    assert!(
        !findings.to_string().contains("veth_orphaned"),
        "without netlink a veth's peer is unknown, never orphaned"
    );

    let netns = agent.get_json("/api/v1/netns?pod=web-5d8f7");
    let list = netns["namespaces"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{netns:#}");
    assert_eq!(list[0]["inode"], 4026532300u64);
    assert_eq!(list[0]["pod"]["namespace"], "shop");
    assert_eq!(list[0]["age_from"], "process");
    let broken = netns["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| {
            u["what"]
                .as_str()
                .unwrap()
                .ends_with("/etc/cni/net.d/99-broken.conflist")
        })
        .unwrap_or_else(|| panic!("the broken config is not named: {netns:#}"));
    assert!(broken["hint"].as_str().unwrap().contains("not valid JSON"));

    let metrics = agent.get("/metrics").1;
    for line in [
        "nodediag_cni_ipam_allocated_addresses{network=\"cbr0\"} 12",
        "nodediag_cni_ipam_capacity_addresses{network=\"cbr0\"} 13",
        "nodediag_cni_ipam_stale_reservations{network=\"cbr0\"} 11",
        "nodediag_cni_ipam_allocated_addresses{network=\"orphan-net\"} 1",
        "nodediag_netns_namespaces{state=\"live\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(
        !metrics.contains("nodediag_cni_ipam_capacity_addresses{network=\"orphan-net\"}"),
        "a network without a config has no known capacity"
    );
}

#[test]
fn every_optional_source_absent_is_reported_not_failed() {
    let rootfs = tempfile::tempdir().unwrap();
    let agent = start("absent", rootfs.path());
    let c = agent.get_json("/api/v1/collectors/netns");
    assert_eq!(c["status"]["state"], "ok", "{c:#}");
    let missing: Vec<String> = c["sample"]["unavailable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["what"].as_str().unwrap().to_string())
        .collect();
    for part in [
        "kubelet pod log directories",
        "kubelet container log links",
        "netns pin directories",
        "namespace interfaces and veth peers",
        "CNI configuration",
    ] {
        assert!(
            missing.iter().any(|m| m == part),
            "{part} not named in {missing:?}"
        );
    }
    assert_eq!(c["sample"]["namespaces"].as_array().unwrap().len(), 1);
    assert_eq!(c["sample"]["namespaces"][0]["host"], true);
    let (status, body) = agent.get("/api/v1/veths?nope=1");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown query parameter"));
    let report = agent.get("/").1;
    assert!(report.contains("netns pin directories"), "{report}");
    common::wait_for("a second sample", Duration::from_secs(10), || {
        let c = agent.get_json("/api/v1/collectors/netns");
        (c["runs_total"].as_u64()? >= 2 && c["failures_total"] == 0).then_some(())
    });
}

#[test]
fn the_netns_api_says_why_it_has_nothing_when_the_collector_is_off() {
    let dir = fixture("netns/absent");
    let rootfs = tempfile::tempdir().unwrap();
    let agent = Agent::start(&[
        "--no-netlink",
        "--path.procfs",
        dir.join("proc").to_str().unwrap(),
        "--path.sysfs",
        dir.join("sys").to_str().unwrap(),
        "--path.rootfs",
        rootfs.path().to_str().unwrap(),
        "--no-collector.netns",
        "--no-collector.conntrack",
        "--no-collector.pressure",
    ]);
    agent.wait_ready();
    for path in ["/api/v1/netns", "/api/v1/veths"] {
        let (status, body) = agent.get(path);
        assert_eq!(status, 503, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["collector"], "disabled", "{body}");
    }
}
