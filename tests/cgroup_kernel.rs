//! The cgroup collector against this machine's cgroup v1 cpu controller: a pod-like
//! cgroup (cgroupfs driver layout) limited to a tenth of a core runs a busy loop, and
//! the agent must name its pod and container in `cpu_throttled` and show its throttled
//! periods rising in /metrics.

mod common;

use common::{skip, wait_for, Agent};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The v1 mount points of the cpu and cpuacct controllers (the same one when
/// co-mounted), from our own mount table.
fn v1_mounts() -> Option<(PathBuf, Option<PathBuf>)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut cpu = None;
    let mut acct = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let opts: Vec<&str> = r.nth(1).unwrap_or("").split(',').collect();
        let point = PathBuf::from(left.split(' ').nth(4)?);
        if opts.contains(&"cpu") {
            cpu = Some(point.clone());
        }
        if opts.contains(&"cpuacct") {
            acct = Some(point);
        }
    }
    Some((cpu?, acct))
}

/// Everything the test creates, removed on drop even when an assertion failed:
/// the busy child first, then the cgroups deepest first.
struct PodCgroups {
    child: Option<Child>,
    /// Directories to remove, deepest first.
    created: Vec<PathBuf>,
}

impl PodCgroups {
    fn mkdir_all(&mut self, dir: &Path) {
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while !d.exists() {
            missing.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        for m in missing.iter().rev() {
            std::fs::create_dir(m).unwrap_or_else(|e| panic!("mkdir {}: {e}", m.display()));
        }
        // Remove deepest first; shared parents (kubepods/burstable) only when we made
        // them, and a concurrent user keeps them busy (rmdir of a non-empty cgroup fails).
        self.created.splice(0..0, missing);
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in &self.created {
            // A killed task leaves its cgroup a moment later: retry with a deadline.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(e) = std::fs::remove_dir(d) {
                if e.kind() == std::io::ErrorKind::NotFound || Instant::now() > deadline {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        eprintln!("cleanup: rmdir {}: {e}", d.display());
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A failed write names the file: the kernel's EINVAL alone does not say which of
/// the setup's writes it refused.
fn write_cgroup_file(path: &Path, value: &str) {
    std::fs::write(path, value)
        .unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", path.display()));
}

fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_busy_pod_limited_to_a_tenth_of_a_core_is_flagged_by_name() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root to create cgroups");
        return;
    }
    let Some((cpu, acct)) = v1_mounts() else {
        skip("no cgroup v1 cpu controller mounted");
        return;
    };
    if !cpu.join("cpu.cfs_quota_us").exists() {
        skip("kernel without CFS bandwidth control");
        return;
    }
    let pid = std::process::id();
    let uid = format!("0c9a7e3d-1b2f-4a6c-8d5e-{pid:012x}");
    let cid = format!("{:0>64}", format!("{pid:x}cafe"));
    let (ns, pod, name) = ("throttle-test", format!("busy-{pid}"), "spinner");
    let rel = format!("kubepods/burstable/pod{uid}");

    let mut guard = PodCgroups {
        child: None,
        created: Vec::new(),
    };
    let hierarchies: Vec<PathBuf> = std::iter::once(cpu.clone())
        .chain(acct.filter(|a| *a != cpu))
        .collect();
    for h in &hierarchies {
        guard.mkdir_all(&h.join(&rel).join(&cid));
    }
    // A tenth of a core on the pod and the container, as the kubelet sets both.
    for dir in [cpu.join(&rel), cpu.join(&rel).join(&cid)] {
        write_cgroup_file(&dir.join("cpu.cfs_period_us"), "100000");
        write_cgroup_file(&dir.join("cpu.cfs_quota_us"), "10000");
    }
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn busy loop");
    let child_pid = child.id().to_string();
    guard.child = Some(child);
    for h in &hierarchies {
        write_cgroup_file(&h.join(&rel).join(&cid).join("cgroup.procs"), &child_pid);
    }

    // Kubelet-like log directories give the names.
    let rootfs = tempfile::tempdir().unwrap();
    let logs = rootfs.path().join("var/log");
    std::fs::create_dir_all(logs.join(format!("pods/{ns}_{pod}_{uid}/{name}"))).unwrap();
    std::fs::create_dir_all(logs.join("containers")).unwrap();
    std::fs::write(
        logs.join(format!("containers/{pod}_{ns}_{name}-{cid}.log")),
        "",
    )
    .unwrap();

    let started = Instant::now();
    let agent = Agent::start(&[
        "--no-netlink",
        "--no-collector.conntrack",
        "--no-collector.nic",
        "--path.rootfs",
        rootfs.path().to_str().unwrap(),
        "--interval",
        "1s",
        "--window",
        "3s",
    ]);
    let subject = format!("{ns}/{pod}/{name}");
    // Two 3 s windows, plus slack for a loaded machine.
    let f = wait_for(
        "cpu_throttled naming the busy pod",
        Duration::from_secs(15),
        || {
            agent.get_json("/api/v1/findings")["findings"]
                .as_array()?
                .iter()
                .find(|f| f["id"] == "cpu_throttled" && f["subject"] == subject.as_str())
                .cloned()
        },
    );
    eprintln!("flagged after {:?}", started.elapsed());
    let e = &f["evidence"];
    assert_eq!(e["namespace"], ns);
    assert_eq!(e["pod"], pod.as_str());
    assert_eq!(e["container"], name);
    assert_eq!(e["container_id"], cid.as_str());
    assert_eq!(e["limit_cores"], 0.1);
    assert!(e["throttled_ratio"].as_f64().unwrap() >= 0.9, "{f:#}");
    assert!(e["throttled_periods"].as_u64().unwrap() > 0);
    // Using its whole tenth of a core: a real limit, not the kernel bug.
    let usage = e["usage_ratio_of_limit"]
        .as_f64()
        .expect("usage from cpuacct");
    assert!((0.7..1.3).contains(&usage), "usage {usage}: {f:#}");

    let t = agent.get_json(&format!("/api/v1/throttling?namespace={ns}&pod={pod}"));
    let containers = t["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{t:#}");
    assert_eq!(containers[0]["container"], name);
    assert_eq!(t["pods"][0]["pod_uid"], uid.as_str());
    assert_eq!(t["pods"][0]["limit_cores"], 0.1);

    let series = format!(
        "nodediag_cgroup_cpu_throttled_periods_total{{namespace=\"{ns}\",pod=\"{pod}\",container=\"{name}\"}} "
    );
    let first = wait_for(
        "the throttled periods series",
        Duration::from_secs(10),
        || metric(&agent.get("/metrics").1, &series),
    );
    let later = wait_for("throttled periods rising", Duration::from_secs(10), || {
        metric(&agent.get("/metrics").1, &series).filter(|v| *v > first)
    });
    eprintln!("throttled periods {first} -> {later}");

    // Series of a container that is gone disappear.
    drop(guard);
    wait_for(
        "the removed container's series to go",
        Duration::from_secs(10),
        || (!agent.get("/metrics").1.contains(&series)).then_some(()),
    );
}
