//! The disk collector against real filesystems: a temporary directory on the machine's
//! disk, a loop-mounted ext4 made slow with blkio throttling, read-only and filled
//! tmpfs mounts. Everything a test mounts or creates is undone by a guard, even when
//! the test fails.

mod common;

use common::conntrack::is_root;
use common::mount::{run, Mount};
use common::{check, skip, wait_for, Agent};
use nodediag::collect::disk::probe::{self, ProbeFile};
use nodediag::diagnose::disk::percentile;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn unique(what: &str) -> String {
    format!(
        "nodediag-test-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// These tests time real I/O (and compare it with fio's at 25%); run side by side,
/// their loop devices and probes share the same backing disk and skew each other.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static DISK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    DISK.lock().unwrap_or_else(|e| e.into_inner())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A cgroup v1 blkio group limiting write IOPS on one device; its processes go
/// back to the root group and it is removed on drop.
struct BlkioThrottle {
    dir: PathBuf,
    dev: String,
}

impl BlkioThrottle {
    fn with_limit(dev: &str, file: &str, limit: u32) -> Result<Self, String> {
        let root = Path::new("/sys/fs/cgroup/blkio");
        if !root.join("blkio.throttle.write_iops_device").exists() {
            return Err("no cgroup v1 blkio controller with throttling".into());
        }
        let dir = root.join(unique("blkio"));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let g = Self {
            dir,
            dev: dev.to_string(),
        };
        std::fs::write(g.dir.join(file), format!("{dev} {limit}\n"))
            .map_err(|e| format!("{file}: {e}"))?;
        Ok(g)
    }

    /// Lifts the limits: I/O held back by them is let through.
    fn release(&self) {
        for file in [
            "blkio.throttle.write_iops_device",
            "blkio.throttle.write_bps_device",
        ] {
            let _ = std::fs::write(self.dir.join(file), format!("{} 0\n", self.dev));
        }
    }
}

impl Drop for BlkioThrottle {
    fn drop(&mut self) {
        self.release();
        let root = self.dir.parent().expect("parent").join("cgroup.procs");
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(&root, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `nodediag serve` with only the disk-related collectors, optionally started inside
/// a cgroup.
fn serve(args: &[&str], cgroup: Option<&Path>) -> Agent {
    let mut all = vec!["--no-collector.nic", "--no-collector.conntrack"];
    all.extend_from_slice(args);
    match cgroup {
        Some(cg) => Agent::start_in_cgroup(cg, &all),
        None => Agent::start(&all),
    }
}

fn probe_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".nodediag-fsync-probe."))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn dir_json<'a>(disks: &'a Value, dir: &str) -> Option<&'a Value> {
    disks["dirs"].as_array()?.iter().find(|d| d["path"] == dir)
}

#[test]
fn probe_on_the_real_disk_wraps_its_file_and_removes_it_on_sigterm() {
    let _one_at_a_time = serial();
    let dir = tempfile::Builder::new()
        .prefix(&unique("probe"))
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = path(dir.path()).to_string();
    let size: u64 = 128 * 1024; // 56 records: the file wraps within seconds
    let mut agent = serve(
        &[
            "--fsync.path",
            &d,
            "--disk.path",
            &d,
            "--fsync.file-size",
            "128KiB",
            "--fsync.min-free",
            "1MiB",
            "--collector.disk.interval",
            "1s",
            "--fsync.probes",
            "40",
        ],
        None,
    );
    let mut largest = 0;
    let disks = wait_for(
        "the probe to wrap around its file",
        Duration::from_secs(60),
        || {
            for f in probe_files(dir.path()) {
                largest = largest.max(std::fs::metadata(f).map(|m| m.len()).unwrap_or(0));
            }
            let v = agent.get_json("/api/v1/disks");
            let total = dir_json(&v, &d)?["probe"]["probes_total"].as_u64()?;
            (total > 2 * size / 2300).then_some(v)
        },
    );
    assert_eq!(
        largest, size,
        "the probe file has exactly its configured size"
    );
    let files = probe_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), size);

    let entry = dir_json(&disks, &d).unwrap();
    assert_eq!(entry["probe"]["state"], "running");
    assert_eq!(entry["probe"]["stalled"], false);
    let (p50, p99, max) = (
        entry["fsync"]["p50_seconds"].as_f64().unwrap(),
        entry["fsync"]["p99_seconds"].as_f64().unwrap(),
        entry["fsync"]["max_seconds"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{p50} {p99} {max}");
    assert!(max < 5.0, "a 2300-byte fdatasync on a healthy disk: {max}s");
    let device = entry["device"]
        .as_str()
        .expect("a block device under /var/tmp");
    assert!(entry["space"]["size_bytes"].as_u64().unwrap() > 0);
    assert!(
        disks["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|dev| dev["name"] == entry["disk"] && dev["write_iops"].as_f64().unwrap() > 0.0),
        "the disk's own counters saw the probe's writes: {disks}"
    );

    let (_, metrics) = agent.get("/metrics");
    let bucket = format!(
        "nodediag_fsync_duration_seconds_bucket{{path=\"{d}\",device=\"{device}\",le=\"0.01\"}}"
    );
    assert!(metrics.contains(&bucket), "{bucket} missing");
    assert!(metrics.contains(&format!(
        "nodediag_fsync_duration_seconds_bucket{{path=\"{d}\",device=\"{device}\",le=\"+Inf\"}}"
    )));
    assert!(metrics.contains(&format!("nodediag_fsync_probe_up{{path=\"{d}\"}} 1")));
    let (_, report) = agent.get("/");
    assert!(report.contains("fsync p50"), "{report}");

    assert!(agent.terminate(), "graceful exit on SIGTERM");
    assert!(
        probe_files(dir.path()).is_empty(),
        "probe file left after shutdown"
    );

    // A one-shot check probes too and leaves nothing behind.
    let (code, out) = check(&[
        "--finding",
        "fsync_slow",
        "--fsync.path",
        &d,
        "--disk.path",
        &d,
        "--fsync.min-free",
        "1MiB",
        "--fsync.warn",
        "5s",
        "--fsync.critical",
        "8s",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        probe_files(dir.path()).is_empty(),
        "check left a probe file"
    );
}

/// fio's fdatasync latencies (seconds, from its json+ latency bins, about 1.5% wide)
/// for etcd's recipe in `dir`, run inside `cgroup`; None when fio is not installed.
fn fio_latencies(dir: &str, cgroup: &Path, writes: u64) -> Option<Vec<f64>> {
    if run("fio", &["--version"]).is_err() {
        return None;
    }
    let script = format!(
        "echo $$ > '{}/cgroup.procs' && exec fio --rw=write --ioengine=sync --fdatasync=1 \
         --directory='{dir}' --size={} --bs=2300 --name=nodediag-test-fio --output-format=json+",
        cgroup.display(),
        writes * 2300
    );
    let out = run("sh", &["-c", &script]).expect("fio");
    let _ = std::fs::remove_file(Path::new(dir).join("nodediag-test-fio.0.0"));
    let v: Value = serde_json::from_str(&out).expect("fio json");
    let bins = v["jobs"][0]["sync"]["lat_ns"]["bins"]
        .as_object()
        .expect("fio's latency bins");
    let mut out = Vec::new();
    for (ns, n) in bins {
        let secs = ns.parse::<f64>().expect("a bin in ns") / 1e9;
        out.extend(std::iter::repeat_n(
            secs,
            n.as_u64().expect("a count") as usize,
        ));
    }
    Some(out)
}

/// nodediag's own probe (the agent's code: a preallocated file, write + fdatasync
/// of 2300-byte records) `writes` times in `dir`, from a thread placed in `cgroup`
/// so the same blkio limit applies. Latencies in seconds.
fn probe_latencies(dir: &str, cgroup: &Path, writes: usize) -> Vec<f64> {
    let dir = PathBuf::from(dir);
    let tasks = cgroup.join("tasks");
    std::thread::spawn(move || {
        // cgroup v1 places threads one by one; this one leaves the group when it ends.
        std::fs::write(&tasks, nix::unistd::gettid().to_string()).expect("join the blkio group");
        let mut p = ProbeFile::create(&probe::file_name(&dir), 1 << 20).expect("probe file");
        let out = (0..writes)
            .map(|_| p.probe_once().expect("probe").as_secs_f64())
            .collect();
        p.remove().expect("remove the probe file");
        out
    })
    .join()
    .expect("probe thread")
}

/// Nearest-rank percentile of unsorted values, as nodediag computes its own.
fn pct(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, p).expect("values")
}

/// An ext4 on a loop device of `size`, its writes limited to `bytes_per_second` by a
/// blkio cgroup (which the agent is started in). None, after saying why, where the
/// machine cannot do it.
fn throttled_loop_ext4(size: &str, bytes_per_second: u32) -> Option<(Mount, BlkioThrottle)> {
    if !is_root() {
        skip("needs root for losetup, mount and blkio cgroups");
        return None;
    }
    let mount = match Mount::loop_ext4(size) {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot make a loop-mounted ext4: {e}"));
            return None;
        }
    };
    let loop_dev = mount.loop_dev.clone().expect("a loop mount has a device");
    let name = loop_dev.trim_start_matches("/dev/");
    let majmin = std::fs::read_to_string(format!("/sys/block/{name}/dev")).unwrap();
    match BlkioThrottle::with_limit(
        majmin.trim(),
        "blkio.throttle.write_bps_device",
        bytes_per_second,
    ) {
        Ok(t) => Some((mount, t)),
        Err(e) => {
            skip(&e.to_string());
            None
        }
    }
}

#[test]
fn a_disk_throttled_by_blkio_is_fsync_slow_and_agrees_with_fio() {
    let _one_at_a_time = serial();
    // 16 KiB/s of writes on this device: each 4 KiB page a sync writes waits about
    // 250 ms for its share, whether the disk was idle before or not (an IOPS limit
    // would let a write after an idle spell straight through).
    let Some((mount, throttle)) = throttled_loop_ext4("1G", 16384) else {
        return;
    };
    let loop_dev = mount.loop_dev.clone().unwrap();
    let name = loop_dev.trim_start_matches("/dev/");
    let mut agent = serve(
        &[
            "--fsync.path",
            mount.path(),
            "--disk.path",
            mount.path(),
            "--fsync.file-size",
            "1MiB",
            "--fsync.min-free",
            "1MiB",
            "--collector.disk.interval",
            "2s",
            "--fsync.probes",
            "5",
        ],
        Some(&throttle.dir),
    );
    let finding = wait_for(
        "fsync_slow over 40 probes",
        Duration::from_secs(120),
        || {
            let v = agent.get_json("/api/v1/findings?finding=fsync_slow");
            v["findings"]
                .as_array()?
                .iter()
                .find(|f| {
                    f["subject"] == mount.path() && f["evidence"]["probes"].as_u64() >= Some(40)
                })
                .cloned()
        },
    );
    assert_eq!(finding["severity"], "critical", "{finding}");
    let ev = &finding["evidence"];
    let p99 = ev["p99_seconds"].as_f64().unwrap();
    assert!(
        p99 > 0.1,
        "p99 {p99}s is over the 100 ms critical threshold"
    );
    assert!(p99 < 5.0, "p99 {p99}s: throttled, not hung");
    assert_eq!(ev["stalled"], false);
    assert_eq!(ev["device"], name);
    // Device figures need two samples of the counters; the throttle holds writes
    // back before they reach the device, so the device itself looks fast.
    let dev = wait_for("the loop device's figures", Duration::from_secs(30), || {
        let disks = agent.get_json("/api/v1/disks");
        disks["devices"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == name && d["write_iops"].as_f64() > Some(0.0))
            .cloned()
    });
    eprintln!("throttled: nodediag p99 {p99}s; device {dev}");
    assert!(agent.terminate());

    // etcd's own disk check on the same directory, under the same limit, taking
    // turns with nodediag's probe so both see the same background I/O on the
    // shared backing disk. Each round starts a new file at offset 0 on both sides,
    // so both write the same mix of records that dirty one page or two.
    const ROUNDS: usize = 3;
    const WRITES: usize = 20;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let fio = || fio_latencies(mount.path(), &throttle.dir, WRITES as u64);
        let probe = || probe_latencies(mount.path(), &throttle.dir, WRITES);
        let (f, p) = if round % 2 == 0 {
            let p = probe();
            (fio(), p)
        } else {
            let f = fio();
            (f, probe())
        };
        let Some(f) = f else {
            skip("the fio comparison: fio is not installed");
            return;
        };
        theirs.extend(f);
        ours.extend(p);
    }
    let agent_p50 = ev["p50_seconds"].as_f64().unwrap();
    let figures = |v: &[f64]| (pct(v, 0.5), pct(v, 0.9), pct(v, 0.99));
    let ((p50, p90, p99_ours), (fio50, fio90, fio99)) = (figures(&ours), figures(&theirs));
    eprintln!(
        "agent p50 {agent_p50}s p99 {p99}s; interleaved over {} and {} syncs: \
         probe p50 {p50}s p90 {p90}s p99 {p99_ours}s, fio p50 {fio50}s p90 {fio90}s p99 {fio99}s",
        ours.len(),
        theirs.len()
    );
    // The median and a high percentile agree: over 60 syncs a p90 is decided by
    // the throttle, a p99 by the one slowest write of the backing disk.
    for (what, ours, theirs) in [
        ("agent p50 vs fio", agent_p50, fio50),
        ("probe p50 vs fio", p50, fio50),
        ("probe p90 vs fio", p90, fio90),
    ] {
        assert!(
            (0.75..=1.25).contains(&(ours / theirs)),
            "{what}: nodediag {ours}s vs fio {theirs}s"
        );
    }
    // The tails are both the throttle's: a record that dirties two 4 KiB pages
    // waits 0.5 s for them at 16 KiB/s, so no p99 is under 3/4 of that, and a
    // throttled write is slow, not hung.
    for (who, p99) in [("agent", p99), ("probe", p99_ours), ("fio", fio99)] {
        assert!(
            (0.375..5.0).contains(&p99),
            "{who} p99 {p99}s is outside what the throttle explains"
        );
    }
}

