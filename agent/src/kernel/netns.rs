//! Network namespaces: the pins runtimes leave under their netns directories (nsfs
//! bind mounts), the namespace of each process (`/proc/<pid>/ns/net`), and a look
//! inside each namespace over rtnetlink from a thread that enters it with `setns`.

use super::netlink::{NetlinkSocket, NETLINK_ROUTE};
use super::rtnetlink::{self, Addr, Link};
use crate::host::HostRoot;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// `statfs.f_type` of nsfs: a pin that is still a namespace, not a leftover file.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// A file in a netns directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEntry {
    /// An nsfs bind mount: the namespace it keeps alive, and when its nsfs inode was
    /// made (the pin's creation, since the mount holds the inode from then on).
    Namespace {
        path: PathBuf,
        inode: u64,
        pinned_at: SystemTime,
    },
    /// A plain file: the mount is gone (a half-finished `ip netns delete` or CNI DEL)
    /// and only the name is left.
    Stale { path: PathBuf },
}

/// Lists the pins of one directory. The directory missing is `NotFound`.
pub fn read_pins(dir: &Path) -> io::Result<Vec<PinEntry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if is_nsfs(&path) {
            out.push(PinEntry::Namespace {
                inode: meta.ino(),
                pinned_at: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or(0)),
                path,
            });
        } else {
            out.push(PinEntry::Stale { path });
        }
    }
    out.sort_by(|a, b| pin_path(a).cmp(pin_path(b)));
    Ok(out)
}

fn pin_path(p: &PinEntry) -> &Path {
    match p {
        PinEntry::Namespace { path, .. } | PinEntry::Stale { path } => path,
    }
}

fn is_nsfs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct we own from a NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

/// `net:[4026532186]`, the target of a `/proc/<pid>/ns/net` link, to the inode.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    target
        .trim()
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every numeric entry of procfs: thread-group leaders.
pub fn list_pids(root: &HostRoot) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(root.proc(&[]))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// The network namespace of a process; errors for a process that exited or that we
/// may not inspect.
pub fn netns_of(root: &HostRoot, pid: &str) -> io::Result<u64> {
    let target = std::fs::read_link(root.proc(&[pid, "ns", "net"]))?;
    parse_ns_link(&target.to_string_lossy())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a net:[inode] link"))
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot. The command
/// name (field 2) may hold spaces and parentheses, so fields count from the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// The cgroup path of `/proc/<pid>/cgroup` that names a pod: the v2 `0::` line or a v1
/// line of a controller every kubelet sets up (cpu, memory, pids, name=systemd),
/// whichever contains `kubepods`, else any other line that does. None for a process
/// outside any pod.
pub fn pod_cgroup(cgroup_file: &str) -> Option<&str> {
    let lines = || {
        cgroup_file.lines().filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
            path.contains("kubepods").then_some((controllers, path))
        })
    };
    let preferred = |controllers: &str| {
        controllers.is_empty()
            || controllers
                .split(',')
                .any(|c| matches!(c, "cpu" | "memory" | "pids" | "name=systemd"))
    };
    lines()
        .find(|(c, _)| preferred(c))
        .or_else(|| lines().next())
        .map(|(_, path)| path)
}

/// What one namespace holds, from inside it.
#[derive(Debug, Clone, Default)]
pub struct NamespaceView {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
}

/// The host's links and, for each target, its id in the host's nsid table and its
/// own links and addresses (or why they could not be read).
#[derive(Debug, Default)]
pub struct Inspection {
    pub host_links: Vec<Link>,
    pub host_addrs: Vec<Addr>,
    pub targets: Vec<TargetView>,
}

#[derive(Debug)]
pub struct TargetView {
    pub nsid: Option<i32>,
    pub view: Result<NamespaceView, String>,
}

/// Enters `host` and then each target namespace (a pin or `/proc/<pid>/ns/net`) on a
/// thread made for it, so `setns` never touches a thread anyone else uses; the
/// thread ends with the call and its namespace with it.
pub fn inspect(host: PathBuf, targets: Vec<PathBuf>) -> io::Result<Inspection> {
    std::thread::Builder::new()
        .name("netns-inspect".into())
        .spawn(move || inspect_on_this_thread(&host, &targets))?
        .join()
        .map_err(|_| io::Error::other("the namespace inspection thread panicked"))?
}

