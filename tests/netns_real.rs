//! The netns collector on the real kernel: network namespaces pinned with `ip netns`,
//! veth pairs into them, a process inside each placed in a pod-like cgroup, and
//! kubelet-like log directories in a temporary rootfs. Each veth must name its pod;
//! killing a namespace's process while its pin stays must raise netns_leaked and
//! veth_orphaned. Everything made here is removed on drop, also when an assert fails.

mod common;

use common::pod::PodTraces;
use common::{sh, wait_for, Agent};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup/pids";

struct Pod {
    netns: String,
    veth: String,
    name: String,
    uid: String,
    container_id: String,
    process: Option<Child>,
    cgroup: PathBuf,
}

/// Owns every kernel object the test makes.
struct Lab {
    pods: Vec<Pod>,
    rootfs: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pod in &mut self.pods {
            if let Some(mut p) = pod.process.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
            let _ = std::fs::remove_dir(&pod.cgroup);
            if let Some(parent) = pod.cgroup.parent() {
                let _ = std::fs::remove_dir(parent);
            }
            let _ = Command::new("ip")
                .args(["link", "delete", &pod.veth])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["netns", "delete", &pod.netns])
                .stderr(Stdio::null())
                .status();
        }
        // Shared parents: removed only when no one else's cgroup is left in them.
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("kubepods/burstable"));
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("kubepods"));
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (ip) is not installed".into());
    }
    if !Path::new(CGROUP_ROOT).join("cgroup.procs").exists() {
        return Some(format!("no cgroup v1 pids controller at {CGROUP_ROOT}"));
    }
    None
}