#[test]
fn a_write_held_back_indefinitely_is_a_stall_and_shutdown_still_cleans_up() {
    let _one_at_a_time = serial();
    // One byte a second: the probe's first 4 KiB data write does not get through
    // for an hour, the way a write to a hung disk or NFS server never returns.
    let Some((mount, throttle)) = throttled_loop_ext4("64M", 1) else {
        return;
    };
    let mut agent = serve(
        &[
            "--fsync.path",
            mount.path(),
            "--disk.path",
            mount.path(),
            "--fsync.file-size",
            "1MiB",
            "--fsync.min-free",
            "1MiB",
            "--collector.disk.interval",
            "1s",
            "--fsync.stall-timeout",
            "2s",
        ],
        Some(&throttle.dir),
    );
    let finding = wait_for("a stalled fsync_slow", Duration::from_secs(60), || {
        let v = agent.get_json("/api/v1/findings?finding=fsync_slow");
        v["findings"]
            .as_array()?
            .iter()
            .find(|f| f["subject"] == mount.path() && f["evidence"]["stalled"] == true)
            .cloned()
    });
    assert_eq!(finding["severity"], "critical", "{finding}");
    eprintln!("stall finding: {finding}");
    assert!(finding["evidence"]["stalled_seconds"].as_f64().unwrap() >= 2.0);
    assert_eq!(finding["evidence"]["stalled_operation"], "write+fdatasync");
    let (_, metrics) = agent.get("/metrics");
    assert!(
        metrics.contains(&format!(
            "nodediag_fsync_probe_stalled{{path=\"{}\"}} 1",
            mount.path()
        )),
        "{metrics}"
    );
    // The collector keeps sampling: one stuck thread, no pile-up of new probes.
    let runs = |a: &Agent| {
        a.get_json("/api/v1/collectors/disk")["runs_total"]
            .as_u64()
            .unwrap()
    };
    let before = runs(&agent);
    wait_for("two more samples", Duration::from_secs(20), || {
        (runs(&agent) >= before + 2).then_some(())
    });
    let threads = std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim() == "nodediag-disk")
        })
        .count();
    assert_eq!(threads, 1, "one probe thread for the one directory");

    throttle.release();
    assert!(
        agent.terminate(),
        "graceful exit once the disk answers again"
    );
    assert!(
        probe_files(Path::new(mount.path())).is_empty(),
        "probe file left behind"
    );
}

