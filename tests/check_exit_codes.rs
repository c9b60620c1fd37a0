//! `nodediag check` speaks the node-problem-detector custom plugin protocol.

mod common;

use common::{check, fixture};

fn roots(tree: &str) -> Vec<String> {
    let root = fixture(tree);
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    vec![
        "--no-netlink".into(),
        "--check.delay".into(),
        "50ms".into(),
        "--path.procfs".into(),
        p("proc"),
        "--path.sysfs".into(),
        p("sys"),
        "--path.rootfs".into(),
        p("rootfs"),
    ]
}

fn run(tree: &str, extra: &[&str]) -> (i32, String) {
    let mut args = roots(tree);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check(&args)
}

#[test]
fn a_healthy_tree_exits_0() {
    let (code, out) = run("healthy", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: no problems found"), "{out}");
}

#[test]
fn conntrack_near_full_exits_1_with_a_summary_first() {
    let (code, out) = run("degraded", &["--finding", "conntrack_table_full"]);
    assert_eq!(code, 1, "{out}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("CRITICAL: conntrack_table_full host"),
        "{first}"
    );
    assert!(
        !out.contains("nic_half_duplex"),
        "--finding limits the report"
    );

    let (code, out) = run(
        "degraded",
        &["--finding", "conntrack_table_full", "--format", "summary"],
    );
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn findings_of_a_healthy_part_exit_0_even_on_a_sick_node() {
    let (code, out) = run("degraded", &["--finding", "nic_errors"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unusable_roots_exit_2() {
    let (code, out) = check(&["--path.procfs", "/nonexistent/proc", "--no-netlink"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("UNKNOWN:"), "{out}");
    assert!(out.contains("--path.procfs"), "{out}");

    // Roots that exist but hold nothing nodediag can read.
    let empty = tempfile::tempdir().unwrap();
    let e = empty.path().to_str().unwrap();
    let (code, out) = check(&[
        "--no-netlink",
        "--check.delay",
        "10ms",
        "--path.procfs",
        e,
        "--path.sysfs",
        e,
        "--path.rootfs",
        e,
    ]);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn json_output_carries_the_exit_code_and_findings() {
    let (code, out) = run(
        "degraded",
        &["--format", "json", "--finding", "nic_link_down"],
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["findings"][0]["id"], "nic_link_down");
    assert_eq!(v["findings"][0]["subject"], "eth2");
}
