//! inotify instances and watches per user, counted from the file descriptors of every
//! process (`/proc/<pid>/fd/*` links to `anon_inode:inotify`; each watch is an
//! `inotify wd:` line in `/proc/<pid>/fdinfo/<fd>`). The kernel keeps these counts
//! per user (ucounts) but does not export them.

use super::{read_link_at, ReadError};
use crate::host::HostRoot;
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::path::Path;

/// One process holding inotify instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InotifyHolder {
    pub pid: u32,
    pub comm: String,
    pub instances: u64,
    pub watches: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInotify {
    pub instances: u64,
    pub watches: u64,
    /// The processes holding the most instances, most first (at most `TOP`).
    pub top: Vec<InotifyHolder>,
}

pub const TOP: usize = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InotifyUsage {
    /// By effective uid, which the kernel charges.
    pub users: BTreeMap<u32, UserInotify>,
    /// Processes whose fds could not be read (exited meanwhile, or no permission).
    pub unreadable_processes: u64,
}

/// The effective uid from `/proc/<pid>/status` (`Uid: real effective saved fs`).
pub fn parse_status_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Watches of one inotify instance: its `inotify wd:` lines.
pub fn count_fdinfo_watches(fdinfo: &str) -> u64 {
    fdinfo
        .lines()
        .filter(|l| l.starts_with("inotify wd:"))
        .count() as u64
}

/// Walks every process but this one. Threads share their process's fd table, so
/// only the thread-group leaders under `/proc` are read. nodediag opens no inotify
/// instance (tests/pressure_kernel.rs checks a running agent), while at 500 pods it
/// holds half the node's descriptors (the cgroup files it keeps open): reading its
/// own links was half the walk.
pub fn scan(root: &HostRoot) -> Result<InotifyUsage, ReadError> {
    let mut usage = InotifyUsage::default();
    let mut holders: BTreeMap<u32, Vec<InotifyHolder>> = BTreeMap::new();
    let processes = std::fs::read_dir(&root.proc).map_err(|source| ReadError {
        path: root.proc.clone(),
        source,
    })?;
    // This process's pid as that procfs numbers it; none if it is another pid
    // namespace's.
    let own = std::fs::read_link(root.proc(&["self"]))
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok());
    for entry in processes.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == own {
            continue;
        }
        let pid_s = pid.to_string();
        let Ok(fds) = inotify_fds(&root.proc(&[&pid_s, "fd"])) else {
            usage.unreadable_processes += 1;
            continue;
        };
        let instances = fds.len() as u64;
        let mut watches = 0u64;
        for fd in fds {
            let info = root.proc(&[&pid_s, "fdinfo", &fd.to_string()]);
            if let Ok(text) = std::fs::read_to_string(info) {
                watches += count_fdinfo_watches(&text);
            }
        }
        if instances == 0 {
            continue;
        }
        let status = std::fs::read_to_string(root.proc(&[&pid_s, "status"])).unwrap_or_default();
        let Some(uid) = parse_status_euid(&status) else {
            usage.unreadable_processes += 1;
            continue;
        };
        let comm = std::fs::read_to_string(root.proc(&[&pid_s, "comm"]))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        let user = usage.users.entry(uid).or_default();
        user.instances += instances;
        user.watches += watches;
        holders.entry(uid).or_default().push(InotifyHolder {
            pid,
            comm,
            instances,
            watches,
        });
    }
    for (uid, mut list) in holders {
        list.sort_by(|a, b| b.instances.cmp(&a.instances).then(a.pid.cmp(&b.pid)));
        list.truncate(TOP);
        if let Some(u) = usage.users.get_mut(&uid) {
            u.top = list;
        }
    }
    Ok(usage)
}

/// The descriptors of one process that are inotify instances.
fn inotify_fds(fd_dir: &Path) -> nix::Result<Vec<u32>> {
    let mut fds = Vec::new();
    each_fd_link(fd_dir, |name, target| {
        if target == Some(b"anon_inode:inotify".as_slice()) {
            fds.extend(name.to_str().ok().and_then(|n| n.parse::<u32>().ok()));
        }
    })?;
    Ok(fds)
}

/// Calls `f` with the name and link target of every entry of a `/proc/<pid>/fd`
/// directory; the target is None when it is not a link, or longer than anything
/// looked for here (64 bytes). Each link is read relative to the open directory: a
/// path from `/` for every descriptor (five lookups in procfs) was most of the
/// walk's cost, as a node's agents hold thousands. Names and targets stay on the
/// stack: a walk reads every descriptor on the node, and copying each name and
/// target out cost two allocations a descriptor. `benches/kernel_floor.rs` makes
/// the same read bare.
pub fn each_fd_link(fd_dir: &Path, mut f: impl FnMut(&CStr, Option<&[u8]>)) -> nix::Result<()> {
    let mut dir = Dir::open(
        fd_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let at = dir.as_raw_fd();
    let mut buf = [0u8; 64];
    for entry in dir.iter().flatten() {
        let name = entry.file_name();
        if !matches!(name.to_bytes(), b"." | b"..") {
            f(name, read_link_at(at, name, &mut buf).ok());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn euid_is_the_second_uid() {
        let status = "Name:\tkubelet\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_euid(status), Some(0));
        assert_eq!(parse_status_euid("Name: x\n"), None);
        assert_eq!(parse_status_euid("Uid:\tx\n"), None);
    }

    #[test]
    fn watches_are_the_wd_lines() {
        let fdinfo = "pos:\t0\nflags:\t02004000\nmnt_id:\t15\nino:\t1057\ninotify wd:2 ino:1a2b sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a0000\ninotify wd:1 ino:2 sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:02000000\n";
        assert_eq!(count_fdinfo_watches(fdinfo), 2);
        assert_eq!(count_fdinfo_watches("pos:\t0\n"), 0);
    }

    #[test]
    fn only_links_to_an_inotify_instance_are_counted() {
        let d = tempfile::tempdir().unwrap();
        let target = "anon_inode:inotify";
        std::os::unix::fs::symlink(target, d.path().join("3")).unwrap();
        // Longer than the buffer, and starting with the target: not one.
        let long = format!("{target}{}", "x".repeat(100));
        std::os::unix::fs::symlink(long, d.path().join("4")).unwrap();
        std::os::unix::fs::symlink("socket:[1234]", d.path().join("5")).unwrap();
        std::fs::write(d.path().join("6"), target).unwrap();
        assert_eq!(inotify_fds(d.path()).unwrap(), [3]);
    }

    #[test]
    fn an_inotify_instance_of_this_process_is_found() {
        // SAFETY: inotify_init1 takes flags only; the descriptor is closed below.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(
            raw >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        let found = inotify_fds(Path::new("/proc/self/fd")).unwrap();
        // SAFETY: the descriptor is this test's own, closed once.
        unsafe { libc::close(raw) };
        assert!(found.contains(&(raw as u32)), "{raw} not in {found:?}");
    }
}
