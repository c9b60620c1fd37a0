//! The pressure and kmsg collectors against the real kernel of this host: an OOM
//! kill provoked in a pod-like memory cgroup, file handles and inotify instances
//! opened by this test process.

mod common;

use common::{wait_for, Agent};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn metric(agent: &Agent, name: &str) -> Option<f64> {
    let (_, body) = agent.get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn pressure_agent(extra: &[&str]) -> Agent {
    let mut args = vec![
        "--interval",
        "200ms",
        "--no-collector.conntrack",
        "--no-collector.nic",
        "--no-collector.kmsg",
        "--no-netlink",
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    agent.wait_ready();
    agent
}

#[test]
fn file_handles_opened_here_move_fs_file_nr() {
    const OPEN: usize = 3000;
    let agent = pressure_agent(&[]);
    let before = wait_for("file handles metric", Duration::from_secs(10), || {
        metric(&agent, "nodediag_file_handles_allocated")
    });
    // The test's own limit may be lower than what it opens.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        if lim.rlim_cur < 2 * OPEN as u64 && lim.rlim_max >= 2 * OPEN as u64 {
            lim.rlim_cur = 2 * OPEN as u64;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let files: Vec<fs::File> = (0..OPEN)
        .map(|_| fs::File::open("/dev/null").expect("open /dev/null"))
        .collect();
    // Other processes on the host open and close files too: look for most of ours.
    let raised = wait_for("fs.file-nr to rise", Duration::from_secs(20), || {
        metric(&agent, "nodediag_file_handles_allocated")
            .filter(|v| *v >= before + OPEN as f64 * 0.8)
    });
    drop(files);
    wait_for("fs.file-nr to fall back", Duration::from_secs(20), || {
        metric(&agent, "nodediag_file_handles_allocated")
            .filter(|v| *v <= raised - OPEN as f64 * 0.8)
    });
}

struct Inotify(Vec<libc::c_int>);

impl Drop for Inotify {
    fn drop(&mut self) {
        for fd in &self.0 {
            // SAFETY: fds we opened and nobody else closes.
            unsafe { libc::close(*fd) };
        }
    }
}

#[test]
fn inotify_instances_opened_here_are_counted_for_our_uid() {
    if !is_root() {
        eprintln!("skipped: reading every process's fds needs root");
        return;
    }
    let max: f64 = fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A low threshold instead of exhausting a limit other root processes share.
    let ratio = 8.0 / max;
    let ratio_arg = format!("{ratio}");
    let agent = pressure_agent(&["--inotify.ratio", &ratio_arg]);
    let count = |a: &Agent| metric(a, "nodediag_inotify_instances{uid=\"0\"}").unwrap_or(0.0);
    let before = count(&agent);
    let ours = Inotify(
        (0..10)
            // SAFETY: inotify_init1 has no memory preconditions.
            .map(|_| unsafe { libc::inotify_init1(libc::IN_CLOEXEC) })
            .filter(|fd| *fd >= 0)
            .collect(),
    );
    assert_eq!(ours.0.len(), 10, "could not create inotify instances");
    wait_for("our 10 instances counted", Duration::from_secs(20), || {
        (count(&agent) >= before + 10.0).then_some(())
    });
    let f = wait_for(
        "inotify_watches_exhausted for uid 0",
        Duration::from_secs(20),
        || {
            let v = agent
                .get_json("/api/v1/findings?finding=inotify_watches_exhausted&subject=uid%200");
            v["findings"].as_array()?.first().cloned()
        },
    );
    assert!(f["evidence"]["instances"].as_u64().unwrap() >= 10);
    let me = std::process::id() as u64;
    assert!(
        f["evidence"]["top_processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == me),
        "this test should be among the top holders: {f}"
    );
    drop(ours);
    wait_for("the instances to go away", Duration::from_secs(20), || {
        (count(&agent) <= before).then_some(())
    });
}

/// A cgroup v1 memory hierarchy laid out as the kubelet's cgroupfs driver does;
/// removes what it created, innermost first, even when the test fails.
struct PodCgroup {
    created: Vec<PathBuf>,
    container: PathBuf,
    child: Option<Child>,
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for dir in self.created.iter().rev() {
            // Empty once the child is gone; retry briefly while the kernel finishes
            // tearing the killed task down.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl PodCgroup {
    fn create(root: &Path, uid: &str, cid: &str) -> PodCgroup {
        let mut cg = PodCgroup {
            created: Vec::new(),
            container: PathBuf::new(),
            child: None,
        };
        let mut dir = root.to_path_buf();
        for part in ["kubepods", "burstable", &format!("pod{uid}"), cid] {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                cg.created.push(dir.clone());
            }
        }
        cg.container = dir;
        cg
    }
}

#[test]
fn an_oom_kill_in_a_pod_cgroup_names_the_pod() {
    let memory = Path::new("/sys/fs/cgroup/memory");
    if !is_root() || !memory.join("memory.limit_in_bytes").exists() {
        eprintln!(
            "skipped: needs root and the cgroup v1 memory controller at {}",
            memory.display()
        );
        return;
    }
    if !Path::new("/dev/kmsg").exists() {
        eprintln!("skipped: no /dev/kmsg");
        return;
    }
    let pid = std::process::id();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let uid = format!("{pid:08x}-0000-4000-8000-{:012x}", nanos & 0xffff_ffff_ffff);
    let cid = format!("{:016x}{:016x}{:032x}", pid, nanos as u64, nanos);
    let (ns, pod, container) = ("shop", format!("cart-{pid}"), "app");

    let mut cg = PodCgroup::create(memory, &uid, &cid);
    let limit = 32u64 << 20;
    fs::write(
        cg.container.join("memory.limit_in_bytes"),
        limit.to_string(),
    )
    .unwrap();
    let memsw = cg.container.join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        fs::write(&memsw, limit.to_string()).unwrap();
    }

    // The kubelet's log directories name the pod and container in a scratch rootfs.
    let rootfs = tempfile::tempdir().unwrap();
    let pods = rootfs
        .path()
        .join(format!("var/log/pods/{ns}_{pod}_{uid}/{container}"));
    fs::create_dir_all(&pods).unwrap();
    let containers = rootfs.path().join("var/log/containers");
    fs::create_dir_all(&containers).unwrap();
    fs::write(
        containers.join(format!("{pod}_{ns}_{container}-{cid}.log")),
        "",
    )
    .unwrap();

    let agent = Agent::start(&[
        "--interval",
        "300ms",
        "--no-collector.conntrack",
        "--no-collector.nic",
        "--no-netlink",
        "--path.rootfs",
        rootfs.path().to_str().unwrap(),
        "--path.kmsg",
        "/dev/kmsg",
    ]);
    agent.wait_ready();
    let kmsg = agent.get_json("/api/v1/collectors/kmsg");
    assert_eq!(kmsg["status"]["state"], "ok", "{kmsg}");

    // The shell moves itself into the cgroup, then buffers 200 MB in a variable.
    let procs = cg.container.join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && x=$(head -c 200000000 /dev/zero | tr '\\0' x) && echo survived",
        procs.display()
    );
    cg.child = Some(Command::new("sh").args(["-c", &script]).spawn().unwrap());
    let status = wait_for(
        "the child to be OOM-killed",
        Duration::from_secs(60),
        || cg.child.as_mut().unwrap().try_wait().unwrap(),
    );
    assert!(
        !status.success(),
        "the child should not survive a 32 MiB limit: {status:?}"
    );

    let subject = format!("{ns}/{pod}");
    let f: Value = wait_for("oom_kills naming the pod", Duration::from_secs(30), || {
        let v = agent.get_json("/api/v1/findings?finding=oom_kills");
        v["findings"]
            .as_array()?
            .iter()
            .find(|f| f["subject"] == subject.as_str())
            .cloned()
    });
    let ev = &f["evidence"];
    assert_eq!(ev["pod_uid"], uid.as_str());
    assert_eq!(ev["namespace"], ns);
    assert_eq!(ev["pod"], pod.as_str());
    assert_eq!(ev["container"], container);
    assert_eq!(ev["container_id"], cid.as_str());
    let memcg = ev["memory_cgroup"].as_str().unwrap();
    assert!(
        memcg.ends_with(&format!("/kubepods/burstable/pod{uid}/{cid}")),
        "{memcg}"
    );
    assert_eq!(ev["constraint"], "CONSTRAINT_MEMCG");
    assert!(
        ev["kernel_log"][0]
            .as_str()
            .unwrap()
            .contains("Killed process"),
        "{ev}"
    );
    // vmstat's oom_kill counted it too.
    assert!(metric(&agent, "nodediag_oom_kills_total").unwrap() >= 1.0);
    let log = agent.get_json("/api/v1/kernel-log?event=oom_kill");
    assert!(
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["pod"]["pod_uid"] == uid.as_str()),
        "{log}"
    );
}
