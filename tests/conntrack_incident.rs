//! The conntrack incident end to end on the real kernel: a full table with TCP
//! tracked (the agent still answers through its notrack table), "full" judged from
//! the peak of the count reads and not from one sampled instant, which pod fills the
//! table, a dump cut by its budget, the notrack table gone after SIGTERM, not
//! doubled by a restart nor taken from a newer agent, and an agent without
//! CAP_NET_ADMIN that still serves.
//!
//! Each test runs the agent in a network namespace of its own (the table and the
//! notrack rules are per namespace); the tests that lower nf_conntrack_max hold the
//! cross-process lock of `common::conntrack` and restore it.

mod common;

use common::conntrack::{have, is_root, ConntrackMax, Netns};
use common::pod::PodTraces;
use common::{in_netns, sh, skip, wait_for, Agent, BIN};
use serde_json::Value;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn prerequisites(tools: &[&str]) -> bool {
    if !is_root() {
        skip("needs root (network namespaces, nftables, nf_conntrack_max)");
        return false;
    }
    for tool in tools {
        if !have(tool) {
            skip(&format!("{tool} is not installed"));
            return false;
        }
    }
    true
}

fn has_finding(agent: &Agent, id: &str) -> Option<Value> {
    let v = agent.get_json(&format!("/api/v1/findings?finding={id}"));
    v["findings"].as_array()?.first().cloned()
}

fn notrack_setup(agent: &Agent) -> Value {
    agent.get_json("/api/v1/snapshot")["setup"]["notrack"].clone()
}

/// The `inet nodediag` table of a namespace as `nft` prints it, None when absent.
fn nodediag_table(ns: &Netns) -> Option<String> {
    let tables = ns.exec(&["nft", "list", "tables"]);
    tables
        .lines()
        .any(|l| l.trim() == "table inet nodediag")
        .then(|| ns.exec(&["nft", "list", "table", "inet", "nodediag"]))
}

/// Rules of the table (`... notrack` lines).
fn notrack_rules(table: &str) -> usize {
    table
        .lines()
        .filter(|l| l.trim_end().ends_with(" notrack"))
        .count()
}

fn port_of(agent: &Agent) -> u16 {
    agent.addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// GET `path` from inside the agent's namespace, timed.
fn timed_get(agent: &Agent, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, body) = agent.get(path);
    (status, body, started.elapsed())
}

#[test]
fn the_agent_answers_while_a_table_with_tcp_tracked_is_full_and_calls_it_full() {
    if !prerequisites(&["nft"]) {
        return;
    }
    let Some(ns) = Netns::new("cti-full") else {
        return;
    };
    // TCP tracked like everything else: no untracked-TCP workaround.
    ns.track_all();
    let max = 512;
    let _max = ConntrackMax::set(max);
    let agent = Agent::start_in_netns(
        &ns.0,
        &[
            "--interval",
            "3s",
            "--conntrack.peak-interval",
            "200ms",
            "--no-collector.disk",
            "--no-collector.cgroup",
        ],
    );
    agent.wait_ready();
    let setup = notrack_setup(&agent);
    assert_eq!(setup["state"], "installed", "{setup}");
    assert_eq!(setup["table"], "inet nodediag");
    assert_eq!(setup["ports"], serde_json::json!([port_of(&agent)]));

    // A listener of the test's own, which no notrack rule covers: while the table
    // is full its SYNs have no place in it.
    let control = in_netns(&ns.0, || {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind a control listener")
    });
    let control_addr = control.local_addr().unwrap();

    // 1,200 UDP flows with room for 512: the table fills and stays full for the UDP
    // timeout (30 s).
    ns.send_udp_flows(1200);
    let full_at = Instant::now();
    let count = ns.conntrack_count();
    assert!(count + 8 >= max, "the table holds {count} of {max}");

    let refused = in_netns(&ns.0, move || {
        (0..3)
            .filter(|_| {
                TcpStream::connect_timeout(&control_addr, Duration::from_millis(700)).is_err()
            })
            .count()
    });
    assert!(
        refused > 0,
        "new TCP connections must be dropped by the full table (the control listener accepted all 3)"
    );

    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (status, body, took) = timed_get(&agent, "/");
        assert_eq!(status, 200, "{body}");
        latencies.push(took);
    }
    let worst = latencies.iter().max().unwrap();
    eprintln!("GET / with the table full ({count} of {max}): {latencies:.1?}");
    assert!(
        *worst < Duration::from_secs(2),
        "GET / took {worst:?} while the table was full"
    );

    let f = wait_for(
        "conntrack_table_full from the peak",
        Duration::from_secs(20),
        || {
            has_finding(&agent, "conntrack_table_full").filter(|f| {
                f["evidence"]["detected_by"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|x| x == "peak"))
            })
        },
    );
    eprintln!(
        "conntrack_table_full (from the peak) {:.1?} after the table filled",
        full_at.elapsed()
    );
    assert!(
        f["evidence"]["peak_entries"].as_u64().unwrap() + 8 >= max,
        "{f:#}"
    );
    assert_eq!(f["severity"], "critical");
    let report = agent.get("/").1;
    assert!(report.contains("conntrack_table_full"), "{report}");
    // The collector dumped the table when it crossed its high level: the report
    // shows who fills it (here the namespace's own loopback).
    assert!(report.contains("\nconntrack top (dump of "), "{report}");
    assert!(report.contains("127.0.0.1"), "{report}");
    let (_, metrics) = agent.get("/metrics");
    let peak: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nodediag_conntrack_entries_peak "))
        .expect("the peak gauge")
        .parse()
        .unwrap();
    assert!(peak as u64 + 8 >= max, "peak gauge {peak}");
}

