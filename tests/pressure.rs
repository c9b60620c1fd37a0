//! The pressure and kmsg collectors against fixture trees: a base tree of a healthy
//! node plus overlays (tests/fixtures/pressure/<variant>/) that put one signal on one
//! side of its threshold, and kernel log records fed through a FIFO.

mod common;

use common::{check, fixture, wait_for, Agent};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const IDS: &str = "memory_pressure,cpu_pressure,oom_kills,pid_exhaustion,fd_exhaustion,inotify_watches_exhausted,neighbor_table_overflow,forwarding_disabled,netdev_unregister_stuck";

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != ".remove" {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The base tree with each variant laid over it in order; a variant's `.remove`
/// lists paths the older kernel it stands for does not have.
fn tree(variants: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("pressure/base"), dir.path());
    for v in variants {
        let src = fixture(&format!("pressure/{v}"));
        assert!(src.is_dir(), "no fixture {}", src.display());
        copy_tree(&src, dir.path());
        if let Ok(list) = fs::read_to_string(src.join(".remove")) {
            for rel in list.lines().filter(|l| !l.is_empty()) {
                let p = dir.path().join(rel);
                if p.is_dir() {
                    fs::remove_dir_all(&p).unwrap();
                } else {
                    fs::remove_file(&p).unwrap();
                }
            }
        }
    }
    dir
}

fn paths(dir: &Path) -> Vec<String> {
    let p = |s: &str| dir.join(s).to_string_lossy().into_owned();
    vec![
        "--no-netlink".into(),
        "--path.procfs".into(),
        p("proc"),
        "--path.sysfs".into(),
        p("sys"),
        "--path.rootfs".into(),
        p("rootfs"),
    ]
}

/// `nodediag check` limited to this findings (so only the pressure collector
/// runs): (exit code, findings as (id, severity, subject)).
fn check_variant(variants: &[&str]) -> (i32, Vec<(String, String, String)>, Value) {
    let dir = tree(variants);
    let mut args: Vec<String> = vec![
        "--format".into(),
        "json".into(),
        "--no-collector.kmsg".into(),
        "--check.delay".into(),
        "10ms".into(),
        "--finding".into(),
        IDS.into(),
    ];
    args.extend(paths(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = check(&args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let findings = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("id"), s("severity"), s("subject"))
        })
        .collect();
    (code, findings, v)
}

fn expect(variants: &[&str], want: &[(&str, &str, &str)]) -> Value {
    let (code, got, v) = check_variant(variants);
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want, "variants {variants:?}");
    assert_eq!(
        code,
        if want.is_empty() { 0 } else { 1 },
        "exit code for {variants:?}"
    );
    v
}

#[test]
fn the_base_tree_is_a_healthy_node() {
    let v = expect(&[], &[]);
    assert_eq!(v["collectors"]["pressure"]["status"]["state"], "ok");
}

#[test]
fn memory_pressure_on_both_sides_of_each_threshold() {
    expect(&["memory-available-10pct"], &[]);
    let v = expect(
        &["memory-available-9pct"],
        &[("memory_pressure", "warning", "host")],
    );
    let ev = &v["findings"][0]["evidence"];
    assert_eq!(ev["mem_available_bytes"], 1622016u64 * 1024);
    // capacity - (usage - inactive_file) of the v1 root memory cgroup
    assert_eq!(
        ev["kubelet_available_bytes"],
        16384000u64 * 1024 - (9437184000 - 3670016000)
    );
    expect(&["memory-psi-full-10pct"], &[]);
    let v = expect(
        &["memory-psi-full-above"],
        &[("memory_pressure", "warning", "host")],
    );
    assert_eq!(v["findings"][0]["evidence"]["psi_full_avg60"], 0.1001);
}

#[test]
fn cpu_pressure_on_both_sides() {
    expect(&["cpu-psi-50pct"], &[]);
    let v = expect(&["cpu-psi-above"], &[("cpu_pressure", "warning", "host")]);
    assert_eq!(v["findings"][0]["evidence"]["psi_some_avg60"], 0.5001);
}