/// The default route's interface and its MTU, as the collector will find them.
fn uplink_mtu() -> Option<u32> {
    let route = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f[0].to_string())
    })?;
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn make_pod(lab: &mut Lab, i: usize, mtu: u32) {
    let pid = std::process::id();
    let netns = format!("ndtest-{pid}-{i}");
    let veth = format!("ndv{pid}x{i}");
    let uid = format!("{pid:08x}-0000-4000-8000-{i:012x}");
    let container_id = format!("{:0>64}", format!("{pid:x}c{i}"));
    let name = format!("web-{pid}-{i}");
    let cgroup = Path::new(CGROUP_ROOT)
        .join("kubepods/burstable")
        .join(format!("pod{uid}"))
        .join(&container_id);
    lab.pods.push(Pod {
        netns: netns.clone(),
        veth: veth.clone(),
        name: name.clone(),
        uid: uid.clone(),
        container_id: container_id.clone(),
        process: None,
        cgroup: cgroup.clone(),
    });
    sh("ip", &["netns", "add", &netns]);
    sh(
        "ip",
        &[
            "link",
            "add",
            &veth,
            "mtu",
            &mtu.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu.to_string(),
            "netns",
            &netns,
        ],
    );
    sh("ip", &["link", "set", &veth, "up"]);
    let addr = format!("10.213.{}.2/24", i + 1);
    sh("ip", &["-n", &netns, "addr", "add", &addr, "dev", "eth0"]);
    sh("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
    let rootfs = lab.rootfs.path().to_path_buf();
    PodTraces {
        netns: &netns,
        cgroup: &cgroup,
        rootfs: &rootfs,
        name: &name,
        uid: &uid,
        container_id: &container_id,
    }
    .start(&mut lab.pods.last_mut().unwrap().process);
}

fn veth(agent: &Agent, name: &str) -> Option<Value> {
    let v = agent.get_json(&format!("/api/v1/veths?interface={name}"));
    v["veths"].as_array()?.first().cloned()
}

fn has_finding(agent: &Agent, id: &str, subject: &str) -> bool {
    agent
        .findings()
        .iter()
        .any(|(i, s)| i == id && s == subject)
}

#[test]
fn veths_name_their_pods_and_a_killed_pod_leaves_a_leak() {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return;
    }
    let uplink = uplink_mtu().expect("a default route with an MTU");
    let mut lab = Lab {
        pods: Vec::new(),
        rootfs: tempfile::tempdir().unwrap(),
    };
    // Pod 1's MTU fits under the uplink even with a tunnel; pod 0's does not.
    make_pod(&mut lab, 0, uplink + 100);
    make_pod(&mut lab, 1, uplink - 100);

    let interval = Duration::from_secs(1);
    let agent = Agent::start(&[
        "--path.netns",
        "/run/netns",
        "--path.rootfs",
        lab.rootfs.path().to_str().unwrap(),
        "--interval",
        "1s",
        "--netns.leak-min-age",
        "0s",
        "--no-collector.conntrack",
        "--no-collector.nic",
    ]);
    agent.wait_ready();

    for pod in &lab.pods {
        let v = wait_for(
            &format!("{} to name its pod", pod.veth),
            Duration::from_secs(15),
            || veth(&agent, &pod.veth).filter(|v| v["pod"]["pod"] == pod.name.as_str()),
        );
        assert_eq!(v["pod"]["namespace"], "team-a");
        assert_eq!(v["pod"]["pod_uid"], pod.uid.as_str());
        assert_eq!(v["pod"]["container_id"], pod.container_id.as_str());
        assert_eq!(v["peer_state"], "live");
        assert_eq!(v["peer_name"], "eth0");
        assert_eq!(v["peer_pins"][0], format!("/run/netns/{}", pod.netns));
        assert!(
            v["peer_addresses"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a.as_str().unwrap().starts_with("10.213.")),
            "{v:#}"
        );
        let ns = agent.get_json(&format!("/api/v1/netns?interface={}", pod.veth));
        let list = ns["namespaces"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{ns:#}");
        assert_eq!(list[0]["processes"], 1);
        assert_eq!(list[0]["pod"]["pod"], pod.name.as_str());
    }
    let by_pod = agent.get_json(&format!("/api/v1/veths?pod={}", lab.pods[1].name));
    assert_eq!(by_pod["veths"].as_array().unwrap().len(), 1, "{by_pod:#}");
    assert_eq!(by_pod["veths"][0]["name"], lab.pods[1].veth.as_str());

    let mtu = agent.get_json("/api/v1/findings?finding=mtu_mismatch");
    let evidence = &mtu["findings"][0]["evidence"];
    assert_eq!(evidence["uplink_mtu"], uplink, "{mtu:#}");
    let examples = evidence["examples"].to_string();
    // Examples stop at ten: other veths on a shared machine may come first.
    if evidence["interfaces_over"].as_u64().unwrap() <= 10 {
        assert!(examples.contains(&lab.pods[0].veth), "{mtu:#}");
    }
    assert!(!examples.contains(&lab.pods[1].veth), "{mtu:#}");
    for pod in &lab.pods {
        assert!(!has_finding(&agent, "netns_leaked", &pod.netns));
    }

    // The pod dies; its pin and veth stay, as when CNI DEL never ran.
    let mut process = lab.pods[0].process.take().unwrap();
    process.kill().unwrap();
    process.wait().unwrap();
    let killed = Instant::now();
    let (leak, orphan) = (&lab.pods[0].netns, &lab.pods[0].veth);
    wait_for(
        "netns_leaked and veth_orphaned",
        Duration::from_secs(20),
        || {
            (has_finding(&agent, "netns_leaked", leak)
                && has_finding(&agent, "veth_orphaned", orphan))
            .then_some(())
        },
    );
    let took = killed.elapsed();
    println!("leak flagged {took:?} after the kill (interval {interval:?})");
    // Two intervals, plus slack for a loaded machine.
    assert!(
        took < interval * 2 + Duration::from_secs(3),
        "took {took:?}"
    );

    let findings = agent.get_json("/api/v1/findings?finding=veth_orphaned");
    let f = findings["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == orphan.as_str())
        .unwrap();
    assert_eq!(f["evidence"]["peer_state"], "empty");
    assert_eq!(
        f["evidence"]["former_pod"],
        format!("team-a/{}", lab.pods[0].name),
        "the pod seen before the kill is remembered"
    );
    assert!(!has_finding(&agent, "netns_leaked", &lab.pods[1].netns));
    assert!(!has_finding(&agent, "veth_orphaned", &lab.pods[1].veth));
    let report = agent.get("/").1;
    assert!(
        report.contains(&format!("ip netns delete {leak}")),
        "{report}"
    );
    assert!(
        report.contains(&format!("ip link delete {orphan}")),
        "{report}"
    );
}
