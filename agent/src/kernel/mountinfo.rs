//! Mounts as `/proc/<pid>/mountinfo` lists them (proc(5)): which mount a directory is
//! on, its filesystem type, whether it is read-only, and where the cgroup hierarchies
//! are.

use super::{read_string, ReadError};
use crate::host::HostRoot;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub major: u32,
    pub minor: u32,
    /// The path inside its filesystem that the mount shows (`/` unless it is a bind
    /// mount of a subdirectory, or a cgroup seen from a cgroup namespace).
    pub root: String,
    /// Where it is mounted, as a path in the mount namespace of the process read.
    pub mount_point: String,
    /// Per-mount options (`ro`/`rw` first).
    pub mount_options: String,
    pub fstype: String,
    pub source: String,
    /// Superblock options: a filesystem remounted read-only after I/O errors says
    /// `ro` here, or `emergency_ro` for ext4 since Linux 6.15 ("ext4: correct
    /// behavior under errors=remount-ro mode"), which keeps the superblock `rw`;
    /// for cgroup v1 they name the controllers (`rw,cpu,cpuacct`).
    pub super_options: String,
}

impl Mount {
    /// Writes fail with EROFS: mounted read-only, or its superblock is. An ext4
    /// `emergency_ro` superblock sets no ST_RDONLY for statvfs: for a directory
    /// nodediag does not write to, the mount table is where it shows.
    pub fn read_only(&self) -> bool {
        has(&self.mount_options, "ro")
            || has(&self.super_options, "ro")
            || has(&self.super_options, "emergency_ro")
    }

    pub fn dev(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// One of the superblock options, whole (`cpu` is not `cpuset`).
    pub fn has_super_option(&self, name: &str) -> bool {
        has(&self.super_options, name)
    }
}

fn has(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

/// The host's mount table: PID 1's (the host's, with hostPID), else, when PID 1's is
/// absent or refused to us, this process's own. A PID 1 table that is there but does
/// not read (too large, an I/O error) is an error, not a reason to answer from another
/// table. The error is PID 1's, which is the one that says what to fix.
pub fn read_host(root: &HostRoot) -> Result<Vec<Mount>, ReadError> {
    let text = read_string(&root.proc(&["1", "mountinfo"])).or_else(|first| {
        let elsewhere = matches!(
            first.source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        );
        if !elsewhere {
            return Err(first);
        }
        read_string(&root.proc(&["self", "mountinfo"])).map_err(|_| first)
    })?;
    Ok(parse(&text))
}

/// The host's mount table as [`read_host`] reads it, read again only after the
/// kernel says it changed. A node's table holds a few mounts for every pod (volumes,
/// container root filesystems, each pinned network namespace), so reading and
/// parsing it every round costs more than anything read beside it, while it changes
/// only when pods come and go.
/// procfs flags a change to anyone polling an open `mountinfo` (proc(5): POLLPRI and
/// POLLERR); a table outside procfs (a fixture tree) is read every time. A
/// superblock the kernel turns read-only after I/O errors changes no mount, and
/// ext4's `emergency_ro` (Linux 6.15+) neither wakes the poll nor shows in statvfs
/// (both checked on 6.18), so the table is read again after [`MOUNTS_REREAD`] all
/// the same.
///
/// Clones share one table: the collectors that read it (cgroup, disk) each kept a
/// parsed copy, 160 to 250 KB apiece at 500 pods on the bench node, and far more
/// where every container's overlay mount lists its layers.
#[derive(Debug, Clone, Default)]
pub struct MountsMemo {
    last: Arc<Mutex<Option<MountsRead>>>,
}

#[derive(Debug)]
struct MountsRead {
    watch: MountWatch,
    at: Instant,
    mounts: Arc<Vec<Mount>>,
}

pub const MOUNTS_REREAD: Duration = Duration::from_secs(60);

impl MountsMemo {
    pub fn read(&self, root: &HostRoot) -> Result<Arc<Vec<Mount>>, ReadError> {
        // A poisoned lock only means a reader panicked: the memo is read afresh.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = last.as_ref() {
            if r.at.elapsed() < MOUNTS_REREAD && !r.watch.changed() {
                return Ok(r.mounts.clone());
            }
        }
        *last = None;
        // Opened before reading: a change between the two is flagged at the next poll.
        let watch = MountWatch::open(root, "1").or_else(|| MountWatch::open(root, "self"));
        let at = Instant::now();
        let mounts = Arc::new(read_host(root)?);
        *last = watch.map(|watch| MountsRead {
            watch,
            at,
            mounts: mounts.clone(),
        });
        Ok(mounts)
    }
}

/// A mount table held open, to ask the kernel whether it changed.
#[derive(Debug)]
pub struct MountWatch(File);

impl MountWatch {
    /// The table of `pid` (`1`, `self`) in `root`'s procfs; None when it does not
    /// open or is not procfs's (a fixture tree), which cannot say.
    pub fn open(root: &HostRoot, pid: &str) -> Option<Self> {
        File::open(root.proc(&[pid, "mountinfo"]))
            .ok()
            .filter(|f| fstatfs(f).is_ok_and(|s| s.filesystem_type() == PROC_SUPER_MAGIC))
            .map(Self)
    }

