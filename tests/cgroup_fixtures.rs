//! The cgroup collector on fixture trees copied from real hosts' file formats: cgroup
//! v2 with the systemd driver, v1 with the systemd driver (cpu,cpuacct co-mounted),
//! and a hybrid host (v1 cpu and cpuacct apart, an empty cgroup2 at unified, the
//! cgroupfs driver). Each tree also exercises one rule of finding the hierarchy:
//! under --path.rootfs, under --path.sysfs, and through --path.cgroup.

mod common;

use common::{fixture, promtool_check, wait_for, Agent};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const UA: &str = "6a1f4e2b-3c5d-4e7f-8a9b-0c1d2e3f4a5b";
const UB: &str = "7b2e5f3c-4d6e-4f80-9bac-1d2e3f4a5b6c";
const UC: &str = "8c3f6a4d-5e7f-4a91-acbd-2e3f4a5b6c7d";

fn cid(pair: &str) -> String {
    pair.repeat(32)
}

fn args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--no-netlink",
        "--no-collector.conntrack",
        "--no-collector.nic",
        // The trees hold cgroups only: a pressure collector failing on every sample
        // (no meminfo) would keep /readyz at 503.
        "--no-collector.pressure",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, sub) in [
        ("--path.procfs", "proc"),
        ("--path.sysfs", "sys"),
        ("--path.rootfs", "rootfs"),
    ] {
        a.push(flag.into());
        a.push(dir.join(sub).display().to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn start(dir: &Path, extra: &[&str]) -> Agent {
    let a = args(dir, extra);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let agent = Agent::start(&refs);
    agent.wait_ready();
    agent
}

fn container<'a>(t: &'a Value, id: &str) -> &'a Value {
    t["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["container_id"] == id)
        .unwrap_or_else(|| panic!("container {id} missing: {t:#}"))
}

fn collector_sample(agent: &Agent) -> Value {
    agent.get_json("/api/v1/collectors/cgroup")["sample"].clone()
}

#[test]
fn v2_systemd_driver_values_names_and_metrics() {
    let agent = start(&fixture("cgroup/v2-systemd"), &[]);
    let s = collector_sample(&agent);
    assert_eq!(s["version"], "v2");
    assert_eq!(s["mount_point"], "/sys/fs/cgroup");
    assert_eq!(s["kubepods"], "/kubepods.slice");
    assert_eq!(s["kernel_release"], "5.15.0-91-generic");
    assert_eq!(s["cfs_bandwidth_fix"], true);
    let pods = s["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 3, "{s:#}");

    let t = agent.get_json("/api/v1/throttling");
    assert_eq!(t["cgroup_version"], "v2");
    assert_eq!(t["window_seconds"], 300.0);
    assert_eq!(
        t["containers"].as_array().unwrap().len(),
        5,
        "app, sidecar, sandbox, coredns, unnamed besteffort; conmon is not a container"
    );
    let app = container(&t, &cid("a1"));
    assert_eq!(app["namespace"], "shop");
    assert_eq!(app["pod"], "cart-0");
    assert_eq!(app["container"], "app");
    assert_eq!(app["qos"], "burstable");
    assert_eq!(app["limit_cores"], 0.5);
    assert_eq!(app["period_seconds"], 0.1);
    assert_eq!(
        app["cgroup"],
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope",
            UA.replace('-', "_"),
            cid("a1")
        )
    );
    // One sample: no rate yet, not a made-up zero.
    assert_eq!(app["throttled_ratio"], Value::Null);
    let sidecar = container(&t, &cid("b2"));
    assert_eq!(
        sidecar["limit_cores"],
        Value::Null,
        "cpu.max `max` is no limit"
    );
    let coredns = container(&t, &cid("c3"));
    assert_eq!(coredns["qos"], "guaranteed");
    assert_eq!(coredns["pod"], "coredns-5d78c9869d-x2k4q");
    assert_eq!(coredns["limit_cores"], 1.0);
    let unnamed = container(&t, &cid("d4"));
    assert_eq!(unnamed["qos"], "besteffort");
    assert_eq!(unnamed["pod"], Value::Null);
    assert_eq!(unnamed["pod_uid"], UC);

    let (_, m) = agent.get("/metrics");
    let app_labels = r#"{namespace="shop",pod="cart-0",container="app"}"#;
    for line in [
        format!("nodediag_cgroup_cpu_periods_total{app_labels} 1200"),
        format!("nodediag_cgroup_cpu_throttled_periods_total{app_labels} 300"),
        format!("nodediag_cgroup_cpu_throttled_seconds_total{app_labels} 4.5"),
        format!("nodediag_cgroup_cpu_usage_seconds_total{app_labels} 30"),
        format!("nodediag_cgroup_cpu_limit_cores{app_labels} 0.5"),
        r#"nodediag_cgroup_cpu_limit_cores{namespace="kube-system",pod="coredns-5d78c9869d-x2k4q",container="coredns"} 1"#.to_string(),
        r#"nodediag_cgroup_cpu_throttled_periods_total{namespace="kube-system",pod="coredns-5d78c9869d-x2k4q",container=""} 10"#.to_string(),
    ] {
        assert!(m.contains(&format!("{line}\n")), "missing {line}:\n{m}");
    }
    assert!(!m.contains("sidecar"), "no CPU limit, no series");
    promtool_check(&m);
    assert!(!m.contains(UC), "besteffort pods have no limit");

    // Filters and bad parameters.
    let only = agent.get_json("/api/v1/throttling?namespace=kube-system");
    assert_eq!(only["containers"].as_array().unwrap().len(), 1);
    assert_eq!(only["pods"].as_array().unwrap().len(), 1);
    assert_eq!(only["pods"][0]["pod_uid"], UB);
    let named = agent.get_json("/api/v1/throttling?container=coredns");
    assert_eq!(named["containers"].as_array().unwrap().len(), 1);
    assert_eq!(named["containers"][0]["pod_uid"], UB);
    let two = agent.get_json("/api/v1/throttling?limit=2");
    assert_eq!(two["containers"].as_array().unwrap().len(), 2);
    assert_eq!(
        two["pods"].as_array().unwrap().len(),
        3,
        "limit applies to containers"
    );
    let (code, body) = agent.get("/api/v1/throttling?nmespace=x");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown query parameter"), "{body}");
    let (code, _) = agent.get("/api/v1/throttling?limit=many");
    assert_eq!(code, 400);
}

#[test]
fn v1_systemd_driver_comounted_cpu_cpuacct_under_sysfs() {
    let agent = start(&fixture("cgroup/v1-systemd"), &[]);
    let s = collector_sample(&agent);
    assert_eq!(s["version"], "v1");
    assert_eq!(s["mount_point"], "/sys/fs/cgroup/cpu,cpuacct");
    assert_eq!(s["cfs_bandwidth_fix"], false, "4.19.0 predates 4.19.84");
    assert_eq!(s["unavailable"], serde_json::json!([]));
    let t = agent.get_json("/api/v1/throttling?pod=cart-0");
    let app = container(&t, &cid("a1"));
    assert_eq!(app["container"], "app");
    assert_eq!(app["limit_cores"], 0.25);
    assert_eq!(
        app["cgroup"],
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/docker-{}.scope",
            UA.replace('-', "_"),
            cid("a1")
        )
    );
    assert_eq!(t["pods"][0]["limit_cores"], 0.75);
    let (_, m) = agent.get("/metrics");
    let l = r#"{namespace="shop",pod="cart-0",container="app"}"#;
    for line in [
        format!("nodediag_cgroup_cpu_throttled_seconds_total{l} 60.5"),
        format!("nodediag_cgroup_cpu_usage_seconds_total{l} 12"),
        format!("nodediag_cgroup_cpu_throttled_periods_total{l} 800"),
        r#"nodediag_cgroup_cpu_limit_cores{namespace="kube-system",pod="coredns-5d78c9869d-x2k4q",container="coredns"} 2"#.to_string(),
    ] {
        assert!(m.contains(&format!("{line}\n")), "missing {line}:\n{m}");
    }
}

#[test]
fn hybrid_host_reads_v1_through_path_cgroup() {
    let dir = fixture("cgroup/hybrid");
    let cg = dir.join("cgroup").display().to_string();
    let agent = start(&dir, &["--path.cgroup", &cg]);
    let s = collector_sample(&agent);
    assert_eq!(
        s["version"], "v1",
        "cpu is bound to v1; unified has no controllers"
    );
    assert_eq!(s["mount_point"], "/sys/fs/cgroup/cpu");
    assert_eq!(s["kubepods"], "/kubepods");
    let pods = s["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    let cart = pods.iter().find(|p| p["pod_uid"] == UA).expect("cart-0");
    assert_eq!(cart["containers"][0]["container"], "app");
    // Usage comes from the separate cpuacct hierarchy.
    assert_eq!(
        cart["containers"][0]["cgroup"]["usage_ns"],
        41_000_000_000u64
    );
    assert_eq!(cart["containers"][0]["cgroup"]["nr_throttled"], 1500);
    assert_eq!(
        cart["containers"][0]["cgroup"]["throttled_ns"],
        90_000_000_000u64
    );
    let be = pods
        .iter()
        .find(|p| p["pod_uid"] == UC)
        .expect("besteffort");
    assert_eq!(be["qos"], "besteffort");
    assert_eq!(be["containers"][0]["cgroup"]["quota"], Value::Null);
}

#[test]
fn without_the_override_a_hybrid_tree_elsewhere_is_unavailable_with_a_hint() {
    let agent = start(&fixture("cgroup/hybrid"), &[]);
    let c = agent.get_json("/api/v1/collectors/cgroup");
    assert_eq!(c["status"]["state"], "unavailable", "{c:#}");
    assert!(
        c["status"]["hint"]
            .as_str()
            .unwrap()
            .contains("--path.cgroup"),
        "{c:#}"
    );
    let (code, body) = agent.get("/api/v1/throttling");
    assert_eq!(code, 503, "{body}");
}

/// Copies a fixture tree so a test can move its counters.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The collector never sees a half-written counter file (which would look like a
/// counter reset).
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn finding(agent: &Agent, id: &str) -> Option<Value> {
    agent.get_json("/api/v1/findings")["findings"]
        .as_array()?
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
}

#[test]
fn v2_counters_rising_raise_cpu_throttled_with_the_exact_ratio() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture("cgroup/v2-systemd"), tmp.path());
    let agent = start(tmp.path(), &["--interval", "300ms", "--window", "3s"]);
    let stat = tmp.path().join(format!(
        "rootfs/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{}.scope/cpu.stat",
        UA.replace('-', "_"),
        cid("a1")
    ));
    // +200 periods, +150 throttled (75%), +2 s throttled, +5 s of CPU.
    write_atomic(
        &stat,
        "usage_usec 35000000\nuser_usec 23000000\nsystem_usec 12000000\nnr_periods 1400\n\
nr_throttled 450\nthrottled_usec 6500000\nnr_bursts 0\nburst_usec 0\n",
    );
    let f = wait_for(
        "cpu_throttled for shop/cart-0/app",
        Duration::from_secs(10),
        || finding(&agent, "cpu_throttled"),
    );
    assert_eq!(f["subject"], "shop/cart-0/app");
    assert_eq!(f["severity"], "warning");
    let e = &f["evidence"];
    assert_eq!(e["throttled_ratio"], 0.75);
    assert_eq!(e["periods"], 200);
    assert_eq!(e["throttled_periods"], 150);
    assert_eq!(e["throttled_seconds"], 2.0);
    assert_eq!(e["limit_cores"], 0.5);
    assert_eq!(e["namespace"], "shop");
    assert_eq!(e["container_id"], cid("a1"));
    assert!(
        finding(&agent, "cpu_throttled_kernel_bug").is_none(),
        "5.15 has the fix"
    );
    let t = agent.get_json("/api/v1/throttling");
    assert_eq!(t["containers"][0]["container"], "app", "worst first: {t:#}");
    let (_, report) = agent.get("/");
    assert!(
        report.contains("75%  shop/cart-0/app  limit 0.5 cores"),
        "{report}"
    );
    // The counters stop: once the rise leaves the 3 s window the finding clears.
    wait_for("cpu_throttled to clear", Duration::from_secs(10), || {
        finding(&agent, "cpu_throttled").is_none().then_some(())
    });
}

