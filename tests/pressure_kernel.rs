//! The pressure and kmsg collectors against the real kernel of this host: an OOM
//! kill provoked in a pod-like memory cgroup, file handles and inotify instances
//! opened by this test process.

mod common;

use common::{skip, wait_for, Agent};
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
    // Every process read every round, as the instances this test opens must be seen
    // on any kernel.
    pressure_agent_reading_all_every(&["--inotify.interval", "200ms"], extra)
}

fn pressure_agent_reading_all_every(inotify: &[&str], extra: &[&str]) -> Agent {
    let mut args = vec![
        "--interval",
        "200ms",
        "--no-collector.conntrack",
        "--no-collector.nic",
        "--no-collector.kmsg",
        "--no-netlink",
    ];
    args.extend_from_slice(inotify);
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
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < 2 * OPEN as u64 && hard >= 2 * OPEN as u64 {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, 2 * OPEN as u64, hard);
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

/// The inotify tests count this process's instances under one uid: one at a time.
static INOTIFY_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
        skip("reading every process's fds needs root");
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
    let _alone = INOTIFY_TESTS.lock().unwrap_or_else(|e| e.into_inner());
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
    // The walk skips the agent's own descriptors and adds what the agent knows it
    // holds: the one instance that watches the cgroup directories it lists, and
    // nothing it does not count.
    let own = inotify_instances_of(agent.pid());
    assert!(
        own <= 1,
        "the agent holds {own} inotify instances, of which it counts one at most"
    );
}

/// A process's inotify instances, read from its descriptors.
fn inotify_instances_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Processes this test started, killed when it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn between_full_reads_new_processes_and_watches_are_followed() {
    if !is_root() {
        skip("reading every process's fds needs root");
        return;
    }
    let _alone = INOTIFY_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    // Every process read once, at the first round: what is seen after comes from the
    // rounds between full reads.
    let agent = pressure_agent_reading_all_every(&["--inotify.interval", "1h"], &[]);
    // A user holding nothing has no series.
    let gauge = |a: &Agent, name: &str| metric(a, &format!("{name}{{uid=\"0\"}}")).unwrap_or(0.0);
    wait_for("the first inotify count", Duration::from_secs(10), || {
        metric(&agent, "nodediag_inotify_max_user_instances")
    });
    let before = gauge(&agent, "nodediag_inotify_instances");
    // Programs started since: `tail -f` follows its file with an inotify instance.
    let dir = tempfile::tempdir().unwrap();
    let followed = dir.path().join("followed");
    fs::write(&followed, "").unwrap();
    let tails = Children(
        (0..3)
            .map(|_| {
                Command::new("tail")
                    .arg("-f")
                    .arg(&followed)
                    .spawn()
                    .expect("tail")
            })
            .collect(),
    );
    for t in &tails.0 {
        wait_for(
            "tail -f to open its inotify instance",
            Duration::from_secs(10),
            || (inotify_instances_of(t.id()) == 1).then_some(()),
        );
    }
    wait_for(
        "the 3 new processes' instances counted",
        Duration::from_secs(20),
        || (gauge(&agent, "nodediag_inotify_instances") >= before + 3.0).then_some(()),
    );
    // Watches added to an instance already counted: read again from every holder.
    let ours = Inotify(
        // SAFETY: inotify_init1 has no memory preconditions.
        std::iter::once(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) })
            .filter(|fd| *fd >= 0)
            .collect(),
    );
    assert_eq!(ours.0.len(), 1, "could not create an inotify instance");
    wait_for("our instance counted", Duration::from_secs(20), || {
        (gauge(&agent, "nodediag_inotify_instances") >= before + 4.0).then_some(())
    });
    let watches_before = gauge(&agent, "nodediag_inotify_watches");
    for i in 0..20 {
        let watched = dir.path().join(i.to_string());
        fs::create_dir(&watched).unwrap();
        let path = std::ffi::CString::new(watched.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: our own instance and a NUL-terminated path that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(ours.0[0], path.as_ptr(), libc::IN_CREATE) };
        assert!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
    }
    wait_for("our 20 watches counted", Duration::from_secs(20), || {
        (gauge(&agent, "nodediag_inotify_watches") >= watches_before + 20.0).then_some(())
    });
    drop(tails);
    drop(ours);
    wait_for("the instances to go away", Duration::from_secs(20), || {
        (gauge(&agent, "nodediag_inotify_instances") <= before).then_some(())
    });
}

/// A cgroup v1 memory cgroup (nested as given); removes the directories it created,
/// innermost first, even when the test fails.
struct TestCgroup {
    created: Vec<PathBuf>,
    container: PathBuf,
    child: Option<Child>,
}