    /// A mount made, moved or removed in the table's namespace since it was opened
    /// or last asked.
    pub fn changed(&self) -> bool {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => false,
            Ok(_) => fds[0]
                .revents()
                .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
            Err(_) => true,
        }
    }
}

/// Parses every well-formed line: `id parent major:minor root mount-point options
/// [optional fields...] - fstype source super-options`. Lines without that shape are
/// skipped: a mount table is never worth failing a collection over.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    if l.len() < 6 {
        return None;
    }
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let source = unescape(r.next()?);
    let (major, minor) = l[2].split_once(':')?;
    Some(Mount {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(l[3]),
        mount_point: unescape(l[4]),
        mount_options: l[5].to_string(),
        fstype,
        source,
        super_options: r.next().unwrap_or("").to_string(),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(o) = octal {
            // Three octal digits fit a byte only up to \377.
            let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount a host path is on: the longest mount point that contains it, the last
/// one listed when several are stacked on the same point. When `dev` is known, mounts
/// of that device are preferred, so a view that differs from the mount table (a path
/// seen through a bind mount) still finds its filesystem.
pub fn find<'a>(mounts: &'a [Mount], path: &Path, dev: Option<(u32, u32)>) -> Option<&'a Mount> {
    let best = |want_dev: bool| {
        let mut best: Option<(usize, &Mount)> = None;
        for m in mounts {
            if want_dev && Some(m.dev()) != dev {
                continue;
            }
            let mp = Path::new(&m.mount_point);
            if !path.starts_with(mp) {
                continue;
            }
            let depth = mp
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, m));
            }
        }
        best.map(|(_, m)| m)
    };
    dev.and_then(|_| best(true)).or_else(|| best(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::testing;

    // Needs a live procfs and root to mount; tests/run.sh runs as root.
    #[test]
    fn the_memo_reads_the_table_again_after_a_mount_and_not_before() {
        if !testing::as_root("mounting a tmpfs") {
            return;
        }
        let root = HostRoot::default();
        let t = tempfile::tempdir().unwrap();
        let point = t.path().to_str().unwrap().to_string();
        let shown = |m: &[Mount]| m.iter().any(|m| m.mount_point == point);
        let memo = MountsMemo::default();
        let shared = memo.clone();
        let first = memo.read(&root).unwrap();
        assert!(!shown(&first));
        assert!(
            Arc::ptr_eq(&first, &memo.read(&root).unwrap()),
            "unchanged: kept"
        );
        assert!(
            Arc::ptr_eq(&first, &shared.read(&root).unwrap()),
            "a clone hands out the same table"
        );
        testing::run(&["mount", "-t", "tmpfs", "nodediag-test", &point]);
        let mounted = memo.read(&root);
        let seen_by_clone = shared.read(&root);
        // The table read is PID 1's when it can be: the same as this test's on a host.
        let here = read_host(&root).is_ok_and(|m| shown(&m));
        testing::run(&["umount", &point]);
        if !here {
            return eprintln!("skipped: PID 1 is in another mount namespace");
        }
        let mounted = mounted.unwrap();
        assert!(shown(&mounted), "a new mount is seen at once");
        assert!(
            Arc::ptr_eq(&mounted, &seen_by_clone.unwrap()),
            "read once for both"
        );
        assert!(!shown(&memo.read(&root).unwrap()), "and its removal");
    }

    const TEXT: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
30 27 254:1 / /var/lib/etcd rw,noatime shared:5 master:1 - xfs /dev/vdb rw,attr2
31 27 0:40 / /mnt/with\\040space ro,relatime - tmpfs none rw,size=4096k
32 27 7:0 / /var/log rw,relatime - ext4 /dev/loop0 ro,errors=remount-ro
33 27 0:41 / /var/log rw,relatime - tmpfs none rw
34 27 7:1 / /var/lib/containerd rw,relatime - ext4 /dev/loop1 rw,errors=remount-ro,emergency_ro
garbage line
";

    #[test]
    fn lines_with_optional_fields_and_escapes_parse() {
        let m = parse(TEXT);
        assert_eq!(m.len(), 7, "the garbage line is skipped");
        assert_eq!(m[2].mount_point, "/var/lib/etcd");
        assert_eq!(m[2].fstype, "xfs");
        assert_eq!(m[2].dev(), (254, 1));
        assert_eq!(m[2].root, "/");
        assert_eq!(m[3].mount_point, "/mnt/with space");
    }

    #[test]
    fn read_only_from_mount_or_superblock_options() {
        let m = parse(TEXT);
        assert!(!m[1].read_only());
        assert!(m[3].read_only(), "mounted ro");
        assert!(m[4].read_only(), "superblock went ro after errors");
        assert!(
            m[6].read_only(),
            "ext4 since 6.15: emergency_ro, superblock rw"
        );
        assert!(!m[2].read_only(), "relatime is not ro");
    }

    #[test]
    fn the_longest_and_last_mount_point_wins() {
        let m = parse(TEXT);
        let at = |p: &str, dev| find(&m, Path::new(p), dev).map(|m| m.mount_point.clone());
        assert_eq!(
            at("/var/lib/etcd/member", None).as_deref(),
            Some("/var/lib/etcd")
        );
        assert_eq!(
            at("/var/lib/etcd2", None).as_deref(),
            Some("/"),
            "not a prefix by component"
        );
        assert_eq!(
            find(&m, Path::new("/var/log/pods"), None).unwrap().fstype,
            "tmpfs"
        );
        assert_eq!(
            find(&m, Path::new("/var/log/pods"), Some((7, 0)))
                .unwrap()
                .fstype,
            "ext4",
            "the device picks the mount"
        );
        assert_eq!(at("/srv", Some((9, 9))).as_deref(), Some("/"));
    }

    #[test]
    fn mountinfo_escapes_and_garbage() {
        let m = parse("40 31 0:37 / /mnt/my\\040cgroups rw - cgroup2 none rw\nnonsense\n\n1 2 3\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, "/mnt/my cgroups");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn escapes_garbage_and_truncated_lines() {
        let m = parse(
            "40 31 0:37 /sub\\011dir /mnt/my\\040cgroups rw - cgroup2 none rw\n\
             nonsense\n\n1 2 3\n\
             41 31 x:1 / /bad-dev rw - ext4 /dev/x rw\n\
             42 31 0:38 / /short rw - tmpfs\n\
             43 31 0:39 / /no-super rw - tmpfs none\n",
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].mount_point, "/mnt/my cgroups");
        assert_eq!(m[0].root, "/sub\tdir");
        assert_eq!(m[1].mount_point, "/no-super");
        assert_eq!(m[1].super_options, "", "absent super options read as none");
        assert!(!m[1].read_only());
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\400 is not a byte"), "\\400 is not a byte");
        assert_eq!(unescape("\\\\040"), "\\ ");
    }

    #[test]
    fn super_options_are_matched_whole() {
        let m = parse("39 33 0:34 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n38 33 0:33 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n");
        assert!(m[0].has_super_option("cpu") && m[0].has_super_option("cpuacct"));
        assert!(!m[1].has_super_option("cpu"), "cpuset is not cpu");
    }

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, HostRoot) {
        let t = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = t.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let root = HostRoot {
            proc: t.path().to_path_buf(),
            ..HostRoot::default()
        };
        (t, root)
    }

    #[test]
    fn the_host_table_is_pid_1s_else_our_own() {
        let host = "1 0 254:0 / / rw - ext4 /dev/vda rw\n";
        let ours = "2 0 0:50 / / rw - overlay overlay rw\n";
        let (_t, root) = tree(&[("1/mountinfo", host), ("self/mountinfo", ours)]);
        assert_eq!(read_host(&root).unwrap()[0].fstype, "ext4");
        let (_t, root) = tree(&[("self/mountinfo", ours)]);
        assert_eq!(read_host(&root).unwrap()[0].fstype, "overlay");
        let (t, root) = tree(&[]);
        let err = read_host(&root).unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(err.path, t.path().join("1/mountinfo"), "PID 1's error");
    }
}
