//! A kernel file whose read never returns (a FIFO stands in for a hung filesystem)
//! costs its collector, never the process: `check` ends within its deadline, `serve`
//! says it is not ready and still shuts down promptly.

mod common;

use common::{fixture, sh, Agent, BIN};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The healthy fixture tree with nf_conntrack_count replaced by a FIFO nobody writes.
fn tree_with_a_fifo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    sh(
        "cp",
        &[
            "-a",
            &format!("{}/.", fixture("healthy").display()),
            dir.path().to_str().unwrap(),
        ],
    );
    let count = dir.path().join("proc/sys/net/netfilter/nf_conntrack_count");
    std::fs::remove_file(&count).unwrap();
    sh("mkfifo", &[count.to_str().unwrap()]);
    dir
}

fn roots(dir: &Path) -> Vec<String> {
    ["proc", "sys", "rootfs"]
        .iter()
        .zip(["--path.procfs", "--path.sysfs", "--path.rootfs"])
        .flat_map(|(d, flag)| [flag.to_string(), dir.join(d).display().to_string()])
        .chain(["--no-netlink".to_string()])
        .collect()
}

#[test]
fn check_ends_within_its_deadline_and_says_it_could_not_tell() {
    let dir = tree_with_a_fifo();
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("check")
        .args(roots(dir.path()))
        .args(["--check.timeout", "3s", "--check.delay", "100ms"])
        .args(["--finding", "conntrack_table_full", "--format", "json"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(took < Duration::from_secs(6), "check took {took:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["collectors"]["conntrack"]["status"]["state"], "hung",
        "{v}"
    );

    // Findings that do not need the hung collector are still checked.
    let out = Command::new(BIN)
        .arg("check")
        .args(roots(dir.path()))
        .args(["--check.timeout", "3s", "--check.delay", "100ms"])
        .args(["--finding", "nic_link_down"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn serve_is_not_ready_while_a_collector_hangs_and_still_exits_on_sigterm() {
    let dir = tree_with_a_fifo();
    let mut args = roots(dir.path());
    args.extend(["--interval", "300ms", "--collector.timeout", "1s"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&args);
    let hung = common::wait_for("conntrack reported hung", Duration::from_secs(15), || {
        let snap = agent.get_json("/api/v1/snapshot");
        (snap["collectors"]["conntrack"]["status"]["state"] == "hung").then_some(snap)
    });
    assert_eq!(hung["collectors"]["nic"]["status"]["state"], "ok", "{hung}");
    let (status, body) = agent.get("/readyz");
    assert_eq!(status, 503, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["pending"], serde_json::json!(["conntrack"]), "{body}");
    assert_eq!(body["collectors"]["conntrack"]["state"], "hung", "{body}");

    let started = Instant::now();
    assert!(agent.terminate(), "nodediag did not exit cleanly");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
}