/// `nodediag check` of filesystem_readonly for `dir`, watched and not probed (the
/// probe writes under /var/tmp): no write of nodediag's there meets EROFS.
fn read_only_watched(dir: &str) -> (i32, Value) {
    let (code, out) = check(&[
        "--finding",
        "filesystem_readonly",
        "--fsync.path",
        "/var/tmp",
        "--disk.path",
        dir,
        "--format",
        "json",
    ]);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, v)
}

#[test]
fn a_read_only_filesystem_is_flagged_from_mountinfo_and_from_erofs() {
    let _one_at_a_time = serial();
    if !is_root() {
        skip("needs root to mount");
        return;
    }
    let mount = match Mount::tmpfs("ro,size=1m") {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot mount tmpfs: {e}"));
            return;
        }
    };
    let args = |procfs: &str| -> (i32, Value) {
        let (code, out) = check(&[
            "--finding",
            "filesystem_readonly",
            "--path.procfs",
            procfs,
            "--fsync.path",
            mount.path(),
            "--disk.path",
            mount.path(),
            "--fsync.min-free",
            "0",
            "--fsync.file-size",
            "64KiB",
            "--format",
            "json",
        ]);
        (
            code,
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
        )
    };
    let (code, v) = args("/proc");
    assert_eq!(code, 1, "{v}");
    let f = &v["findings"][0];
    assert_eq!(f["id"], "filesystem_readonly");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["subject"], mount.path());
    assert_eq!(
        f["evidence"]["source"], "EROFS",
        "the failed write is the first evidence"
    );

    // Without a mount table (a procfs without mountinfo), the write's EROFS alone
    // still says it; with the mount table, an idle watched directory is judged by it.
    let empty_proc = tempfile::tempdir().unwrap();
    let (code, v) = args(path(empty_proc.path()));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["findings"][0]["evidence"]["source"], "EROFS");

    let (code, v) = read_only_watched(mount.path());
    assert_eq!(code, 1, "{v}");
    let f = &v["findings"][0];
    assert_eq!(f["evidence"]["source"], "mountinfo");
    assert!(
        f["evidence"]["detail"].as_str().unwrap().contains("ro"),
        "{f}"
    );
}