#[test]
fn pid_exhaustion_levels_and_threads_max() {
    expect(&["pids-90pct"], &[]);
    expect(&["pids-warning"], &[("pid_exhaustion", "warning", "host")]);
    let v = expect(
        &["pids-critical"],
        &[("pid_exhaustion", "critical", "host")],
    );
    assert_eq!(v["findings"][0]["evidence"]["tasks"], 31200);
    let v = expect(
        &["threads-max-tight"],
        &[("pid_exhaustion", "critical", "host")],
    );
    assert_eq!(v["findings"][0]["evidence"]["limit"], "kernel.threads-max");
}

#[test]
fn fd_exhaustion_levels() {
    expect(&["fd-80pct"], &[]);
    expect(&["fd-warning"], &[("fd_exhaustion", "warning", "host")]);
    expect(&["fd-critical"], &[("fd_exhaustion", "critical", "host")]);
}

#[test]
fn neighbour_table_near_gc_thresh3() {
    expect(&["neighbor-90pct"], &[]);
    let v = expect(
        &["neighbor-near"],
        &[("neighbor_table_overflow", "warning", "ipv4")],
    );
    assert_eq!(v["findings"][0]["evidence"]["entries"], 922);
}

#[test]
fn forwarding_and_bridge_netfilter() {
    expect(
        &["forwarding-off"],
        &[("forwarding_disabled", "critical", "net.ipv4.ip_forward")],
    );
    expect(
        &["bridge-nf-off"],
        &[(
            "forwarding_disabled",
            "critical",
            "net.bridge.bridge-nf-call-iptables",
        )],
    );
}

#[test]
fn an_old_kernel_is_healthy_and_says_what_it_lacks() {
    expect(&["old-kernel"], &[]);
    // Without br_netfilter a bridge sysctl cannot be wrong; without threads-max PIDs
    // are still judged against pid_max.
    let v = expect(
        &["old-kernel", "pids-critical"],
        &[("pid_exhaustion", "critical", "host")],
    );
    assert!(v["findings"][0]["evidence"].get("threads_max").is_none());
    let dir = tree(&["old-kernel"]);
    let mut args = vec![
        "--no-collector.kmsg".to_string(),
        "--finding".into(),
        IDS.into(),
    ];
    args.extend(paths(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = check(&args);
    assert_eq!(code, 0, "{text}");
    for hint in [
        "pressure stall information",
        "kernel.threads-max",
        "MemAvailable",
        "oom_kill in /proc/vmstat",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("partial") && l.contains(hint)),
            "no partial line for {hint}:\n{text}"
        );
    }
    assert!(text.contains("(br_netfilter not loaded)"), "{text}");
}