impl Drop for TestCgroup {
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

impl TestCgroup {
    /// Creates the nested cgroup and limits its memory (and memory+swap) to 32 MiB.
    fn create(root: &Path, parts: &[&str]) -> TestCgroup {
        let mut cg = TestCgroup {
            created: Vec::new(),
            container: PathBuf::new(),
            child: None,
        };
        let mut dir = root.to_path_buf();
        for part in parts {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                cg.created.push(dir.clone());
            }
        }
        cg.container = dir;
        let limit = (32u64 << 20).to_string();
        fs::write(cg.container.join("memory.limit_in_bytes"), &limit).unwrap();
        let memsw = cg.container.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            fs::write(&memsw, &limit).unwrap();
        }
        cg
    }

    /// Runs a shell that moves itself into the cgroup, then buffers 200 MB in a
    /// variable; waits until the kernel has killed it.
    fn provoke_oom(&mut self) {
        let procs = self.container.join("cgroup.procs");
        let script = format!(
            "echo $$ > {} && x=$(head -c 200000000 /dev/zero | tr '\\0' x) && echo survived",
            procs.display()
        );
        self.child = Some(Command::new("sh").args(["-c", &script]).spawn().unwrap());
        let status = wait_for(
            "the child to be OOM-killed",
            Duration::from_secs(60),
            || self.child.as_mut().unwrap().try_wait().unwrap(),
        );
        assert!(
            !status.success(),
            "the child should not survive a 32 MiB limit: {status:?}"
        );
    }
}

fn v1_memory_controller() -> Option<&'static Path> {
    let memory = Path::new("/sys/fs/cgroup/memory");
    if !is_root() || !memory.join("memory.limit_in_bytes").exists() {
        skip(&format!(
            "needs root and the cgroup v1 memory controller at {}",
            memory.display()
        ));
        return None;
    }
    Some(memory)
}

#[test]
fn an_oom_kill_in_a_pod_cgroup_names_the_pod() {
    let Some(memory) = v1_memory_controller() else {
        return;
    };
    if !Path::new("/dev/kmsg").exists() {
        skip("no /dev/kmsg");
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

    let pod_dir = format!("pod{uid}");
    let mut cg = TestCgroup::create(memory, &["kubepods", "burstable", &pod_dir, &cid]);

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

    cg.provoke_oom();

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

/// Where /dev/kmsg exists but cannot be opened, syslog(2) is polled: an OOM kill in a cgroup
/// that is not a pod is still seen, named by its memory cgroup.
#[test]
fn syslog_polling_sees_an_oom_kill_in_a_plain_cgroup() {
    let Some(memory) = v1_memory_controller() else {
        return;
    };
    let name = format!("nodediag-test-{}", std::process::id());
    // A directory where the device should be: it exists but cannot be read as one,
    // like a device the container's device cgroup refuses.
    let refused = tempfile::tempdir().unwrap();
    let missing = refused.path();
    let agent = Agent::start(&[
        "--interval",
        "300ms",
        "--no-collector.conntrack",
        "--no-collector.nic",
        "--no-collector.pressure",
        "--no-netlink",
        "--path.kmsg",
        missing.to_str().unwrap(),
    ]);
    agent.wait_ready();
    let kmsg = agent.get_json("/api/v1/collectors/kmsg");
    assert_eq!(kmsg["sample"]["source"], "syslog", "{kmsg}");
    let mut cg = TestCgroup::create(memory, &[&name]);
    cg.provoke_oom();
    let subject = format!("/{name}");
    let f = wait_for(
        "oom_kills naming the cgroup",
        Duration::from_secs(30),
        || {
            let v = agent.get_json("/api/v1/findings?finding=oom_kills");
            v["findings"]
                .as_array()?
                .iter()
                .find(|f| f["subject"] == subject.as_str())
                .cloned()
        },
    );
    assert_eq!(f["evidence"]["memory_cgroup"], subject.as_str());
    assert!(f["evidence"].get("pod").is_none(), "{f}");
}

/// With kernel.dmesg_restrict=1 an unprivileged user can read neither /dev/kmsg nor
/// syslog(2): the collector is unavailable and says what to grant.
#[test]
fn without_permission_the_kernel_log_is_unavailable_with_a_hint() {
    let restricted =
        fs::read_to_string("/proc/sys/kernel/dmesg_restrict").is_ok_and(|s| s.trim() == "1");
    let setpriv = Path::new("/usr/bin/setpriv");
    if !is_root() || !restricted || !setpriv.exists() {
        skip("needs root, setpriv and kernel.dmesg_restrict=1 to drop to an unprivileged user");
        return;
    }
    let out = Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::BIN,
        ])
        .args([
            "check",
            "--format",
            "json",
            "--no-netlink",
            "--finding",
            "netdev_unregister_stuck",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(2), "could not tell: {v}");
    let status = &v["collectors"]["kmsg"]["status"];
    assert_eq!(status["state"], "unavailable", "{v}");
    let hint = status["hint"].as_str().unwrap();
    assert!(hint.contains("Operation not permitted"), "{hint}");
    assert!(hint.contains("CAP_SYSLOG"), "{hint}");
}