#[test]
fn v1_old_kernel_throttling_far_under_quota_is_the_kernel_bug() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture("cgroup/v1-systemd"), tmp.path());
    let agent = start(tmp.path(), &["--interval", "300ms", "--window", "3s"]);
    let dir = tmp.path().join(format!(
        "sys/fs/cgroup/cpu,cpuacct/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/docker-{}.scope",
        UA.replace('-', "_"),
        cid("a1")
    ));
    // +100 periods, 60 throttled, and only 5 ms of CPU: far under 0.25 cores.
    write_atomic(
        &dir.join("cpu.stat"),
        "nr_periods 1600\nnr_throttled 860\nthrottled_time 61000000000\n",
    );
    write_atomic(&dir.join("cpuacct.usage"), "12005000000\n");
    let f = wait_for("cpu_throttled_kernel_bug", Duration::from_secs(10), || {
        finding(&agent, "cpu_throttled_kernel_bug")
    });
    assert_eq!(f["subject"], "shop/cart-0/app");
    assert_eq!(f["evidence"]["kernel_release"], "4.19.0-21-amd64");
    assert_eq!(f["evidence"]["throttled_ratio"], 0.6);
    assert!(
        f["evidence"]["usage_ratio_of_limit"].as_f64().unwrap() < 0.5,
        "{f:#}"
    );
    assert!(finding(&agent, "cpu_throttled").is_some());
}

#[test]
fn check_on_a_quiet_fixture_is_healthy() {
    let a = args(&fixture("cgroup/v2-systemd"), &["--check.delay", "50ms"]);
    let mut refs: Vec<&str> = a.iter().map(String::as_str).collect();
    refs.extend(["--finding", "cpu_throttled"]);
    let (code, out) = common::check(&refs);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cpu throttling: none of 2 containers with a CPU limit throttled"),
        "{out}"
    );
}