fn inspect_on_this_thread(host: &Path, targets: &[PathBuf]) -> io::Result<Inspection> {
    let host_fd = open_ns(host)?;
    enter(&host_fd).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", host.display())))?;
    // This socket stays in the host namespace whatever the thread enters later.
    let mut host_sock = NetlinkSocket::open(NETLINK_ROUTE)?;
    let host_links = rtnetlink::dump_links_on(&mut host_sock)?;
    let host_addrs = rtnetlink::dump_addrs_on(&mut host_sock)?;
    let targets = targets
        .iter()
        .map(|path| match open_ns(path) {
            Ok(fd) => {
                let nsid = rtnetlink::nsid_of(&mut host_sock, fd.as_raw_fd())
                    .ok()
                    .flatten();
                let view = view_inside(&fd).map_err(|e| format!("{}: {e}", path.display()));
                TargetView { nsid, view }
            }
            Err(e) => TargetView {
                nsid: None,
                view: Err(format!("{}: {e}", path.display())),
            },
        })
        .collect();
    Ok(Inspection {
        host_links,
        host_addrs,
        targets,
    })
}

fn view_inside(fd: &OwnedFd) -> io::Result<NamespaceView> {
    enter(fd)?;
    let mut sock = NetlinkSocket::open(NETLINK_ROUTE)?;
    Ok(NamespaceView {
        links: rtnetlink::dump_links_on(&mut sock)?,
        addrs: rtnetlink::dump_addrs_on(&mut sock)?,
    })
}

fn open_ns(path: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::File::open(path)?.into())
}

fn enter(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: setns on a descriptor we own; it changes only the calling thread, which
    // inspect() created for this and discards.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_give_the_inode() {
        assert_eq!(parse_ns_link("net:[4026532186]"), Some(4026532186));
        assert_eq!(parse_ns_link("net:[4026532186]\n"), Some(4026532186));
        assert_eq!(parse_ns_link("mnt:[4026531841]"), None);
        assert_eq!(parse_ns_link("net:[abc]"), None);
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (we ird) (n) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 8155136 200 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(parse_start_ticks("1 (init) S 0"), None, "truncated");
        assert_eq!(parse_start_ticks("garbage"), None);
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 99\nbtime 1700000000\nprocesses 7\n";
        assert_eq!(parse_boot_time(stat), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1 2\n"), None);
    }

    #[test]
    fn pod_cgroup_takes_v2_or_a_known_v1_controller() {
        let v1 = "12:pids:/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/abc\n\
                  4:memory:/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/abc\n\
                  1:name=systemd:/\n0::/\n";
        assert_eq!(
            pod_cgroup(v1),
            Some("/kubepods/burstable/pod0f3b2a1c-9d8e-4f7a-b6c5-d4e3f2a1b0c9/abc")
        );
        let v2 = "0::/kubepods.slice/kubepods-pod0f3b2a1c_9d8e.slice/cri-containerd-abc.scope\n";
        assert!(pod_cgroup(v2).unwrap().starts_with("/kubepods.slice/"));
        // The usual controllers win over others; another one alone still names the pod.
        let mixed = "5:devices:/kubepods/podA/x\n2:cpu,cpuacct:/kubepods/podB/y\n0::/\n";
        assert_eq!(pod_cgroup(mixed), Some("/kubepods/podB/y"));
        assert_eq!(
            pod_cgroup("5:devices:/kubepods/podA/x\n0::/\n"),
            Some("/kubepods/podA/x")
        );
        assert_eq!(pod_cgroup("garbage without colons\n"), None);
        assert_eq!(pod_cgroup("0::/system.slice/sshd.service\n"), None);
        assert_eq!(pod_cgroup(""), None);
    }

    #[test]
    fn a_missing_pin_directory_is_not_found() {
        let err = read_pins(Path::new("/nonexistent-nodediag-dir")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn plain_files_in_a_pin_directory_are_stale_pins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cni-1234"), "").unwrap();
        let pins = read_pins(dir.path()).unwrap();
        assert_eq!(
            pins,
            vec![PinEntry::Stale {
                path: dir.path().join("cni-1234")
            }]
        );
    }
}