#[test]
fn a_table_that_fills_and_drains_between_two_samples_is_reported_full_with_when() {
    if !prerequisites(&["nft", "conntrack"]) {
        return;
    }
    let Some(ns) = Netns::new("cti-blip") else {
        return;
    };
    ns.track_all();
    let max = 256;
    let _max = ConntrackMax::set(max);
    let interval = Duration::from_secs(6);
    let agent = Agent::start_in_netns(
        &ns.0,
        &[
            "--interval",
            "6s",
            "--conntrack.peak-interval",
            "100ms",
            "--no-collector.disk",
            "--no-collector.cgroup",
            "--no-collector.netns",
        ],
    );
    agent.wait_ready();
    let runs = |agent: &Agent| {
        agent.get_json("/api/v1/collectors/conntrack")["runs_total"]
            .as_u64()
            .unwrap()
    };
    // The fill and the flush must fall between two samples; when a sample lands
    // in between (a loaded machine), try again.
    for attempt in 1..=3 {
        let before = runs(&agent);
        wait_for("a fresh sample", interval * 2, || {
            (runs(&agent) > before).then_some(())
        });
        let sampled = runs(&agent);
        let started = Instant::now();
        ns.send_udp_flows(400);
        let full = ns.conntrack_count();
        // The state under test: full for a second, ten reads at 100 ms.
        std::thread::sleep(Duration::from_secs(1));
        ns.exec(&["conntrack", "-F"]);
        let drained = ns.conntrack_count();
        let filled_and_drained_in = started.elapsed();
        let sample = wait_for("the next sample", interval * 2, || {
            let c = agent.get_json("/api/v1/collectors/conntrack");
            (c["runs_total"].as_u64().unwrap() > sampled).then_some(c)
        });
        let s = &sample["sample"];
        if runs(&agent) > sampled + 1 || s["entries"].as_u64().unwrap() * 100 >= max * 95 {
            eprintln!("attempt {attempt}: a sample saw the table full, trying again");
            continue;
        }
        eprintln!(
            "attempt {attempt}: {full} entries, flushed to {drained}, in {filled_and_drained_in:.1?}; the next sample read {} with peak {}",
            s["entries"], s["peak"]["entries"]
        );
        assert!(full + 8 >= max, "filled to {full}");
        assert!(s["peak"]["entries"].as_u64().unwrap() + 8 >= max, "{s:#}");
        assert!(s["peak"]["reads_full"].as_u64().unwrap() >= 1, "{s:#}");
        let f = wait_for(
            "conntrack_table_full after the drain",
            Duration::from_secs(5),
            || has_finding(&agent, "conntrack_table_full"),
        );
        let summary = f["summary"].as_str().unwrap();
        assert!(summary.starts_with("conntrack table was full"), "{f:#}");
        assert!(summary.contains(", full from "), "{f:#}");
        let e = &f["evidence"];
        assert!(e["full_from"].as_str().unwrap() <= e["full_until"].as_str().unwrap());
        assert_eq!(e["detected_by"][0], "peak");
        assert!(e["entries"].as_u64().unwrap() * 100 < max * 95, "{f:#}");
        return;
    }
    panic!("three times a sample fell between the fill and the flush");
}