#[test]
fn malformed_files_are_reported_not_fatal() {
    let dir = tree(&[]);
    fs::write(dir.path().join("proc/pressure/cpu"), "some avg10=x\n").unwrap();
    fs::write(dir.path().join("proc/net/stat/arp_cache"), "garbage\n").unwrap();
    let mut args = vec![
        "--no-collector.kmsg".to_string(),
        "--finding".into(),
        IDS.into(),
    ];
    args.extend(paths(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Files that are there but do not parse: named with their problem, and the check
    // cannot vouch for the findings they feed (exit 2).
    let (code, text) = check(&args);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("proc/pressure/cpu: malformed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("unreadable") && l.contains("arp_cache")),
        "{text}"
    );
    assert!(
        text.contains("arp_cache: malformed: no entries column"),
        "{text}"
    );
    // A meminfo without MemTotal makes the whole sample impossible: an error, exit 2.
    fs::write(dir.path().join("proc/meminfo"), "nonsense\n").unwrap();
    let (code, text) = check(&args);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no MemTotal line"), "{text}");
}

/// Inotify instances are counted from /proc/<pid>/fd links, per effective uid.
#[test]
fn inotify_instances_per_user_from_process_fds() {
    let dir = tree(&[]);
    let proc = dir.path().join("proc");
    for (pid, uid, instances, comm) in
        [(100u32, 1000u32, 116u32, "watcher"), (200, 0, 3, "kubelet")]
    {
        let p = proc.join(pid.to_string());
        fs::create_dir_all(p.join("fd")).unwrap();
        fs::create_dir_all(p.join("fdinfo")).unwrap();
        fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(
            p.join("status"),
            format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", p.join("fd/0")).unwrap();
        for fd in 3..3 + instances {
            std::os::unix::fs::symlink("anon_inode:inotify", p.join(format!("fd/{fd}"))).unwrap();
            fs::write(
                p.join(format!("fdinfo/{fd}")),
                "pos:\t0\nflags:\t02004000\nmnt_id:\t15\ninotify wd:1 ino:2 sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:02000000\n",
            )
            .unwrap();
        }
    }
    let mut args: Vec<String> = vec!["--collector.pressure.interval".into(), "1s".into()];
    args.extend(paths(dir.path()));
    args.extend(
        [
            "--no-collector.kmsg",
            "--no-collector.conntrack",
            "--no-collector.nic",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_ready();
    let f = agent.get_json("/api/v1/findings?finding=inotify_watches_exhausted");
    let list = f["findings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{f}");
    assert_eq!(list[0]["subject"], "uid 1000");
    assert_eq!(list[0]["evidence"]["instances"], 116);
    assert_eq!(list[0]["evidence"]["watches"], 116);
    assert_eq!(list[0]["evidence"]["top_processes"][0]["comm"], "watcher");
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("nodediag_inotify_instances{uid=\"1000\"} 116\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodediag_inotify_instances{uid=\"0\"} 3\n"),
        "{metrics}"
    );
}

fn agent_on(dir: &Path, extra: &[&str]) -> Agent {
    let mut args: Vec<String> = paths(dir);
    args.extend(["--interval", "200ms", "--no-collector.nic"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_ready();
    agent
}

fn finding(agent: &Agent, id: &str) -> Option<Value> {
    let v = agent.get_json(&format!("/api/v1/findings?finding={id}"));
    v["findings"].as_array()?.first().cloned()
}

#[test]
fn counters_rising_between_samples() {
    let dir = tree(&[]);
    let agent = agent_on(
        dir.path(),
        &["--no-collector.kmsg", "--no-collector.conntrack"],
    );
    assert!(agent.findings().is_empty(), "{:?}", agent.findings());
    // The node OOM-killed two processes and overflowed its ARP table once.
    let vmstat = dir.path().join("proc/vmstat");
    let text = fs::read_to_string(&vmstat)
        .unwrap()
        .replace("oom_kill 3", "oom_kill 5");
    fs::write(&vmstat, text).unwrap();
    let arp = dir.path().join("proc/net/stat/arp_cache");
    let text = fs::read_to_string(&arp).unwrap();
    let bumped = text.replacen("00000002\n", "00000003\n", 1);
    assert_ne!(text, bumped);
    fs::write(&arp, bumped).unwrap();
    let oom = wait_for("oom_kills", Duration::from_secs(20), || {
        finding(&agent, "oom_kills")
    });
    assert_eq!(oom["subject"], "host");
    assert_eq!(oom["evidence"]["oom_kills_in_window"], 2);
    let neigh = wait_for("neighbor_table_overflow", Duration::from_secs(20), || {
        finding(&agent, "neighbor_table_overflow")
    });
    assert_eq!(neigh["severity"], "critical");
    assert_eq!(neigh["evidence"]["table_fulls_in_window"], 1);
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("nodediag_oom_kills_total 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nodediag_neighbor_table_fulls_total{family=\"ipv4\"} 4\n"),
        "{metrics}"
    );
}

/// A FIFO standing in for /dev/kmsg. The test opens it read-write, which never
/// blocks on Linux, so the agent can open it whenever it starts following.
struct FakeKmsg {
    writer: fs::File,
    seq: u64,
}

impl FakeKmsg {
    fn create(path: &Path) -> FakeKmsg {
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        assert_eq!(nix::unistd::mkfifo(path, mode), Ok(()), "mkfifo");
        let writer = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        FakeKmsg { writer, seq: 0 }
    }

    fn log(&mut self, level: u8, message: &str) {
        self.seq += 1;
        let usec = 1_000_000 + self.seq * 1000;
        writeln!(self.writer, "{level},{},{usec},-;{message}", self.seq).unwrap();
        self.writer.flush().unwrap();
    }
}

fn kmsg_agent(dir: &Path, extra: &[&str]) -> (Agent, FakeKmsg) {
    let fifo = dir.join("kmsg");
    let fake = FakeKmsg::create(&fifo);
    let mut args = vec!["--path.kmsg", fifo.to_str().unwrap()];
    args.extend_from_slice(extra);
    (agent_on(dir, &args), fake)
}

fn records_read(agent: &Agent) -> u64 {
    agent.get_json("/api/v1/collectors/kmsg")["sample"]["records_read"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn netdev_unregister_stuck_from_the_kernel_log() {
    let dir = tree(&[]);
    let (agent, mut kmsg) = kmsg_agent(dir.path(), &["--no-collector.conntrack"]);
    let stuck = "unregister_netdevice: waiting for lo to become free. Usage count = 2";
    kmsg.log(0, stuck);
    kmsg.log(
        6,
        "IPv6: ADDRCONF(NETDEV_CHANGE): veth1: link becomes ready",
    );
    kmsg.log(0, stuck);
    wait_for("3 records read", Duration::from_secs(20), || {
        (records_read(&agent) >= 3).then_some(())
    });
    assert!(
        finding(&agent, "netdev_unregister_stuck").is_none(),
        "two lines are not enough"
    );
    kmsg.log(0, stuck);
    let f = wait_for("netdev_unregister_stuck", Duration::from_secs(20), || {
        finding(&agent, "netdev_unregister_stuck")
    });
    assert_eq!(f["evidence"]["messages_in_window"], 3);
    assert_eq!(f["evidence"]["max_usage_count"], 2);
    assert_eq!(
        f["evidence"]["kernel_log"],
        serde_json::json!([stuck, stuck, stuck])
    );
    let log = agent.get_json("/api/v1/kernel-log?event=netdev_unregister_stuck&limit=2");
    assert_eq!(log["events"].as_array().unwrap().len(), 2);
    assert_eq!(log["totals"]["netdev_unregister_stuck"], 3);
    assert_eq!(log["source"], "kmsg");
    let (status, body) = agent.get("/api/v1/kernel-log?event=nope");
    assert_eq!(status, 400, "{body}");
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains("nodediag_kernel_log_events_total{event=\"netdev_unregister_stuck\"} 3\n"),
        "{metrics}"
    );
    let (_, report) = agent.get("/");
    assert!(
        report.contains("netdev_unregister_stuck  unregister_netdevice: waiting for lo"),
        "{report}"
    );
}

#[test]
fn conntrack_drops_carry_the_kernel_log_lines() {
    let dir = tree(&[]);
    let netfilter = dir.path().join("proc/sys/net/netfilter");
    fs::create_dir_all(&netfilter).unwrap();
    fs::write(netfilter.join("nf_conntrack_count"), "500\n").unwrap();
    fs::write(netfilter.join("nf_conntrack_max"), "262144\n").unwrap();
    let stat = dir.path().join("proc/net/stat/nf_conntrack");
    let header = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop  early_drop icmp_error  expect_new expect_create expect_delete search_restart\n";
    let row = |drop: u32| {
        format!("000001f4  00000000 00000000 00000000 00000003 00000010 00000000 00000000 00000000 00000000 {drop:08x} 00000000 00000000  00000000 00000000 00000000 00000000\n")
    };
    fs::write(&stat, format!("{header}{}", row(7))).unwrap();
    let (agent, mut kmsg) = kmsg_agent(dir.path(), &[]);
    let full = "nf_conntrack: nf_conntrack: table full, dropping packet";
    kmsg.log(4, full);
    wait_for("the line read", Duration::from_secs(20), || {
        (records_read(&agent) >= 1).then_some(())
    });
    fs::write(&stat, format!("{header}{}", row(19))).unwrap();
    let f = wait_for(
        "conntrack_drops with kernel_log",
        Duration::from_secs(20),
        || finding(&agent, "conntrack_drops").filter(|f| f["evidence"].get("kernel_log").is_some()),
    );
    assert_eq!(f["evidence"]["dropped_in_window"], 12);
    assert_eq!(f["evidence"]["kernel_log"], serde_json::json!([full]));
}
