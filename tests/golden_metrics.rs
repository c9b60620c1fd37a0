//! End to end on fixture trees: the real binary serves /metrics, which must match the
//! checked-in golden file and pass `promtool check metrics`.
//!
//! Regenerate the golden file after an intended change:
//! `UPDATE_GOLDEN=1 cargo test --test golden_metrics`

mod common;

use common::{fixture, get_with, promtool_check, Agent};
use std::path::PathBuf;

/// Values that change from run to run are masked before the diff.
const VOLATILE: &[&str] = &[
    "nodediag_collector_duration_seconds",
    "nodediag_collector_cpu_seconds_total",
    "nodediag_collector_last_success_timestamp_seconds",
    "nodediag_collector_runs_total",
];

fn degraded_agent() -> Agent {
    let root = fixture("degraded");
    let p = |s: &str| root.join(s).to_string_lossy().into_owned();
    let agent = Agent::start(&[
        "--no-netlink",
        "--path.procfs",
        &p("proc"),
        "--path.sysfs",
        &p("sys"),
        "--path.rootfs",
        &p("rootfs"),
        "--node-name",
        "fixture-node",
        "--interval",
        "200ms",
        "--nic.expected-speed",
        "eth0=10000",
    ]);
    agent.wait_settled();
    agent
}

fn normalise(metrics: &str) -> String {
    metrics
        .lines()
        .map(|l| {
            let volatile = !l.starts_with('#') && VOLATILE.iter().any(|v| l.starts_with(v));
            match (volatile, l.rsplit_once(' ')) {
                (true, Some((series, _))) => format!("{series} <volatile>\n"),
                _ => format!("{l}\n"),
            }
        })
        .collect()
}

#[test]
fn metrics_match_the_golden_file_and_pass_promtool() {
    let agent = degraded_agent();
    let (status, body) = agent.get("/metrics");
    assert_eq!(status, 200);
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/metrics.prom");
    let got = normalise(&body);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file (UPDATE_GOLDEN=1 to create)");
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .zip(got.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "/metrics differs from {} ({} vs {} lines); first differences:\n{}\n\
             regenerate with UPDATE_GOLDEN=1 if intended",
            golden.display(),
            want.lines().count(),
            got.lines().count(),
            diff.join("\n")
        );
    }
    promtool_check(&body);
}

#[test]
fn openmetrics_is_served_when_asked_for() {
    let agent = degraded_agent();
    let (status, body) = get_with(
        &agent.url("/metrics"),
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE nodediag_conntrack_drop counter\n"));
    assert!(body.contains("\nnodediag_conntrack_drop_total 26\n"));
    let (_, text) = agent.get("/metrics");
    assert!(text.contains("# TYPE nodediag_conntrack_drop_total counter\n"));
    assert!(!text.contains("# EOF"));
}

#[test]
fn the_api_and_report_explain_the_fixture_problems() {
    let agent = degraded_agent();
    let mut found = agent.findings();
    found.sort();
    let expected: Vec<(String, String)> = [
        ("conntrack_table_full", "host"),
        ("nic_half_duplex", "eth1"),
        ("nic_link_down", "eth2"),
        ("nic_speed_degraded", "eth0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(found, expected);

    let v = agent.get_json("/api/v1/findings?severity=critical");
    assert_eq!(v["node"], "fixture-node");
    let ids: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["conntrack_table_full", "nic_link_down"]);
    let full = &v["findings"][0];
    assert_eq!(full["evidence"]["entries"], 250000);
    assert!(full["remedy"]
        .as_str()
        .unwrap()
        .contains("nf_conntrack_max"));
    assert!(full["since"].as_str().unwrap().ends_with('Z'));

    let nic = agent.get_json("/api/v1/collectors/nic");
    assert_eq!(nic["status"]["state"], "ok");
    assert!(nic["sampled_at"].is_string());
    let veth = nic["sample"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "veth1a2b3c4d")
        .unwrap();
    assert_eq!(veth["class"], "virtual");
    assert!(veth["speed_mbps"].is_null(), "speed -1 is absent, not -1");

    let (status, text) = agent.get("/");
    assert_eq!(status, 200);
    assert!(
        text.starts_with("CRITICAL: conntrack_table_full host"),
        "{text}"
    );
    assert!(text.contains("remedy:"));
    assert!(text.contains("conntrack  ok"));
}

#[test]
fn bad_requests_get_json_errors() {
    let agent = degraded_agent();
    for (path, code, needle) in [
        ("/nope", 404, "no such endpoint"),
        (
            "/api/v1/findings?sevrity=critical",
            400,
            "unknown query parameter",
        ),
        (
            "/api/v1/findings?severity=bad",
            400,
            "expected info, warning or critical",
        ),
        (
            "/api/v1/findings?finding=made_up",
            400,
            "unknown finding id",
        ),
        ("/api/v1/collectors/made_up", 404, "no collector named"),
        ("/metrics?x=1", 400, "unknown query parameter"),
    ] {
        let (status, body) = agent.get(path);
        assert_eq!(status, code, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    let status = ureq::post(&agent.url("/")).call().unwrap_err();
    match status {
        ureq::Error::Status(code, r) => {
            assert_eq!(code, 405);
            assert!(r.into_string().unwrap().contains("read-only"));
        }
        other => panic!("{other}"),
    }
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.get("/readyz").0, 200);
}
