//! What an earlier run left when it was killed before its drop ran (a timeout, a
//! SIGKILL): its containerd and shims, the containers they started, their cgroups,
//! mounts, bridge, veths, network namespace pins and kubelet log directories. Every
//! one of them carries the dead run's name (`ndrn<PID>`), its pod UIDs start with the
//! PID (`<pid:08x>-7e57-`), and its pods' addresses are in 10.215.0.0/16; only those
//! are touched, and only for runs whose process is gone.

use super::kubelet::pod_cgroup_mounts;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The file in a run's directory saying how to put back the global state it changed,
/// one `sysctl <path> <value>` or `make-private <mount point>` per line.
pub const GLOBAL_STATE: &str = "global-state-to-restore";

/// Removes the leftovers of every dead run; called with the realnode lock held, so no
/// other run of this test is alive. Says what it removed.
pub fn sweep() {
    for (pid, dir) in dead_runs() {
        let name = format!("ndrn{pid}");
        eprintln!("cleanup: leftovers of an earlier run ({name}) found; removing them");
        kill_processes_naming(&dir);
        kill_and_remove_pod_cgroups(pid);
        // While the run's veths still give its pods' namespaces their addresses.
        remove_orphan_pod_pins();
        unmount_under(&dir);
        restore_global_state(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        remove_bridge_and_ports(&name);
        remove_log_dirs(&name);
    }
}

/// `ndrn<PID>-*` directories under the temp dir whose PID no longer runs.
fn dead_runs() -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let pid: u32 = file.strip_prefix("ndrn")?.split('-').next()?.parse().ok()?;
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            (!alive && pid != std::process::id()).then(|| (pid, e.path()))
        })
        .collect()
}

fn processes() -> impl Iterator<Item = (i32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on a pid read from /proc this moment; a pid gone since is ESRCH.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// containerd and its shims name the run's directory (config, socket) on their
/// command line.
fn kill_processes_naming(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    for (pid, cmdline) in processes() {
        if cmdline.contains(&dir) {
            kill(pid);
        }
    }
}

/// The containers' processes, found through their pod cgroups, then the cgroups.
fn kill_and_remove_pod_cgroups(pid: u32) {
    let prefix = format!("pod{pid:08x}-7e57-");
    for mount in pod_cgroup_mounts() {
        let mut pods = Vec::new();
        for qos in ["kubepods", "kubepods/burstable", "kubepods/besteffort"] {
            let Ok(entries) = std::fs::read_dir(mount.join(qos)) else {
                continue;
            };
            pods.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path()),
            );
        }
        for pod in pods {
            let mut dirs = Vec::new();
            collect_dirs(&pod, &mut dirs);
            for d in &dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for p in procs.lines().filter_map(|l| l.trim().parse().ok()) {
                    kill(p);
                }
            }
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                // A killed task leaves its cgroup a moment after it is reaped.
                for _ in 0..100 {
                    if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// Rootfs overlays and shm mounts under the run's directory, deepest first.
fn unmount_under(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
}

fn ip(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The veths on the run's bridge go first: deleting a bridge keeps its ports.
fn remove_bridge_and_ports(bridge: &str) {
    for line in ip(&["-o", "link", "show", "master", bridge]).lines() {
        if let Some(port) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) {
            ip(&["link", "delete", port]);
        }
    }
    ip(&["link", "delete", bridge]);
}

/// The run's pods live in namespaces named after it (`<run>-data`, ...).
fn remove_log_dirs(run: &str) {
    for dir in ["/var/log/pods", "/var/log/containers"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .contains(&format!("_{run}-"))
            {
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
    }
}

/// Sandbox namespaces pinned by containerd (`/var/run/netns/cni-*`) that no process
/// is in any more and whose pod address is in this test's range.
fn remove_orphan_pod_pins() {
    use std::os::unix::fs::MetadataExt;
    let in_use: std::collections::HashSet<u64> = processes()
        .filter_map(|(pid, _)| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|m| m.ino())
        .collect();
    for e in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("cni-") {
            continue;
        }
        let inode = std::fs::metadata(e.path()).map(|m| m.ino()).unwrap_or(0);
        let ours = ip(&["-n", &name, "-4", "-o", "addr"]).contains(" 10.215.");
        if ours && !in_use.contains(&inode) {
            ip(&["netns", "delete", &name]);
        }
    }
}

fn restore_global_state(dir: &Path) {
    let journal = std::fs::read_to_string(dir.join(GLOBAL_STATE)).unwrap_or_default();
    for line in journal.lines() {
        match line.split_once(' ') {
            Some(("sysctl", rest)) => {
                if let Some((path, value)) = rest.split_once(' ') {
                    if path.starts_with("/proc/sys/") {
                        let _ = std::fs::write(path, value);
                    }
                }
            }
            Some(("make-private", path)) => {
                let _ = Command::new("mount")
                    .args(["--make-private", path])
                    .status();
            }
            _ => eprintln!("cleanup: {line:?} in {} not understood", dir.display()),
        }
    }
}