/// A "pod": a pinned namespace joined to the node namespace by a veth, a process
/// inside it in a pod-like cgroup, and the kubelet's log names of it under a rootfs.
struct Pod {
    netns: String,
    name: String,
    addr: String,
    node_addr: String,
    process: Option<Child>,
    cgroup: PathBuf,
    rootfs: tempfile::TempDir,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup/pids";

impl Pod {
    fn start(node: &Netns) -> Pod {
        let pid = std::process::id();
        let netns = format!("ndcw-pod-{pid}");
        let veth = format!("ndcw{pid}");
        let uid = format!("{pid:08x}-0000-4000-8000-00000000c0ff");
        let container_id = format!("{:0>64}", format!("{pid:x}cc"));
        let name = format!("talker-{pid}");
        // 198.18.0.0/15 (RFC 2544) is used by no other test.
        let subnet = pid % 250 + 1;
        let cgroup = Path::new(CGROUP_ROOT)
            .join("kubepods/burstable")
            .join(format!("pod{uid}"))
            .join(&container_id);
        let mut pod = Pod {
            netns: netns.clone(),
            name: name.clone(),
            addr: format!("198.18.{subnet}.2"),
            node_addr: format!("198.18.{subnet}.1"),
            process: None,
            cgroup: cgroup.clone(),
            rootfs: tempfile::tempdir().unwrap(),
        };
        sh("ip", &["netns", "add", &netns]);
        sh(
            "ip",
            &[
                "-n", &node.0, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &netns,
            ],
        );
        let node_cidr = format!("{}/30", pod.node_addr);
        let pod_cidr = format!("{}/30", pod.addr);
        sh(
            "ip",
            &["-n", &node.0, "addr", "add", &node_cidr, "dev", &veth],
        );
        sh("ip", &["-n", &node.0, "link", "set", &veth, "up"]);
        sh(
            "ip",
            &["-n", &netns, "addr", "add", &pod_cidr, "dev", "eth0"],
        );
        sh("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        sh("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        PodTraces {
            netns: &netns,
            cgroup: &cgroup,
            rootfs: pod.rootfs.path(),
            name: &name,
            uid: &uid,
            container_id: &container_id,
        }
        .start(&mut pod.process);
        pod
    }

    /// `flows` DNS-shaped UDP flows from the pod to the node: a socket (a source
    /// port) each, all to port 53 of the node's veth address.
    fn send_dns_flows(&self, flows: u32) {
        let script = format!(
            "for i in $(seq 1 {flows}); do echo x 2>/dev/null >/dev/udp/{}/53 || true; done",
            self.node_addr
        );
        sh("ip", &["netns", "exec", &self.netns, "bash", "-c", &script]);
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        if let Some(parent) = self.cgroup.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        // Shared parents: removed only when no one else's cgroup is left in them.
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("kubepods/burstable"));
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join("kubepods"));
        // The veth goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn the_pod_that_fills_the_table_is_named_first_in_the_top_and_the_remedy() {
    if !prerequisites(&["nft"]) {
        return;
    }
    if !Path::new(CGROUP_ROOT).join("cgroup.procs").exists() {
        skip(&format!("no cgroup v1 pids controller at {CGROUP_ROOT}"));
        return;
    }
    let Some(node) = Netns::new("cti-node") else {
        return;
    };
    node.track_all();
    // 300 flows from the pod and 50 of the node's own fill 350 of 400: high
    // (>= 80%), not full, so the collector dumps the table and the remedy of
    // conntrack_table_high names who fills it.
    let _max = ConntrackMax::set(400);
    let pod = Pod::start(&node);
    let agent = Agent::start_in_netns(
        &node.0,
        &[
            "--interval",
            "1s",
            "--path.netns",
            "/run/netns",
            "--path.rootfs",
            pod.rootfs.path().to_str().unwrap(),
            "--no-collector.disk",
            "--no-collector.cgroup",
            "--no-collector.nic",
            "--no-collector.pressure",
        ],
    );
    agent.wait_ready();
    let pod_name = format!("team-a/{}", pod.name);
    wait_for(
        "the netns inventory to name the pod",
        Duration::from_secs(15),
        || {
            let v = agent.get_json(&format!("/api/v1/netns?pod={}", pod.name));
            (!v["namespaces"].as_array()?.is_empty()).then_some(())
        },
    );