#[test]
fn an_ext4_error_under_errors_remount_ro_is_flagged_from_the_mount_table() {
    let _one_at_a_time = serial();
    if !is_root() {
        skip("needs root for losetup and mount");
        return;
    }
    let mount = match Mount::loop_ext4_with("64M", "errors=remount-ro") {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot make a loop-mounted ext4: {e}"));
            return;
        }
    };
    let dev = mount
        .loop_dev
        .as_deref()
        .unwrap()
        .trim_start_matches("/dev/");
    // ext4's own switch for raising a filesystem error, as a failing disk would.
    let trigger = format!("/sys/fs/ext4/{dev}/trigger_fs_error");
    if !Path::new(&trigger).exists() {
        skip(&format!("{trigger} is missing"));
        return;
    }
    let (code, v) = read_only_watched(mount.path());
    assert_eq!(code, 0, "healthy before the error: {v}");

    std::fs::write(&trigger, "1").unwrap();
    let (code, v) = read_only_watched(mount.path());
    assert_eq!(code, 1, "{v}");
    let f = &v["findings"][0];
    assert_eq!(f["id"], "filesystem_readonly");
    assert_eq!(f["subject"], mount.path());
    assert_eq!(f["evidence"]["source"], "mountinfo", "{f}");
    // Before Linux 6.15 the superblock turns ro; since, ext4 keeps it rw and says
    // emergency_ro, which statvfs does not report.
    let detail = f["evidence"]["detail"].as_str().unwrap();
    let superblock = detail.rsplit("superblock ").next().unwrap();
    assert!(
        superblock
            .split(',')
            .any(|o| o == "ro" || o == "emergency_ro"),
        "{detail}"
    );
}

