//! Files the agent reads but does not control, made hostile one at a time: the agent
//! answers for everything else and says which file it could not read, never panics.

mod common;

use common::{fixture, sh, BIN};
use std::path::Path;
use std::process::Command;

/// A copy of a fixture tree the test may damage.
fn copy_of(tree: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    sh(
        "cp",
        &[
            "-a",
            &format!("{}/.", fixture(tree).display()),
            dir.path().to_str().unwrap(),
        ],
    );
    dir
}

fn check(proc: &Path, sys: &Path, rootfs: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("check")
        .args(["--no-netlink", "--check.delay", "50ms", "--format", "json"])
        .arg("--path.procfs")
        .arg(proc)
        .arg("--path.sysfs")
        .arg(sys)
        .arg("--path.rootfs")
        .arg(rootfs)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_reservation_naming_its_container_in_multibyte_text_is_reported_not_fatal() {
    let tree = fixture("netns/cni");
    let rootfs = copy_of("netns/cni/rootfs");
    let reservation = rootfs.path().join("var/lib/cni/networks/cbr0/10.244.1.3");
    std::fs::write(&reservation, "é容器ä…containerd-sandbox\neth0\n").unwrap();
    let (code, out) = check(
        &tree.join("proc"),
        &tree.join("sys"),
        rootfs.path(),
        &["--finding", "cni_ipam_exhausted"],
    );
    assert_eq!(code, Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cbr0 = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["subject"] == "cbr0")
        .unwrap_or_else(|| panic!("no cbr0 finding: {v:#}"));
    assert_eq!(cbr0["evidence"]["allocated"], 12);
    assert_eq!(cbr0["evidence"]["stale_reservations"], 11, "{cbr0:#}");
    assert_eq!(
        cbr0["evidence"]["stale_examples"][0], "10.244.1.3 (é容器ä…contain)",
        "the id is cut on a character boundary"
    );
    assert_eq!(v["rules"]["netns"]["failures_total"], 0, "{v:#}");
}

#[test]
fn an_oversized_kernel_file_is_an_error_that_quotes_none_of_it() {
    let tree = copy_of("healthy");
    let count = tree
        .path()
        .join("proc/sys/net/netfilter/nf_conntrack_count");
    std::fs::write(&count, "9".repeat(10 << 20)).unwrap();
    let p = |d: &str| tree.path().join(d);
    let (code, out) = check(
        &p("proc"),
        &p("sys"),
        &p("rootfs"),
        &["--finding", "conntrack_table_full"],
    );
    assert_eq!(code, Some(2), "{}", &out[..out.len().min(2000)]);
    assert!(out.len() < 20_000, "the report is {} bytes", out.len());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let status = &v["collectors"]["conntrack"]["status"];
    assert_eq!(status["state"], "error", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(message.contains("nf_conntrack_count"), "{message}");
    assert!(message.contains("larger than"), "{message}");
}

#[test]
fn a_mount_table_past_the_cap_is_named_not_replaced_by_another() {
    let tree = copy_of("healthy");
    let p = |d: &str| tree.path().join(d);
    std::fs::create_dir_all(p("rootfs/var/lib/kubelet")).unwrap();
    std::fs::create_dir_all(p("proc/1")).unwrap();
    let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw\n";
    std::fs::write(p("proc/1/mountinfo"), line.repeat((17 << 20) / line.len())).unwrap();
    let (code, out) = check(
        &p("proc"),
        &p("sys"),
        &p("rootfs"),
        &[
            "--finding",
            "filesystem_readonly",
            "--no-collector.pressure",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary = v["summary"].as_str().unwrap();
    assert!(summary.contains("proc/1/mountinfo"), "{summary}");
    assert!(summary.contains("larger than"), "{summary}");
    assert_eq!(
        code,
        Some(2),
        "a rule that needs the mount table cannot tell: {v:#}"
    );
}