    pod.send_dns_flows(300);
    node.send_udp_flows(50);
    let high = wait_for(
        "conntrack_table_high whose remedy names the pod",
        Duration::from_secs(20),
        || {
            has_finding(&agent, "conntrack_table_high")
                .filter(|f| f["remedy"].as_str().unwrap_or("").contains(&pod_name))
        },
    );
    let remedy = high["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!("The top sources are {pod_name} (")),
        "{remedy}"
    );
    assert!(
        remedy.contains(&format!("the top destination is {}:53/udp", pod.node_addr)),
        "{remedy}"
    );

    let top = agent.get_json("/api/v1/conntrack/top?limit=3");
    let first = &top["owners"]["rows"][0];
    assert_eq!(first["key"], pod_name.as_str(), "{top:#}");
    assert!(first["share"].as_f64().unwrap() > 0.75, "{top:#}");
    assert_eq!(top["sources"]["rows"][0]["key"], pod.addr.as_str());
    assert_eq!(top["sources"]["rows"][0]["owner"], pod_name.as_str());
    let dest = &top["destinations"]["rows"][0];
    assert_eq!(dest["key"], format!("{}:53/udp", pod.node_addr), "{top:#}");
    assert!(
        top["states"]["unreplied"]["share"].as_f64().unwrap() > 0.9,
        "{top:#}"
    );
    assert_eq!(top["cut"], Value::Null);
    assert!(top["entries_seen"].as_u64().unwrap() >= 300, "{top:#}");
    assert!(top["table_entries"].as_u64().unwrap() >= 300, "{top:#}");
    assert_eq!(
        top["owners"]["rows"].as_array().unwrap().len(),
        2,
        "the pod and 127.0.0.1"
    );

    let report = agent.get("/").1;
    let section = report
        .split("\nconntrack top (dump of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no conntrack top section: {report}"));
    let first_source = section
        .lines()
        .skip_while(|l| !l.contains("sources (pods):"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_source.ends_with(&pod_name), "{report}");
}

#[test]
fn a_dump_cut_by_its_budget_says_so_and_a_recent_one_is_shared() {
    if !prerequisites(&["nft"]) {
        return;
    }
    let Some(ns) = Netns::new("cti-cut") else {
        return;
    };
    ns.track_udp_only();
    let agent = Agent::start_in_netns(
        &ns.0,
        &[
            "--interval",
            "1s",
            "--conntrack.top-max-entries",
            "10",
            "--no-collector.disk",
            "--no-collector.cgroup",
        ],
    );
    agent.wait_ready();
    ns.send_udp_flows(60);
    let top = agent.get_json("/api/v1/conntrack/top");
    assert_eq!(top["cut"], "max_entries", "{top:#}");
    assert_eq!(top["entries_seen"], 10, "{top:#}");
    assert!(top["table_entries"].as_u64().unwrap() >= 60, "{top:#}");
    assert_eq!(top["budget"]["max_entries"], 10);
    assert_eq!(top["shared"], false);
    assert_eq!(top["trigger"], "request");
    let again = agent.get_json("/api/v1/conntrack/top?limit=1");
    assert_eq!(again["shared"], true, "{again:#}");
    assert_eq!(again["dumped_at"], top["dumped_at"]);
    assert_eq!(again["sources"]["rows"].as_array().unwrap().len(), 1);
    let (status, body) = agent.get("/api/v1/conntrack/top?limit=0");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1 to 100"), "{body}");
    let (status, body) = agent.get("/api/v1/conntrack/top?max=5");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown query parameter"), "{body}");
}

#[test]
fn the_notrack_table_is_replaced_on_restart_left_to_a_newer_agent_and_gone_after_sigterm() {
    if !prerequisites(&["nft"]) {
        return;
    }
    let Some(ns) = Netns::new("cti-nt") else {
        return;
    };
    let args = [
        "--interval",
        "1s",
        "--no-collector.disk",
        "--no-collector.cgroup",
    ];
    let first = Agent::start_in_netns(&ns.0, &args);
    first.wait_ready();
    let first_port = port_of(&first);
    let table = nodediag_table(&ns).expect("the table while the agent runs");
    assert_eq!(notrack_rules(&table), 3, "{table}");
    // Killed without a chance to clean up: the table stays behind.
    // SAFETY: kill(2) on our child's pid (`ip netns exec` execs the agent in place).
    unsafe { libc::kill(first.pid() as libc::pid_t, libc::SIGKILL) };
    drop(first);
    assert!(
        nodediag_table(&ns).is_some(),
        "a killed agent leaves its table"
    );

    let mut second = Agent::start_in_netns(&ns.0, &args);
    second.wait_ready();
    let second_port = port_of(&second);
    let table = nodediag_table(&ns).expect("the table of the restarted agent");
    assert_eq!(notrack_rules(&table), 3, "not piled up: {table}");
    assert!(table.contains(&format!("dport {second_port} ")), "{table}");
    if first_port != second_port {
        assert!(!table.contains(&format!("port {first_port} ")), "{table}");
    }
    assert_eq!(notrack_setup(&second)["state"], "installed");

    // Another agent started beside it installs its own table: the older agent's
    // exit must not take the newer one's exemption away.
    let mut third = Agent::start_in_netns(&ns.0, &args);
    third.wait_ready();
    let third_port = port_of(&third);
    assert_ne!(third_port, second_port);
    assert!(second.terminate(), "exits cleanly on SIGTERM");
    let table = nodediag_table(&ns).expect("the newer agent's table stays");
    assert!(table.contains(&format!("dport {third_port} ")), "{table}");
    assert!(third.terminate(), "exits cleanly on SIGTERM");
    assert_eq!(nodediag_table(&ns), None, "no trace after SIGTERM");
}

#[test]
fn without_cap_net_admin_the_agent_serves_and_says_notrack_is_unavailable() {
    if !prerequisites(&["nft", "setpriv"]) {
        return;
    }
    let Some(ns) = Netns::new("cti-nocap") else {
        return;
    };
    // Out of the bounding set, so root does not get it back when the agent execs.
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.0,
        "setpriv",
        "--bounding-set=-net_admin",
        BIN,
    ]);
    let agent = Agent::start_with(
        cmd,
        &[
            "--interval",
            "1s",
            "--no-collector.disk",
            "--no-collector.cgroup",
        ],
        Some(ns.0.clone()),
    );
    agent.wait_ready();
    let setup = notrack_setup(&agent);
    assert_eq!(setup["state"], "unavailable", "{setup}");
    assert!(
        setup["hint"].as_str().unwrap().contains("NET_ADMIN"),
        "{setup}"
    );
    let (status, report) = agent.get("/");
    assert_eq!(status, 200);
    assert!(
        report.contains("agent setup not in place:\n  notrack  unavailable  changing nftables needs CAP_NET_ADMIN"),
        "{report}"
    );
    let (status, body) = agent.get("/api/v1/conntrack/top");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("CAP_NET_ADMIN"), "{body}");
    assert_eq!(nodediag_table(&ns), None, "nothing installed");
}