#[test]
fn a_filled_filesystem_is_disk_space_low_and_inodes_low() {
    let _one_at_a_time = serial();
    if !is_root() {
        skip("needs root to mount");
        return;
    }
    let mount = match Mount::tmpfs("size=4m,nr_inodes=200") {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot mount tmpfs: {e}"));
            return;
        }
    };
    let root = Path::new(mount.path());
    // Most inodes first (empty files take no blocks), then every block.
    for i in 0..195 {
        std::fs::File::create(root.join(format!("f{i}"))).unwrap();
    }
    let big = vec![0xa5u8; 64 * 1024];
    {
        use std::io::Write;
        let mut f = std::fs::File::create(root.join("fill")).unwrap();
        while f.write_all(&big).is_ok() {}
    }
    let (code, out) = check(&[
        "--finding",
        "disk_space_low",
        "--finding",
        "inodes_low",
        "--fsync.path",
        mount.path(),
        "--disk.path",
        mount.path(),
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, 1, "{v}");
    let findings = v["findings"].as_array().unwrap();
    let get = |id: &str| {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    let space = get("disk_space_low");
    assert_eq!(space["severity"], "critical");
    assert_eq!(space["subject"], mount.path());
    assert!(space["evidence"]["free_ratio"].as_f64().unwrap() < 0.05);
    assert_eq!(space["evidence"]["size_bytes"], 4 * 1024 * 1024);
    let inodes = get("inodes_low");
    assert_eq!(inodes["severity"], "critical");
    assert_eq!(inodes["evidence"]["inodes"], 200);
    assert!(inodes["evidence"]["inodes_free"].as_u64().unwrap() < 10);
    // The probe does not write into a full filesystem.
    let (_, text) = check(&[
        "--finding",
        "disk_space_low",
        "--fsync.path",
        mount.path(),
        "--disk.path",
        mount.path(),
    ]);
    assert!(text.contains("probe refused"), "{text}");
    assert!(probe_files(root).is_empty());
}
